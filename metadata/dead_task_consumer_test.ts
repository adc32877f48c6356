import assert from "node:assert/strict";
import { ConversionRequested, createJob, DEAD_TASK_QUEUE, jobKeys, TASK_QUEUE } from "@vmp3/shared";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { startDeadTaskConsumer } from "./dead_task_consumer.ts";

Deno.test("a task whose deliveries ran out fails its job with conversion_failed instead of leaving it converting", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  const jobId = crypto.randomUUID();
  await store.insert(createJob({ id: jobId, input: { filename: "bomb.mp4", size: 1 } }, new Date()));
  const fast = { pollMs: 10, backoffMs: () => 1, deliveryLimit: 2 };
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested, fast);
  // A worker that fails every time, as one killed by each attempt would.
  const worker = await tasks.consume(() => Promise.reject(new Error("worker died")));
  const log = createKvEventLog(kv);
  const dead = await startDeadTaskConsumer(
    createKvQueue(kv, DEAD_TASK_QUEUE, ConversionRequested, fast),
    { store, cache: createKvOutputCache(kv), log },
  );
  await tasks.publish({
    type: "conversion.requested",
    version: 1,
    jobId,
    ...jobKeys(jobId),
    filename: "bomb.mp4",
    options: { bitrate: 192 },
    requestedAt: new Date().toISOString(),
  });
  const deadline = Date.now() + 3000;
  while ((await store.get(jobId))?.status !== "failed") {
    assert.ok(Date.now() < deadline, "the job was not failed");
    await new Promise((r) => setTimeout(r, 10));
  }
  const job = await store.get(jobId);
  assert.equal(job?.error?.code, "conversion_failed");
  assert.match(job?.error?.message ?? "", /bomb\.mp4/);
  // Recorded like any event: the job's event log (what SSE clients read) has the failure.
  const entries = await log.read(jobId, undefined, { blockMs: 0 });
  assert.equal(entries.at(-1)?.job.status, "failed");
  await worker.close();
  await dead.close();
  kv.close();
});
