import assert from "node:assert/strict";
import { createJob, EVENT_QUEUE, JobEvent, type JobStore } from "@vmp3/shared";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { startEventConsumer } from "./event_consumer.ts";

const id = "3d6f0a8e-2b1c-4e5d-9f70-112233445566";
const done: JobEvent = {
  type: "job.done",
  version: 1,
  jobId: id,
  at: new Date().toISOString(),
  output: {
    key: "outputs/x.mp3",
    codec: "mp3",
    size: 10,
    duration: 1,
    bitrate: 128000,
    sampleRate: 44100,
    channels: 2,
    sha256: "d".repeat(64),
    method: "encode",
  },
};

async function until(check: () => Promise<boolean>, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, "timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("the event consumer stores each event, offers a finished output to the cache, and acks", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  await store.insert(createJob({ id, input: { filename: "a.mp4", size: 1 }, cacheKey: "c1" }, new Date()));
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent, { pollMs: 10 });
  const cache = createKvOutputCache(kv);
  const sub = await startEventConsumer(events, { store, cache });
  await events.publish(done);
  await until(async () => (await store.get(id))?.status === "done");
  await until(async () => (await Array.fromAsync(kv.list({ prefix: ["queue", EVENT_QUEUE] }))).length === 0);
  assert.equal((await cache.claim("c1", crypto.randomUUID()))?.key, "outputs/x.mp3");
  await sub.close();
  kv.close();
});

Deno.test("the event consumer holds an event while the store fails, and stores it once the store is back", async () => {
  const kv = await Deno.openKv(":memory:");
  const real = createKvJobStore(kv);
  await real.insert(createJob({ id, input: { filename: "a.mp4", size: 1 } }, new Date()));
  let failures = 3;
  const flaky: JobStore = {
    ...real,
    update: (jobId, change) =>
      failures-- > 0 ? Promise.reject(new Error("Redis is down")) : real.update(jobId, change),
  };
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent, { pollMs: 10, deliveryLimit: 1 });
  const sub = await startEventConsumer(events, { store: flaky, cache: createKvOutputCache(kv) }, {
    retryDelaysMs: [5, 5, 5, 5],
  });
  await events.publish(done);
  await until(async () => (await real.get(id))?.status === "done");
  await sub.close();
  assert.deepEqual(await events.deadLetters(), [], "the outage did not burn the event's delivery limit");
  kv.close();
});

Deno.test("the event consumer applies the events of one job in the order they came, however long each takes", async () => {
  const kv = await Deno.openKv(":memory:");
  const real = createKvJobStore(kv);
  await real.insert(createJob({ id, input: { filename: "a.mp4", size: 1 } }, new Date()));
  const other = crypto.randomUUID();
  await real.insert(createJob({ id: other, input: { filename: "b.mp4", size: 1 } }, new Date()));
  let releaseDone!: () => void;
  const doneHeld = new Promise<void>((resolve) => releaseDone = resolve);
  const slow: JobStore = {
    ...real,
    update: async (jobId, change) => {
      // The done event's store call is slow (a compare-and-set retried, a slow Redis): the failure that came
      // after it must wait, while another job's event goes on.
      const job = await real.get(jobId);
      const type = job ? change(job)?.status : undefined;
      if (jobId === id && type === "done") await doneHeld;
      return await real.update(jobId, change);
    },
  };
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent, { pollMs: 10 });
  const sub = await startEventConsumer(events, { store: slow, cache: createKvOutputCache(kv) }, {
    prefetch: 4,
  });
  const at = new Date().toISOString();
  await events.publish(done);
  await events.publish({
    type: "job.failed",
    version: 1,
    jobId: id,
    at,
    error: { code: "internal", message: "The uploaded video is no longer in storage" },
  });
  await events.publish({ type: "job.started", version: 1, jobId: other, at, duration: 1 });
  await until(async () => (await real.get(other))?.status === "converting");
  assert.equal(
    (await real.get(id))?.status,
    "queued",
    "nothing of the first job applied while its done is held",
  );
  releaseDone();
  await until(async () => (await Array.fromAsync(kv.list({ prefix: ["queue", EVENT_QUEUE] }))).length === 0);
  assert.equal(
    (await real.get(id))?.status,
    "done",
    "the failure that came after the done did not overtake it",
  );
  await sub.close();
  kv.close();
});
