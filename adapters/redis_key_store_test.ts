/** Tests of the Redis key store against a real Redis (TEST_REDIS_URL, from scripts/test_servers.sh). */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { createRedisClient } from "./redis_job_store.ts";
import { createRedisKeyStore } from "./redis_key_store.ts";
import { makeKey, testKeyStore } from "./testing/key_store_contract.ts";

function redisUrl(): string {
  const url = Deno.env.get("TEST_REDIS_URL");
  if (!url) {
    throw new Error("TEST_REDIS_URL is not set: run through `bash scripts/test_servers.sh deno test -A`");
  }
  return url;
}

/** A loopback port that was free a moment ago: nothing listens on it. */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

testKeyStore("redis", () => {
  const redis = createRedisClient(redisUrl());
  const store = createRedisKeyStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
  return Promise.resolve({ store, close: () => redis.disconnect() });
});

Deno.test("redis key store: keeps each key as JSON under <prefix>key:<id>, with its id in <prefix>keys", async () => {
  const redis = createRedisClient(redisUrl());
  try {
    const prefix = `test-${crypto.randomUUID()}:`;
    const store = createRedisKeyStore(redis, { prefix });
    const key = await makeKey();
    await store.insert(key);
    assert.deepEqual(JSON.parse(await redis.get(`${prefix}key:${key.id}`) ?? "null"), key);
    assert.deepEqual(await redis.smembers(`${prefix}keys`), [key.id]);
    await store.remove(key.id);
    assert.equal(await redis.exists(`${prefix}key:${key.id}`, `${prefix}keys`), 0);
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis key store: a damaged record fails get and list with an error naming the key", async () => {
  const redis = createRedisClient(redisUrl());
  try {
    const prefix = `test-${crypto.randomUUID()}:`;
    const store = createRedisKeyStore(redis, { prefix });
    await redis.connect();
    const [broken, invalid, moved] = [await makeKey(), await makeKey(), await makeKey()];
    await redis.set(`${prefix}key:${broken.id}`, "{not json");
    await redis.set(`${prefix}key:${invalid.id}`, JSON.stringify({ ...invalid, secretSha256: "plaintext" }));
    await redis.set(`${prefix}key:${moved.id}`, JSON.stringify(broken));
    await assert.rejects(store.get(broken.id), new RegExp(`stored API key ${broken.id} is not valid JSON`));
    await assert.rejects(
      store.get(invalid.id),
      new RegExp(`stored API key ${invalid.id} is not a valid key \\(secretSha256: `),
    );
    await assert.rejects(store.get(moved.id), new RegExp(`stored API key ${moved.id} holds the record of`));
    await redis.sadd(`${prefix}keys`, invalid.id);
    await assert.rejects(store.list(), new RegExp(`stored API key ${invalid.id} is not a valid key`));
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis key store: with Redis unreachable, every call rejects within a second", async () => {
  const errors: Error[] = [];
  const redis = createRedisClient(`redis://127.0.0.1:${await closedPort()}`, {
    onError: (e) => errors.push(e),
  });
  try {
    const store = createRedisKeyStore(redis);
    const key = await makeKey();
    for (
      const call of [
        () => store.get(key.id),
        () => store.insert(key),
        () => store.list(),
        () => store.remove(key.id),
      ]
    ) {
      const started = performance.now();
      await assert.rejects(call());
      const took = performance.now() - started;
      assert.ok(took < 1200, `took ${took} ms`);
    }
    assert.ok(errors.length > 0);
  } finally {
    redis.disconnect();
  }
});
