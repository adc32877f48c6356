/** Tests of the Deno KV usage store (embedded mode). */
import assert from "node:assert/strict";
import { createKvUsageStore } from "./kv_usage_store.ts";
import { testUsageStore } from "./testing/usage_store_contract.ts";

testUsageStore("KV", async () => {
  const kv = await Deno.openKv(":memory:");
  return { store: createKvUsageStore(kv), close: () => kv.close() };
});

Deno.test("KV usage store: after a burst, one request comes back every window / limit", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    let now = Date.UTC(2026, 0, 1);
    const store = createKvUsageStore(kv, { now: () => now });
    for (let i = 0; i < 4; i++) assert.equal((await store.hit("k1", 4, 60)).allowed, true);
    assert.deepEqual(await store.hit("k1", 4, 60), {
      allowed: false,
      limit: 4,
      remaining: 0,
      resetSeconds: 15,
    });
    now += 14_000;
    assert.deepEqual(await store.hit("k1", 4, 60), {
      allowed: false,
      limit: 4,
      remaining: 0,
      resetSeconds: 1,
    });
    now += 1_000;
    assert.deepEqual(await store.hit("k1", 4, 60), {
      allowed: true,
      limit: 4,
      remaining: 0,
      resetSeconds: 60,
    });
    now += 30_000;
    assert.deepEqual(await store.hit("k1", 4, 60), {
      allowed: true,
      limit: 4,
      remaining: 1,
      resetSeconds: 45,
    });
    now += 60_000;
    assert.deepEqual(await store.hit("k1", 4, 60), {
      allowed: true,
      limit: 4,
      remaining: 3,
      resetSeconds: 15,
    });
  } finally {
    kv.close();
  }
});

Deno.test("KV usage store: a reservation is free at its expiry even before KV deletes the entry", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    let now = Date.now();
    const store = createKvUsageStore(kv, { now: () => now });
    assert.equal(await store.reserve("idem", "job-a", 30), "job-a");
    now += 29_999;
    assert.equal(await store.reserve("idem", "job-b", 30), "job-a");
    now += 1;
    assert.equal(await store.reserve("idem", "job-b", 30), "job-b");
  } finally {
    kv.close();
  }
});
