/** Tests of the Redis usage store against a real Redis (TEST_REDIS_URL, from scripts/test_servers.sh). */
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { createRedisClient } from "./redis_job_store.ts";
import { createRedisUsageStore } from "./redis_usage_store.ts";
import { testUsageStore } from "./testing/usage_store_contract.ts";

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

testUsageStore("redis", () => {
  const redis = createRedisClient(redisUrl());
  const store = createRedisUsageStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
  return Promise.resolve({ store, close: () => redis.disconnect() });
});

Deno.test("redis usage store: its keys expire (rate state when paid, a day's total after 2 days)", async () => {
  const redis = createRedisClient(redisUrl());
  try {
    const prefix = `test-${crypto.randomUUID()}:`;
    const store = createRedisUsageStore(redis, { prefix });
    await store.hit("k1", 10, 60);
    await store.hit("k1", 10, 60);
    const ratePttl = await redis.pttl(`${prefix}rate:k1`);
    assert.ok(
      ratePttl > 11_000 && ratePttl <= 12_000,
      `rate state expires in ${ratePttl} ms (2 of 10 per minute)`,
    );
    await store.addBytes("k1", "2026-01-01", 5, 100);
    const bytesTtl = await redis.ttl(`${prefix}bytes:2026-01-01:k1`);
    assert.ok(bytesTtl > 172_700 && bytesTtl <= 172_800, `day total expires in ${bytesTtl} s`);
    await store.reserve("idem", "job-a", 30);
    const reserveTtl = await redis.ttl(`${prefix}reserve:idem`);
    assert.ok(reserveTtl > 25 && reserveTtl <= 30, `reservation expires in ${reserveTtl} s`);
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis usage store: goes on working after Redis forgets its scripts (SCRIPT FLUSH)", async () => {
  const redis = createRedisClient(redisUrl());
  try {
    const store = createRedisUsageStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
    assert.equal((await store.hit("k1", 3, 60)).remaining, 2);
    assert.equal(await store.reserve("idem", "job-a", 60), "job-a");
    await redis.script("FLUSH");
    assert.equal((await store.hit("k1", 3, 60)).remaining, 1);
    assert.equal(await store.addBytes("k1", "2026-01-01", 5, 100), 5);
    assert.equal(await store.reserve("idem", "job-b", 60), "job-a");
    await store.unreserve("idem", "job-a");
    assert.equal(await store.reserve("idem", "job-b", 60), "job-b");
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis usage store: with Redis unreachable, every call rejects within a second", async () => {
  const errors: Error[] = [];
  const redis = createRedisClient(`redis://127.0.0.1:${await closedPort()}`, {
    onError: (e) => errors.push(e),
  });
  try {
    const store = createRedisUsageStore(redis);
    const calls = [
      () => store.hit("k1", 10, 60),
      () => store.addBytes("k1", "2026-01-01", 1, 100),
      () => store.reserve("idem", "job-a", 60),
      () => store.unreserve("idem", "job-a"),
    ];
    for (const call of calls) {
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

Deno.test("redis usage store: with Redis not answering (paused), hit rejects within the command timeout", async () => {
  // A server that accepts connections and never answers, like a Redis stopped with SIGSTOP.
  const sockets: Socket[] = [];
  const server = createServer((socket) => sockets.push(socket));
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  const redis = createRedisClient(`redis://127.0.0.1:${port}`, { onError: () => {} });
  try {
    const store = createRedisUsageStore(redis);
    const started = performance.now();
    await assert.rejects(store.hit("k1", 10, 60));
    const took = performance.now() - started;
    assert.ok(took < 1500, `hit took ${took} ms`);
  } finally {
    redis.disconnect();
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});
