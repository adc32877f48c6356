/** Tests of the Deno KV key store (embedded mode). */
import assert from "node:assert/strict";
import { createKvKeyStore } from "./kv_key_store.ts";
import { makeKey, testKeyStore } from "./testing/key_store_contract.ts";

testKeyStore("KV", async () => {
  const kv = await Deno.openKv(":memory:");
  return { store: createKvKeyStore(kv), close: () => kv.close() };
});

Deno.test("KV key store: a damaged record fails get and list with an error naming the key", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const store = createKvKeyStore(kv);
    const [invalid, moved, other] = [await makeKey(), await makeKey(), await makeKey()];
    await kv.set(["keys", invalid.id], { ...invalid, limits: { requestsPerMinute: -1 } });
    await kv.set(["keys", moved.id], other);
    await assert.rejects(
      store.get(invalid.id),
      new RegExp(`stored API key ${invalid.id} is not a valid key \\(limits`),
    );
    await assert.rejects(
      store.get(moved.id),
      new RegExp(`stored API key ${moved.id} holds the record of ${other.id}`),
    );
    await assert.rejects(store.list(), /stored API key [a-z0-9]{12} /);
  } finally {
    kv.close();
  }
});

Deno.test("KV key store: keys persist in a KV file across reopening", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/keys.kv`;
  try {
    const key = await makeKey();
    const first = await Deno.openKv(path);
    await createKvKeyStore(first).insert(key);
    first.close();
    const second = await Deno.openKv(path);
    try {
      assert.deepEqual(await createKvKeyStore(second).list(), [key]);
    } finally {
      second.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
