import assert from "node:assert/strict";
import { z } from "zod";
import { createKvQueue } from "./kv_queue.ts";

const Message = z.object({ n: z.number() });
const fast = { pollMs: 20, leaseMs: 300, backoffMs: () => 10 };

function collect(count: number) {
  const seen: number[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  return {
    seen,
    done: promise,
    add(n: number) {
      seen.push(n);
      if (seen.length === count) resolve();
    },
  };
}

Deno.test("KV queue delivers each published message once, in order, and removes it on ack", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, "q", Message, fast);
  for (const n of [1, 2, 3]) await queue.publish({ n });
  const got = collect(3);
  const sub = await queue.consume((m) => {
    got.add(m.n);
    return Promise.resolve("ack");
  });
  await got.done;
  await sub.close();
  assert.deepEqual(got.seen, [1, 2, 3]);
  assert.deepEqual((await Array.fromAsync(kv.list({ prefix: ["queue", "q"] }))).length, 0);
  kv.close();
});

Deno.test("KV queue redelivers on retry and dead-letters after the delivery limit", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, "q", Message, { ...fast, deliveryLimit: 3 });
  await queue.publish({ n: 7 });
  const infos: boolean[] = [];
  const got = collect(3);
  const sub = await queue.consume((m, info) => {
    infos.push(info.redelivered);
    got.add(m.n);
    return Promise.resolve("retry");
  });
  await got.done;
  await new Promise((r) => setTimeout(r, 100));
  await sub.close();
  assert.deepEqual(infos, [false, true, true]);
  assert.deepEqual(await queue.deadLetters(), [{ n: 7 }]);
  kv.close();
});

Deno.test("KV queue dead-letters a rejected message and one that fails its schema, and others still flow", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, "q", Message, fast);
  await (queue.publish as (m: unknown) => Promise<void>)({ n: "not a number" });
  await queue.publish({ n: 1 });
  await queue.publish({ n: 2 });
  const got = collect(2);
  const sub = await queue.consume((m) => {
    got.add(m.n);
    return Promise.resolve(m.n === 1 ? "reject" : "ack");
  });
  await got.done;
  await sub.close();
  assert.deepEqual(got.seen, [1, 2]);
  assert.deepEqual(await queue.deadLetters(), [{ n: "not a number" }, { n: 1 }]);
  kv.close();
});

Deno.test("KV queue runs at most `prefetch` handlers at once", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, "q", Message, fast);
  for (let n = 0; n < 6; n++) await queue.publish({ n });
  let active = 0;
  let peak = 0;
  const got = collect(6);
  const sub = await queue.consume(async (m) => {
    peak = Math.max(peak, ++active);
    await new Promise((r) => setTimeout(r, 30));
    active--;
    got.add(m.n);
    return "ack";
  }, { prefetch: 2 });
  await got.done;
  await sub.close();
  assert.deepEqual(peak, 2);
  kv.close();
});

Deno.test("KV queue gives a message back after the consumer holding it dies, and survives reopening", async () => {
  const path = await Deno.makeTempFile({ suffix: ".db" });
  let kv = await Deno.openKv(path);
  let queue = createKvQueue(kv, "q", Message, fast);
  await queue.publish({ n: 42 });
  // A consumer takes the message and never settles it, as if its process had been killed.
  const taken = Promise.withResolvers<void>();
  const stuck = await queue.consume(() => {
    taken.resolve();
    return new Promise<never>(() => {});
  });
  await taken.promise;
  stuck.close(); // never resolves; we abandon it like a dead process would
  kv.close();

  kv = await Deno.openKv(path);
  queue = createKvQueue(kv, "q", Message, fast);
  const got = collect(1);
  let redelivered: boolean | undefined;
  const sub = await queue.consume((m, info) => {
    redelivered = info.redelivered; // asserted below: a throw in here would only mean "retry"
    got.add(m.n);
    return Promise.resolve("ack");
  });
  await got.done;
  await sub.close();
  assert.deepEqual(got.seen, [42]);
  assert.equal(redelivered, true, "a message given back after a crash is marked redelivered");
  kv.close();
  await Deno.remove(path);
});

Deno.test("KV queue close() waits for the handler in hand", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, "q", Message, fast);
  await queue.publish({ n: 1 });
  const started = Promise.withResolvers<void>();
  let finished = false;
  const sub = await queue.consume(async () => {
    started.resolve();
    await new Promise((r) => setTimeout(r, 100));
    finished = true;
    return "ack";
  });
  await started.promise;
  await sub.close();
  assert(finished, "close() resolved before the handler finished");
  assert.deepEqual((await Array.fromAsync(kv.list({ prefix: ["queue", "q"] }))).length, 0);
  kv.close();
});
