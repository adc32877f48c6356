import assert from "node:assert/strict";
import { ConversionRequested, TASK_QUEUE } from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createMetadataApp, createMetadataClient } from "@vmp3/metadata";
import { createUploadApp } from "./app.ts";
import { createReconciler } from "./reconciler.ts";
import { tasksTaken } from "./testing/wait.ts";

async function setup() {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const blobs = createFsBlobStore(root);
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested, { pollMs: 10 });
  const metadataApp = createMetadataApp({
    store: createKvJobStore(kv),
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
  });
  const metadata = createMetadataClient((r) => metadataApp.fetch(r));
  const published: ConversionRequested[] = [];
  const sub = await tasks.consume((task) => {
    published.push(task);
    return Promise.resolve("ack");
  });
  let clock = Date.now();
  const reconciler = createReconciler({
    blobs,
    tasks,
    metadata,
    graceMs: 60_000,
    now: () => new Date(clock),
  });
  return {
    blobs,
    tasks,
    metadata,
    published,
    reconciler,
    later: (ms: number) => clock += ms,
    /** Waits until `count` tasks came (see {@linkcode tasksTaken}). */
    tasksTaken: (count: number) => tasksTaken(published, count),
    async close() {
      await sub.close();
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

Deno.test("the reconciler publishes the task of a job whose Upload died before publishing it, once", async () => {
  const t = await setup();
  // What Upload had done when it died: the video stored and the job recorded, but no task published.
  const id = crypto.randomUUID();
  await t.blobs.put(`inputs/${id}`, ReadableStream.from([new Uint8Array([1, 2, 3])]));
  await t.metadata.createJob({ id, input: { filename: "clip.mp4", size: 3 }, options: { bitrate: 128 } });

  assert.deepEqual(
    await t.reconciler.runOnce(),
    { published: [], failed: [] },
    "not before the grace period",
  );
  t.later(61_000);
  assert.deepEqual(await t.reconciler.runOnce(), { published: [id], failed: [] });
  await t.tasksTaken(1);
  assert.equal(t.published.length, 1);
  assert.deepEqual(
    [t.published[0].jobId, t.published[0].inputKey, t.published[0].filename, t.published[0].options],
    [id, `inputs/${id}`, "clip.mp4", { bitrate: 128 }],
  );
  assert.deepEqual(await t.reconciler.runOnce(), { published: [], failed: [] }, "never twice");
  await t.close();
});

Deno.test("the reconciler leaves jobs Upload published alone, and fails a job whose upload is gone", async () => {
  const t = await setup();
  const app = createUploadApp({ blobs: t.blobs, tasks: t.tasks, metadata: t.metadata, maxUploadBytes: 1000 });
  const form = new FormData();
  form.append("file", new File([new Uint8Array(10)], "a.mp4"));
  assert.equal((await app.request("/uploads", { method: "POST", body: form })).status, 202);

  const lost = crypto.randomUUID();
  await t.metadata.createJob({ id: lost, input: { filename: "lost.mp4", size: 3 } });
  t.later(61_000);
  assert.deepEqual(await t.reconciler.runOnce(), { published: [], failed: [lost] });
  const job = await t.metadata.getJob(lost);
  assert.deepEqual([job?.status, (job?.error as { code: string }).code], ["failed", "internal"]);
  await t.tasksTaken(1);
  assert.equal(t.published.length, 1, "only Upload's own task");
  await t.close();
});
