import assert from "node:assert/strict";
import {
  type BlobStore,
  type ConversionRequested,
  EVENT_QUEUE,
  JobEvent,
  jobKeys,
  type Queue,
} from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { makeMedia } from "./testing/media.ts";
import { createTaskHandler } from "./worker.ts";

const limits = {
  ffmpegPath: "ffmpeg",
  ffprobePath: "ffprobe",
  maxDuration: 3600,
  maxStreams: 16,
  timeoutMs: 60_000,
};

async function setup(
  wrap: (blobs: BlobStore) => BlobStore = (b) => b,
  extra: { retryDelaysMs?: number[]; events?: Queue<JobEvent> } = {},
) {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const blobs = createFsBlobStore(`${root}/store`);
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent);
  const handle = createTaskHandler({
    blobs: wrap(blobs),
    events: extra.events ?? events,
    workDir: `${root}/work`,
    limits,
    progressEveryMs: 0,
    retryDelaysMs: extra.retryDelaysMs,
  });
  const task = (jobId = crypto.randomUUID()): ConversionRequested => ({
    type: "conversion.requested",
    version: 1,
    jobId,
    ...jobKeys(jobId),
    filename: "clip.mp4",
    options: { bitrate: 128 },
    requestedAt: new Date().toISOString(),
  });
  const published = async () => {
    const out: JobEvent[] = [];
    for await (const entry of kv.list<{ body: JobEvent }>({ prefix: ["queue", EVENT_QUEUE] })) {
      out.push(entry.value.body);
    }
    return out;
  };
  return {
    root,
    blobs,
    handle,
    task,
    published,
    async close() {
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

async function store(blobs: BlobStore, key: string, path: string) {
  await blobs.put(key, (await Deno.open(path)).readable);
}

Deno.test("worker converts a task, stores the MP3 under its key, reports started/progress/done, and acks", async () => {
  const t = await setup();
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4", { seconds: 4 }));
  assert.equal(await t.handle(task), "ack");
  const types = (await t.published()).map((e) => e.type);
  assert.equal(types[0], "job.started");
  assert.equal(types.at(-1), "job.done");
  assert.ok(types.includes("job.progress"), `no progress among ${types}`);
  const done = (await t.published()).at(-1) as Extract<JobEvent, { type: "job.done" }>;
  const { output } = done;
  assert.deepEqual(
    [output.codec, output.bitrate, output.method, output.quality, output.sampleRate, output.channels],
    ["mp3", 128_000, "encode", undefined, 44100, 1],
  );
  assert.ok(Math.abs(output.duration - 4) < 0.1, `duration ${output.duration}`);
  const stored = await t.blobs.get(task.outputKey);
  const bytes = new Uint8Array(await new Response(stored?.body).arrayBuffer());
  assert.equal(output.size, bytes.length);
  const sha256 = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  assert.equal(output.sha256, sha256, "the recorded sha256 is the stored MP3's");
  const progress = (await t.published()).filter((e) => e.type === "job.progress");
  assert.ok(
    progress.some((e) =>
      e.type === "job.progress" && e.speed !== undefined && e.speed > 0 && e.eta !== undefined
    ),
    `no speed and ETA in ${JSON.stringify(progress)}`,
  );
  assert.deepEqual([...Deno.readDirSync(`${t.root}/work`)], [], "the work folder is cleaned up");
  await t.close();
});

Deno.test("worker fails a job whose options the input cannot honour with invalid_option, and acks", async () => {
  const t = await setup();
  const task = { ...t.task(), options: { audio_track: "fra" } };
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack");
  const last = (await t.published()).at(-1);
  assert.equal(last?.type === "job.failed" && last.error.code, "invalid_option");
  assert.match(last?.type === "job.failed" ? last.error.message : "", /audio_track/);
  assert.equal(await t.blobs.head(task.outputKey), null);
  await t.close();
});

Deno.test("worker fails a task whose input has no audio, acks it (no retry), and stores nothing", async () => {
  const t = await setup();
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4-no-audio"));
  assert.equal(await t.handle(task), "ack");
  const events = await t.published();
  assert.equal(events.length, 1);
  assert.equal(events[0].type === "job.failed" && events[0].error.code, "no_audio_stream");
  assert.equal(await t.blobs.head(task.outputKey), null);
  await t.close();
});

Deno.test("worker holds a task through a short storage outage and then converts it", async () => {
  let failures = 2;
  const t = await setup((blobs) => ({
    ...blobs,
    put: (key, body, options) =>
      key.startsWith("outputs/") && failures-- > 0
        ? body.cancel().then(() => Promise.reject(new Error("S3 is down")))
        : blobs.put(key, body, options),
  }), { retryDelaysMs: [5, 5, 5] });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack");
  assert.equal((await t.published()).at(-1)?.type, "job.done");
  await t.close();
});

Deno.test("worker fails the job with service_unavailable when storage stays down, and acks", async () => {
  const t = await setup((blobs) => ({
    ...blobs,
    put: (key, body, options) =>
      key.startsWith("outputs/")
        ? body.cancel().then(() => Promise.reject(new Error("S3 is down")))
        : blobs.put(key, body, options),
  }), { retryDelaysMs: [5, 5] });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack");
  const last = (await t.published()).at(-1);
  assert.equal(last?.type === "job.failed" && last.error.code, "service_unavailable");
  assert.equal(await t.blobs.head(task.outputKey), null);
  await t.close();
});

Deno.test("worker hands the task back when it cannot even report the failure", async () => {
  const t = await setup((blobs) => ({ ...blobs, get: () => Promise.reject(new Error("S3 is down")) }), {
    retryDelaysMs: [],
    events: {
      publish: () => Promise.reject(new Error("broker down")),
      consume: () => Promise.reject(new Error("unused")),
    },
  });
  assert.equal(await t.handle(t.task()), "retry");
  await t.close();
});

Deno.test("worker fails a task whose input is gone from storage", async () => {
  const t = await setup();
  assert.equal(await t.handle(t.task()), "ack");
  const [event] = await t.published();
  assert.equal(event.type, "job.failed");
  await t.close();
});
