import assert from "node:assert/strict";
import {
  type BlobStore,
  type Broadcast,
  ConversionRequested,
  EVENT_QUEUE,
  JobCancel,
  JobEvent,
  jobKeys,
  type Outcome,
  type Queue,
  TASK_QUEUE,
} from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createMemoryBroadcast } from "@vmp3/adapters/memory-broadcast";
import { makeMedia, type MediaKind } from "./testing/media.ts";
import { type RangeServer, startRangeServer } from "./testing/range_server.ts";
import { createTaskHandler, startWorker, type TaskControl, type WorkerDeps } from "./worker.ts";

const limits = {
  ffmpegPath: "ffmpeg",
  ffprobePath: "ffprobe",
  maxDuration: 3600,
  maxStreams: 16,
  timeoutMs: 60_000,
};

async function setup(
  wrap: (blobs: BlobStore) => BlobStore = (b) => b,
  extra: Partial<WorkerDeps> = {},
) {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const blobs = createFsBlobStore(`${root}/store`);
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent);
  const deps: WorkerDeps = {
    blobs: wrap(blobs),
    events,
    workDir: `${root}/work`,
    limits,
    progressEveryMs: 0,
    ...extra,
  };
  const handle = createTaskHandler(deps);
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
    kv,
    deps,
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
  assert.ok(progress.length > 0, "no progress");
  // Every one, the last too (ffmpeg has ended; the MP3 is being stored): a client that shows speed and ETA
  // never sees them vanish before the job is done.
  for (const e of progress) {
    assert.ok(
      e.type === "job.progress" && e.speed !== undefined && e.speed > 0 && e.eta !== undefined,
      `no speed and ETA in ${JSON.stringify(e)} of ${JSON.stringify(progress)}`,
    );
  }
  assert.deepEqual([...Deno.readDirSync(`${t.root}/work`)], [], "the work folder is cleaned up");
  assert.equal(await t.blobs.head(task.inputKey), null, "the video is removed once its MP3 is made");
  await t.close();
});

Deno.test("worker reports the MP3 an earlier delivery stored, as it is, and never makes it again over it", async () => {
  const t = await setup();
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack");
  const first = (await t.published()).at(-1) as Extract<JobEvent, { type: "job.done" }>;
  const before = await t.blobs.get(task.outputKey);
  const bytes = new Uint8Array(await new Response(before?.body).arrayBuffer());
  // The same task again, as the broker redelivers it when a worker died after storing the MP3 but before it
  // reported the job done (the video is then still stored: it goes only after the report); with another option,
  // so that a new conversion would make other bytes.
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle({ ...task, options: { bitrate: 64 } }), "ack");
  const again = (await t.published()).at(-1) as Extract<JobEvent, { type: "job.done" }>;
  assert.deepEqual(again.output, first.output, "the stored MP3's facts, not a new conversion's");
  const after = await t.blobs.get(task.outputKey);
  assert.deepEqual(new Uint8Array(await new Response(after?.body).arrayBuffer()), bytes, "not overwritten");
  await t.close();
});

Deno.test("worker reports the input's duration when the output is trimmed", async () => {
  const t = await setup();
  const task = { ...t.task(), options: { start: 1, end: 2 } };
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4", { seconds: 4 }));
  assert.equal(await t.handle(task), "ack");
  const events = await t.published();
  const started = events.find((e) => e.type === "job.started");
  assert.ok(
    started?.type === "job.started" && Math.abs((started.duration ?? 0) - 4) < 0.1,
    JSON.stringify(started),
  );
  const done = events.at(-1);
  assert.ok(done?.type === "job.done" && Math.abs(done.output.duration - 1) < 0.1, JSON.stringify(done));
  await t.close();
});

Deno.test("worker measures a WebM's audio bitrate, which the container does not state, so auto stays below it", async () => {
  const t = await setup();
  const task = { ...t.task(), options: {} };
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "webm")); // Opus at 64k
  assert.equal(await t.handle(task), "ack");
  const done = (await t.published()).at(-1);
  assert.ok(done?.type === "job.done", JSON.stringify(done));
  assert.equal(done.output.method, "encode");
  assert.equal(done.output.quality, undefined, "CBR, not VBR V2 (~190k)");
  assert.ok(done.output.bitrate <= 64_000, `${done.output.bitrate} bit/s for a 64k source`);
  await t.close();
});

Deno.test("worker runs the tools under its rlimits: too little memory fails the job with conversion_failed, at once", async () => {
  const t = await setup((b) => b, { limits: { ...limits, toolLimits: { memoryBytes: 64 * 1024 * 1024 } } });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack", "final: not retried, not handed back");
  const last = (await t.published()).at(-1);
  assert.equal(last?.type === "job.failed" && last.error.code, "conversion_failed", JSON.stringify(last));
  assert.equal(await t.blobs.head(task.outputKey), null);
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
  assert.notEqual(await t.blobs.head(task.inputKey), null, "a failed job's video stays, for a retry");
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

Deno.test("worker fails a task whose input is gone from storage once, and acks it (no retry)", async () => {
  let reads = 0;
  const t = await setup((blobs) => ({
    ...blobs,
    get: (key) => {
      reads++;
      return blobs.get(key);
    },
    readLocation: (key, options) => {
      reads++;
      return blobs.readLocation!(key, options);
    },
  }), { retryDelaysMs: [5, 5, 5] });
  assert.equal(await t.handle(t.task()), "ack");
  const events = await t.published();
  assert.deepEqual(events.map((e) => e.type), ["job.failed"]);
  assert.equal(reads, 1, "asked storage once: not a passing failure");
  await t.close();
});

Deno.test("worker acks, reporting nothing, a redelivered task whose video is gone and whose MP3 is stored (an earlier delivery finished; its ack was lost)", async () => {
  const t = await setup();
  const task = t.task();
  const media = await Deno.makeTempDir();
  try {
    await store(t.blobs, task.outputKey, await makeMedia(media, "mp3-tagged", { seconds: 1 }));
    const logged: string[] = [];
    const handle = createTaskHandler({ ...t.deps, log: (line) => logged.push(line) });
    assert.equal(await handle(task), "ack");
    assert.deepEqual(await t.published(), [], "no job.failed that could overtake the earlier job.done");
    assert.match(logged.join("\n"), /already done by an earlier delivery/);
    assert.ok(await t.blobs.head(task.outputKey), "the MP3 stays");
  } finally {
    await Deno.remove(media, { recursive: true });
    await t.close();
  }
});

Deno.test("worker goes on from the step that failed: through an outage at the MP3's upload it neither reads the video nor converts again", async () => {
  let gets = 0;
  let locates = 0;
  let failures = 2;
  const t = await setup((blobs) => ({
    ...blobs,
    get: (key) => {
      gets++;
      return blobs.get(key);
    },
    readLocation: (key, options) => {
      locates++;
      return blobs.readLocation!(key, options);
    },
    put: (key, body, options) =>
      key.startsWith("outputs/") && failures-- > 0
        ? body.cancel().then(() => Promise.reject(new Error("S3 is down")))
        : blobs.put(key, body, options),
  }), { retryDelaysMs: [5, 5, 5] });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task), "ack");
  const types = (await t.published()).map((e) => e.type);
  assert.deepEqual([gets, locates], [0, 1], "the video was read where it lies, and located once");
  assert.equal(types.filter((type) => type === "job.started").length, 1, "converted once");
  assert.equal(types.at(-1), "job.done");
  await t.close();
});

/**
 * A worker whose store hands out the URL of a range server for every object, as an S3 store hands out presigned
 * GETs, with a `kind` video of `seconds` stored as the task's input (`damage` may cut the file first) and
 * counting the store's get() calls (a fetched copy).
 */
async function withServedVideo(
  video: { kind: MediaKind; seconds: number; damage?: (bytes: Uint8Array) => Uint8Array },
  extra: (server: RangeServer, size: number) => Partial<WorkerDeps>,
  fn: (
    t: Awaited<ReturnType<typeof setup>>,
    task: ConversionRequested,
    server: RangeServer,
    counts: { gets: number },
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const path = await makeMedia(dir, video.kind, { seconds: video.seconds });
  if (video.damage) await Deno.writeFile(path, video.damage(await Deno.readFile(path)));
  const server = startRangeServer(path);
  const counts = { gets: 0 };
  const t = await setup((blobs) => ({
    ...blobs,
    get: (key) => {
      counts.gets++;
      return blobs.get(key);
    },
    readLocation: async (key) => {
      const found = await blobs.head(key);
      return found && { location: server.url, size: found.size };
    },
  }), extra(server, (await Deno.stat(path)).size));
  try {
    const task = t.task();
    await store(t.blobs, task.inputKey, path);
    await fn(t, task, server, counts);
  } finally {
    await server.close();
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("worker converts a video read over HTTP with range requests (an MP4 with its index at the end), without fetching a copy", async () => {
  await withServedVideo(
    { kind: "mp4", seconds: 4 },
    () => ({ readInPlaceFromBytes: 0 }),
    async (t, task, server, counts) => {
      assert.equal(await t.handle(task), "ack");
      const last = (await t.published()).at(-1);
      assert.ok(last?.type === "job.done" && Math.abs(last.output.duration - 4) < 0.1, JSON.stringify(last));
      assert.equal(counts.gets, 0, "no copy of the video was fetched");
      assert.ok(server.requests >= 2, `the URL was read (${server.requests} requests)`);
    },
  );
});

Deno.test("worker fetches a video under readInPlaceFromBytes whole, with one GET, rather than reading its URL", async () => {
  await withServedVideo(
    { kind: "mp4", seconds: 2 },
    (_, size) => ({ readInPlaceFromBytes: size + 1 }),
    async (t, task, server, counts) => {
      assert.equal(await t.handle(task), "ack");
      assert.equal((await t.published()).at(-1)?.type, "job.done");
      assert.deepEqual([counts.gets, server.requests], [1, 0]);
    },
  );
});

Deno.test("worker treats a storage read that breaks under FFmpeg as a passing failure: the next try converts a fetched copy", async () => {
  await withServedVideo({ kind: "mp4", seconds: 4 }, (server) => ({
    readInPlaceFromBytes: 0,
    retryDelaysMs: [5, 5, 5],
    // The probe read the URL; from now on it answers 503, as a store in an outage would.
    onStarted: () => {
      server.failing = true;
    },
  }), async (t, task, _, counts) => {
    assert.equal(await t.handle(task), "ack");
    const types = (await t.published()).map((e) => e.type);
    assert.equal(types.at(-1), "job.done", `reported ${types}`);
    assert.equal(types.filter((type) => type === "job.started").length, 1, "probed and started once");
    assert.equal(counts.gets, 1, "the second try fetched a copy");
    const stored = await t.blobs.get(task.outputKey);
    assert.ok(stored && stored.size > 10_000, "the MP3 is stored");
    await stored.body.cancel();
  });
});

Deno.test("worker never stores an MP3 cut short by a storage read that broke under FFmpeg (FFmpeg 5.1 exits 0 then)", async () => {
  await withServedVideo({ kind: "mkv", seconds: 60 }, (server, size) => ({
    readInPlaceFromBytes: 0,
    retryDelaysMs: [5, 5, 5],
    // The probe read the URL; the conversion's reads break off after a third of the file.
    onStarted: () => {
      server.breakAfter = Math.floor(size / 3);
    },
  }), async (t, task, _, counts) => {
    assert.equal(await t.handle(task), "ack");
    const last = (await t.published()).at(-1);
    assert.ok(last?.type === "job.done" && Math.abs(last.output.duration - 60) < 0.2, JSON.stringify(last));
    assert.equal(counts.gets, 1, "the second try converted a fetched copy");
  });
});

Deno.test("worker gives its verdict on a damaged video read over HTTP from a fetched copy: corrupt_input, never the URL", async () => {
  const lines: string[] = [];
  await withServedVideo(
    { kind: "mp4", seconds: 2, damage: (bytes) => bytes.subarray(0, Math.floor(bytes.length / 3)) }, // no moov
    () => ({ readInPlaceFromBytes: 0, retryDelaysMs: [60_000], log: (line) => lines.push(line) }),
    async (t, task, _, counts) => {
      const started = Date.now();
      assert.equal(await t.handle(task), "ack");
      assert.ok(Date.now() - started < 30_000, "no retry wait: the copy is fetched at once");
      const events = await t.published();
      const last = events.at(-1);
      assert.equal(last?.type === "job.failed" && last.error.code, "corrupt_input", JSON.stringify(last));
      assert.equal(counts.gets, 1, "the verdict came from a fetched copy");
      assert.ok(lines.some((line) => /trying again on a fetched copy/.test(line)), lines.join("\n"));
      const text = JSON.stringify(events) + lines.join("\n");
      assert.ok(!text.includes("127.0.0.1") && !text.includes("X-Amz") && !text.includes("secret0123"), text);
    },
  );
});

Deno.test("worker hands back an aborted task: FFmpeg is stopped, nothing is reported, the work folder is removed", async () => {
  const stop = new AbortController();
  const t = await setup(undefined, {
    onStarted: () => {
      setTimeout(() => stop.abort(), 200);
    },
  });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "flac", { seconds: 1500 }));
  const started = Date.now();
  assert.equal(await t.handle(task, { signal: stop.signal }), "retry");
  assert.ok(Date.now() - started < 5000, `stopping took ${Date.now() - started} ms`);
  const types = (await t.published()).map((e) => e.type);
  assert.ok(!types.includes("job.done") && !types.includes("job.failed"), `reported ${types}`);
  assert.equal(await t.blobs.head(task.outputKey), null);
  assert.deepEqual([...Deno.readDirSync(`${t.root}/work`)], []);
  await t.close();
});

Deno.test("worker never holds a task past maxHoldMs: it gives up before a retry wait that would end past it", async () => {
  const t = await setup((blobs) => ({
    ...blobs,
    put: (key, body, options) =>
      key.startsWith("outputs/")
        ? body.cancel().then(() => Promise.reject(new Error("S3 is down")))
        : blobs.put(key, body, options),
  }), { retryDelaysMs: [50, 50, 20_000], maxHoldMs: 5_000 });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  const started = Date.now();
  assert.equal(await t.handle(task), "ack");
  assert.ok(Date.now() - started < 5_000, `held ${Date.now() - started} ms`);
  const last = (await t.published()).at(-1);
  assert.equal(last?.type === "job.failed" && last.error.code, "service_unavailable");
  await t.close();
});

Deno.test("worker cuts FFmpeg's cap to what is left of maxHoldMs", async () => {
  const t = await setup(undefined, { maxHoldMs: 1500 });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "flac", { seconds: 1500 }));
  const started = Date.now();
  assert.equal(await t.handle(task), "ack");
  assert.ok(Date.now() - started < 3000, `held ${Date.now() - started} ms`);
  const last = (await t.published()).at(-1);
  assert.equal(last?.type === "job.failed" && last.error.code, "conversion_failed");
  assert.match(last?.type === "job.failed" ? last.error.message : "", /timed out/);
  await t.close();
});

/** A queue that hands one task to its consumer at once; `outcome` is what the handler said. */
function oneTask(task: ConversionRequested) {
  let outcome: Promise<Outcome> | undefined;
  const queue: Queue<ConversionRequested> = {
    publish: () => Promise.reject(new Error("unused")),
    consume(handler) {
      const running = handler(task, { redelivered: false });
      outcome = running;
      return Promise.resolve({ close: () => running.then(() => {}) });
    },
  };
  return { queue, outcome: () => outcome! };
}

Deno.test("worker shutdown lets the task in hand finish when it fits the grace", async () => {
  const t = await setup();
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  const tasks = oneTask(task);
  const worker = await startWorker(tasks.queue, t.deps);
  await worker.shutdown(30_000);
  assert.equal(await tasks.outcome(), "ack");
  assert.equal((await t.published()).at(-1)?.type, "job.done");
  await t.close();
});

Deno.test("worker shutdown hands back at once a task that FFmpeg says will not end within the grace", async () => {
  const lines: string[] = [];
  const t = await setup(undefined, { log: (line) => lines.push(line) });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "flac", { seconds: 1500 }));
  const tasks = oneTask(task);
  const worker = await startWorker(tasks.queue, t.deps);
  // Once FFmpeg has given an estimate of what is left.
  for (let i = 0; !(await t.published()).some((e) => e.type === "job.progress" && e.eta !== undefined); i++) {
    assert.ok(i < 200, `no progress with an ETA: ${JSON.stringify(await t.published())}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  const started = Date.now();
  await worker.shutdown(3_000);
  assert.ok(Date.now() - started < 1_500, `shutdown took ${Date.now() - started} ms of a 3 s grace`);
  assert.equal(await tasks.outcome(), "retry");
  assert.ok(lines.some((line) => /s of FFmpeg left/.test(line)), lines.join("\n"));
  assert.ok(!(await t.published()).some((e) => e.type === "job.done" || e.type === "job.failed"));
  await t.close();
});

/** Pids of processes whose command line contains `text` (pgrep -f). */
async function processesWith(text: string): Promise<number[]> {
  const pattern = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const { stdout } = await new Deno.Command("pgrep", {
    args: ["-f", pattern],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  return new TextDecoder().decode(stdout).split("\n").filter(Boolean).map(Number);
}

async function waitFor(what: string, probe: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  while (!(await probe())) {
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A worker on a real KV task queue and an in-process cancel broadcast, on the files of `setup`. */
async function cancellableWorker(
  t: Awaited<ReturnType<typeof setup>>,
  extra: { rememberCancelsMs?: number } = {},
) {
  const lines: string[] = [];
  const tasks = createKvQueue(t.kv, TASK_QUEUE, ConversionRequested, { pollMs: 20 });
  const cancels = createMemoryBroadcast(JobCancel);
  const worker = await startWorker(tasks, { ...t.deps, cancels, log: (line) => lines.push(line), ...extra });
  const cancel = (jobId: string) =>
    cancels.publish({ type: "job.cancel", version: 1, jobId, at: new Date().toISOString() });
  /** The tasks still on the queue (a task handed back stays there, to be delivered again). */
  const queued = async () => {
    const out: unknown[] = [];
    for await (const entry of t.kv.list({ prefix: ["queue", TASK_QUEUE] })) out.push(entry.value);
    return out;
  };
  return { worker, tasks, cancel, queued, lines };
}

Deno.test("worker stops a cancelled conversion: FFmpeg gone within 1 s, no MP3, the task acked, nothing reported", async () => {
  const t = await setup();
  const w = await cancellableWorker(t);
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "flac", { seconds: 1500 }));
  await w.tasks.publish(task);
  // FFmpeg converts (it has reported progress), under the job's work folder, named in its command line.
  await waitFor("progress", async () => (await t.published()).some((e) => e.type === "job.progress"));
  assert.ok((await processesWith(task.jobId)).length > 0, "FFmpeg runs");

  const cancelled = Date.now();
  await w.cancel(task.jobId);
  await waitFor("FFmpeg to be gone", async () => (await processesWith(task.jobId)).length === 0, 5_000);
  const took = Date.now() - cancelled;
  assert.ok(took < 1_000, `FFmpeg was still running ${took} ms after the cancel`);

  await waitFor("the task to be settled", async () => (await w.queued()).length === 0);
  await w.worker.close();
  assert.deepEqual(await w.tasks.deadLetters(), []);
  const types = (await t.published()).map((e) => e.type);
  assert.ok(!types.includes("job.done") && !types.includes("job.failed"), `reported ${types}`);
  assert.equal(await t.blobs.head(task.outputKey), null, "no MP3");
  assert.deepEqual([...Deno.readDirSync(`${t.root}/work`)], [], "the work folder is removed");
  assert.ok(
    w.lines.some((line) => line.includes(`job ${task.jobId}: cancelled; stopped and dropped`)),
    w.lines.join("\n"),
  );
  assert.ok(!w.lines.some((line) => /handed back/.test(line)), w.lines.join("\n"));
  await t.close();
});

Deno.test("worker skips a task whose job was cancelled before it arrived, and goes on with the next", async () => {
  const t = await setup();
  const w = await cancellableWorker(t);
  const [dropped, kept] = [t.task(), t.task()];
  const input = await makeMedia(t.root, "mp4");
  await store(t.blobs, dropped.inputKey, input);
  await store(t.blobs, kept.inputKey, input);
  await w.cancel(dropped.jobId);
  await w.tasks.publish(dropped);
  await w.tasks.publish(kept);
  await waitFor("the next task's MP3", async () => (await t.published()).some((e) => e.type === "job.done"));
  await waitFor("both tasks to be settled", async () => (await w.queued()).length === 0);
  await w.worker.close();
  const events = await t.published();
  assert.deepEqual(events.filter((e) => e.jobId === dropped.jobId), [], "nothing done or reported for it");
  assert.equal(events.at(-1)?.jobId, kept.jobId);
  assert.equal(await t.blobs.head(dropped.outputKey), null);
  assert.ok(
    w.lines.includes(`job ${dropped.jobId}: cancelled before it started; skipped`),
    w.lines.join("\n"),
  );
  await t.close();
});

Deno.test("worker forgets a cancel after rememberCancelsMs", async () => {
  const t = await setup();
  const w = await cancellableWorker(t, { rememberCancelsMs: 50 });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  await w.cancel(task.jobId);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await w.tasks.publish(task);
  await waitFor("the MP3", async () => (await t.published()).some((e) => e.type === "job.done"));
  await w.worker.close();
  assert.ok(await t.blobs.head(task.outputKey));
  await t.close();
});

Deno.test("worker drops an MP3 stored just as its job was cancelled, and never reports it", async () => {
  const control: TaskControl = {};
  const stop = new AbortController();
  control.signal = stop.signal;
  const t = await setup((blobs) => ({
    ...blobs,
    put: async (key, body, options) => {
      const stored = await blobs.put(key, body, options);
      if (key.startsWith("outputs/")) {
        // The cancel arrives while the MP3 is being stored: storing is not cut short, but then it is dropped.
        control.cancelled = true;
        stop.abort(new Error("cancelled"));
      }
      return stored;
    },
  }));
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  assert.equal(await t.handle(task, control), "ack");
  const types = (await t.published()).map((e) => e.type);
  assert.ok(!types.includes("job.done") && !types.includes("job.failed"), `reported ${types}`);
  assert.equal(await t.blobs.head(task.outputKey), null);
  await t.close();
});

Deno.test("worker acks a cancelled task waiting out a storage outage, and reports no failure", async () => {
  const control: TaskControl = {};
  const stop = new AbortController();
  control.signal = stop.signal;
  let refused = 0;
  const t = await setup((blobs) => ({
    ...blobs,
    put: (key, body, options) => {
      if (!key.startsWith("outputs/")) return blobs.put(key, body, options);
      return body.cancel().then(() => {
        refused++;
        return Promise.reject(new Error("S3 is down"));
      });
    },
  }), { retryDelaysMs: [60_000] });
  const task = t.task();
  await store(t.blobs, task.inputKey, await makeMedia(t.root, "mp4"));
  const outcome = t.handle(task, control);
  // Once the first try has failed to store the MP3, the worker waits a minute before the next: the cancel comes then.
  await waitFor("the first try to fail", () => refused > 0);
  const started = Date.now();
  control.cancelled = true;
  stop.abort(new Error("cancelled"));
  assert.equal(await outcome, "ack");
  assert.ok(Date.now() - started < 1_000, "the wait is cut short");
  assert.equal(refused, 1, "no second try");
  assert.ok(!(await t.published()).some((e) => e.type === "job.failed" || e.type === "job.done"));
  await t.close();
});

Deno.test("worker stops hearing cancels when it is closed", async () => {
  const t = await setup();
  const inner = createMemoryBroadcast(JobCancel);
  let open = 0;
  const cancels: Broadcast<JobCancel> = {
    publish: (message) => inner.publish(message),
    subscribe: async (handler) => {
      const sub = await inner.subscribe(handler);
      open++;
      return { close: () => sub.close().then(() => void open--) };
    },
  };
  const worker = await startWorker(oneTask(t.task()).queue, { ...t.deps, cancels });
  assert.equal(open, 1);
  await worker.shutdown(1_000);
  assert.equal(open, 0);
  await t.close();
});
