/**
 * @module
 * The behaviour every KeyStore must have, as tests any adapter's test file registers with its own factory.
 */
import assert from "node:assert/strict";
import { type ApiKey, DEFAULT_KEY_LIMITS, type KeyStore, newKeyToken, sha256Hex } from "@vmp3/shared";

/** A valid key with a fresh id, `extra` on top. */
export async function makeKey(extra: Partial<ApiKey> = {}): Promise<ApiKey> {
  const { id, secret } = newKeyToken();
  return {
    id,
    name: `key ${id}`,
    secretSha256: await sha256Hex(secret),
    limits: DEFAULT_KEY_LIMITS,
    createdAt: "2026-01-01T00:00:00.000Z",
    ...extra,
  };
}

/** Registers the KeyStore tests for `name`, each run on a fresh, empty store from `open` (closed with `close`). */
export function testKeyStore(
  name: string,
  open: () => Promise<{ store: KeyStore; close: () => Promise<void> | void }>,
): void {
  const test = (title: string, fn: (store: KeyStore) => Promise<void>) =>
    Deno.test(`${name} key store: ${title}`, async () => {
      const { store, close } = await open();
      try {
        await fn(store);
      } finally {
        await close();
      }
    });

  test("gets null for an unknown id, and a key as inserted", async (store) => {
    const key = await makeKey({
      limits: { requestsPerMinute: 5, concurrentJobs: 2, bytesPerDay: 1000 },
      webhookUrl: "https://example.com/hook",
      webhookSecret: "whsec_c2VjcmV0",
    });
    assert.equal(await store.get(key.id), null);
    assert.equal(await store.insert(key), true);
    assert.deepEqual(await store.get(key.id), key);
    assert.equal(await store.get((await makeKey()).id), null);
  });

  test("inserting an id twice is refused and keeps the first key", async (store) => {
    const first = await makeKey({ name: "first" });
    assert.equal(await store.insert(first), true);
    assert.equal(await store.insert({ ...first, name: "second" }), false);
    assert.equal((await store.get(first.id))?.name, "first");
    assert.equal((await store.list()).length, 1);
  });

  test("of concurrent inserts of one id, exactly one wins", async (store) => {
    const key = await makeKey();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.insert({ ...key, name: `try ${i}` })),
    );
    assert.equal(results.filter(Boolean).length, 1);
    const winner = results.indexOf(true);
    assert.equal((await store.get(key.id))?.name, `try ${winner}`);
  });

  test("lists every key, by id", async (store) => {
    assert.deepEqual(await store.list(), []);
    const keys = await Promise.all(Array.from({ length: 5 }, () => makeKey()));
    for (const key of keys) assert.equal(await store.insert(key), true);
    const sorted = [...keys].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    assert.deepEqual(await store.list(), sorted);
  });

  test("a removed key is gone from get and list, and its id can be used again", async (store) => {
    const [kept, removed] = [await makeKey(), await makeKey()];
    await store.insert(kept);
    await store.insert(removed);
    await store.remove(removed.id);
    assert.equal(await store.get(removed.id), null);
    assert.deepEqual(await store.list(), [kept]);
    await store.remove(removed.id); // removing a missing key is not an error
    assert.equal(await store.insert({ ...removed, name: "again" }), true);
    assert.equal((await store.get(removed.id))?.name, "again");
  });

  test("refuses to store a record that is not a valid key", async (store) => {
    const key = await makeKey();
    await assert.rejects(store.insert({ ...key, secretSha256: "not hex" }));
    await assert.rejects(store.insert({ ...key, id: "UPPER-case!!" }));
    assert.equal(await store.get(key.id), null);
    assert.deepEqual(await store.list(), []);
  });
}
