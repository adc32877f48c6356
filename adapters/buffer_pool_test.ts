import assert from "node:assert/strict";
import { createBufferPool } from "./buffer_pool.ts";

Deno.test("a buffer pool makes at most its count of buffers and hands them back out in turn", async () => {
  const pool = createBufferPool(4, 2);
  const a = await pool.take();
  const b = await pool.take();
  assert.notEqual(a, b);
  const order: string[] = [];
  const c = pool.take().then((buffer) => (order.push("c"), buffer));
  const d = pool.take().then((buffer) => (order.push("d"), buffer));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(order, [], "both wait while every buffer is taken");
  pool.give(a);
  assert.equal(await c, a, "the longest waiter gets the buffer given back");
  pool.give(b);
  assert.equal(await d, b);
  assert.deepEqual(order, ["c", "d"]);
  assert.equal(pool.made, 2);
  pool.give(a);
  assert.equal(await pool.take(), a, "a free buffer is reused, not made");
  assert.equal(pool.made, 2);
});

Deno.test("a buffer pool's tryTake gives a free buffer at once, and null when none is free or someone waits", async () => {
  const pool = createBufferPool(4, 2);
  const a = pool.tryTake();
  const b = pool.tryTake();
  assert.ok(a && b);
  assert.equal(pool.tryTake(), null, "both made and taken");
  const waiter = pool.take();
  pool.give(a);
  assert.equal(await waiter, a, "the waiter gets it");
  pool.give(b);
  assert.equal(pool.tryTake(), b, "free again");
  const second = pool.take();
  assert.equal(pool.tryTake(), null, "someone is waiting: no queue jumping");
  pool.give(b);
  assert.equal(await second, b);
});
