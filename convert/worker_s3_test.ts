/**
 * The worker on a real S3 store (s3rver): FFmpeg reads the video through a presigned URL with range requests, and
 * an outage of the store under FFmpeg is a passing failure. Run through `bash scripts/test_servers.sh deno test -A`.
 */
import assert from "node:assert/strict";
import { ConversionRequested, EVENT_QUEUE, JobEvent, jobKeys } from "@vmp3/shared";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createS3BlobStore } from "@vmp3/adapters/s3";
import { audioDuration, makeMedia } from "./testing/media.ts";
import { createTaskHandler, type WorkerDeps } from "./worker.ts";

function env(name: string): string {
  const value = Deno.env.get(name);
  assert.ok(value, `${name} is not set: run through \`bash scripts/test_servers.sh deno test -A convert/\``);
  return value;
}

async function testServer(name: string): Promise<void> {
  const out = await new Deno.Command(env(name), { stdout: "piped", stderr: "piped" }).output();
  assert.ok(out.success, `${name} failed: ${new TextDecoder().decode(out.stderr)}`);
}

async function withS3Worker(
  extra: Partial<WorkerDeps>,
  fn: (t: {
    root: string;
    gets: () => number;
    handle: ReturnType<typeof createTaskHandler>;
    task: ConversionRequested;
    published: () => Promise<JobEvent[]>;
    blobs: WorkerDeps["blobs"];
  }) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const store = createS3BlobStore({
    endpoint: env("TEST_S3_ENDPOINT"),
    bucket: `worker-${crypto.randomUUID().slice(0, 8)}`,
    region: env("TEST_S3_REGION"),
    accessKeyId: env("TEST_S3_ACCESS_KEY_ID"),
    secretAccessKey: env("TEST_S3_SECRET_ACCESS_KEY"),
    forcePathStyle: true,
    checksum: "when_required",
  });
  let gets = 0;
  try {
    await store.ensureBucket();
    const blobs = {
      ...store,
      get: (key: string) => {
        gets++;
        return store.get(key);
      },
    };
    const events = createKvQueue(kv, EVENT_QUEUE, JobEvent);
    const handle = createTaskHandler({
      blobs,
      events,
      workDir: `${root}/work`,
      limits: {
        ffmpegPath: "ffmpeg",
        ffprobePath: "ffprobe",
        maxDuration: 3600,
        maxStreams: 16,
        timeoutMs: 60_000,
      },
      readInPlaceFromBytes: 0,
      ...extra,
    });
    const jobId = crypto.randomUUID();
    const task: ConversionRequested = {
      type: "conversion.requested",
      version: 1,
      jobId,
      ...jobKeys(jobId),
      filename: "talk.mp4",
      options: { bitrate: 128 } as ConversionRequested["options"],
      requestedAt: new Date().toISOString(),
    };
    const video = await makeMedia(root, "mp4", { seconds: 30 });
    await store.put(task.inputKey, (await Deno.open(video)).readable);
    const published = async () => {
      const out: JobEvent[] = [];
      for await (const entry of kv.list<{ body: JobEvent }>({ prefix: ["queue", EVENT_QUEUE] })) {
        out.push(entry.value.body);
      }
      return out;
    };
    await fn({ root, gets: () => gets, handle, task, published, blobs });
  } finally {
    store.close();
    kv.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** The MP3 stored under `key`, written to a file to be checked with ffprobe. */
async function storedMp3(blobs: WorkerDeps["blobs"], key: string, path: string): Promise<string> {
  const object = await blobs.get(key);
  assert.ok(object, `no object at ${key}`);
  await object.body.pipeTo((await Deno.open(path, { write: true, create: true })).writable);
  return path;
}

Deno.test("worker on s3rver: FFmpeg reads an MP4 with its index at the end through a presigned URL, no copy fetched", async () => {
  await withS3Worker({}, async (t) => {
    assert.equal(await t.handle(t.task), "ack");
    const last = (await t.published()).at(-1);
    assert.equal(last?.type, "job.done", JSON.stringify(last));
    assert.equal(t.gets(), 0, "the video was read where it lies");
    const duration = await audioDuration(await storedMp3(t.blobs, t.task.outputKey, `${t.root}/out.mp3`));
    assert.ok(Math.abs(duration - 30) < 0.1, `duration ${duration}`);
  });
});

Deno.test("worker on s3rver: the store down as FFmpeg starts is ridden out (FFmpeg reconnects, or the next try fetches a copy); the job is done", async () => {
  let restarted: Promise<void> | undefined;
  await withS3Worker({
    retryDelaysMs: [500, 1_000, 2_000, 4_000, 8_000],
    // FFmpeg starts while the store is down; it comes back 1.5 s later.
    onStarted: async () => {
      await testServer("TEST_S3_STOP");
      restarted = new Promise<void>((r) => setTimeout(r, 1_500)).then(() => testServer("TEST_S3_START"));
    },
  }, async (t) => {
    try {
      assert.equal(await t.handle(t.task), "ack");
      const types = (await t.published()).map((e) => e.type);
      assert.ok(restarted, "the store was stopped");
      assert.equal(types.at(-1), "job.done", `reported ${types}`);
      assert.equal(types.filter((type) => type === "job.started").length, 1, "probed and started once");
      const duration = await audioDuration(await storedMp3(t.blobs, t.task.outputKey, `${t.root}/out.mp3`));
      assert.ok(Math.abs(duration - 30) < 0.1, `duration ${duration}`);
    } finally {
      await restarted;
    }
  });
});
