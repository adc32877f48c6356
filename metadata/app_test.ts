import assert from "node:assert/strict";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import type { JobEvent } from "@vmp3/shared";
import { createMetadataApp } from "./app.ts";

const id = "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed";
const OUTPUT = {
  key: "k",
  codec: "mp3",
  size: 10,
  duration: 3,
  bitrate: 192000,
  sampleRate: 44100,
  channels: 2,
  sha256: "d".repeat(64),
  method: "encode",
} as const;
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

async function setup() {
  const kv = await Deno.openKv(":memory:");
  const app = createMetadataApp({
    store: createKvJobStore(kv),
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv, { pollMs: 10 }),
    keepAliveMs: 50,
    now: () => new Date(at(0)),
  });
  const post = (path: string, body: unknown) =>
    app.request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  return { kv, app, post };
}

/** The `data:` lines of an event stream's body, one by one, as they come; done once the stream has closed. */
async function* dataLines(response: Response): AsyncGenerator<string, void> {
  let buffer = "";
  for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

Deno.test("POST /jobs records a queued job once; a repeat answers the same job with 200", async () => {
  const { kv, app, post } = await setup();
  const first = await post("/jobs", { id, input: { filename: "clip.mp4", size: 5 } });
  assert.deepEqual(first.status, 201);
  const job = await first.json();
  assert.deepEqual([job.status, job.progress, job.input], ["queued", 0, { filename: "clip.mp4", size: 5 }]);
  const again = await post("/jobs", { id, input: { filename: "other.mp4", size: 9 } });
  assert.deepEqual(again.status, 200);
  assert.deepEqual((await again.json()).input.filename, "clip.mp4");
  assert.deepEqual((await app.request(`/jobs/${id}`)).status, 200);
  kv.close();
});

Deno.test("Metadata answers unknown jobs and bad bodies with the error JSON", async () => {
  const { kv, app, post } = await setup();
  const missing = await app.request(`/jobs/${crypto.randomUUID()}`);
  assert.deepEqual(missing.status, 404);
  assert.deepEqual((await missing.json()).error.code, "not_found");
  const bad = await post("/jobs", { id: "not-a-uuid" });
  assert.deepEqual(bad.status, 400);
  assert.deepEqual((await bad.json()).error.code, "invalid_request");
  kv.close();
});

Deno.test("Events move a job forward only: a late progress or start never undoes done", async () => {
  const { kv, post } = await setup();
  await post("/jobs", { id, input: { filename: "clip.mp4", size: 5 } });
  const events: JobEvent[] = [
    { type: "job.started", version: 1, jobId: id, at: at(1), duration: 3 },
    { type: "job.progress", version: 1, jobId: id, at: at(2), progress: 0.5 },
    {
      type: "job.done",
      version: 1,
      jobId: id,
      at: at(3),
      output: OUTPUT,
    },
    { type: "job.progress", version: 1, jobId: id, at: at(4), progress: 0.7 },
    { type: "job.started", version: 1, jobId: id, at: at(5), duration: 3 },
    { type: "job.failed", version: 1, jobId: id, at: at(6), error: { code: "internal", message: "late" } },
  ];
  let last;
  for (const event of events) last = await (await post(`/jobs/${id}/events`, event)).json();
  assert.deepEqual([last.status, last.progress, last.updatedAt, last.error], ["done", 1, at(3), undefined]);
  assert.equal(last.output.size, 10);
  assert.equal("key" in last.output, false, "the storage key is not shown");
  kv.close();
});

Deno.test("GET /jobs/:id/events streams each change and closes after the final state", async () => {
  const { kv, app, post } = await setup();
  await post("/jobs", { id, input: { filename: "clip.mp4", size: 5 } });
  const response = await app.request(`/jobs/${id}/events`);
  assert.deepEqual(response.headers.get("content-type"), "text/event-stream");
  const events = dataLines(response);
  const status = async () => {
    const { value, done } = await events.next();
    return done ? null : JSON.parse(value).status;
  };
  // Each change is posted only once the one before has been streamed: sent earlier, it could be in the job the
  // stream shows first, and its own entry then skipped as already sent.
  assert.equal(await status(), "queued");
  await post(`/jobs/${id}/events`, { type: "job.started", version: 1, jobId: id, at: at(1), duration: 3 });
  assert.equal(await status(), "converting");
  await post(`/jobs/${id}/events`, {
    type: "job.failed",
    version: 1,
    jobId: id,
    at: at(2),
    error: { code: "no_audio_stream", message: "no audio" },
  });
  assert.equal(await status(), "failed");
  assert.equal(await status(), null, "the stream closes after the final state");
  kv.close();
});

Deno.test("a job asking for an output an earlier job made is done at once, marked cached, sharing its MP3", async () => {
  const { kv, app, post } = await setup();
  const cacheKey = "e".repeat(64);
  const input = { filename: "clip.mp4", size: 5, sha256: "f".repeat(64) };
  await post("/jobs", { id, input, options: { bitrate: 128 }, cacheKey });
  assert.equal((await app.request(`/jobs/${id}/output`)).status, 409, "no MP3 before it is done");
  const second = crypto.randomUUID();
  const early = await (await post("/jobs", { id: second, input, cacheKey })).json();
  assert.deepEqual([early.status, early.cached], ["queued", undefined], "nothing to reuse yet");

  const output = { ...OUTPUT, key: `outputs/${id}.mp3` };
  await post(`/jobs/${id}/events`, { type: "job.done", version: 1, jobId: id, at: at(3), output });
  const third = crypto.randomUUID();
  const response = await post("/jobs", { id: third, input, options: { bitrate: 128 }, cacheKey });
  assert.equal(response.status, 201);
  const job = await response.json();
  assert.deepEqual([job.status, job.progress, job.cached, job.output.sha256], [
    "done",
    1,
    true,
    OUTPUT.sha256,
  ]);
  assert.equal("cacheKey" in job, false, "the cache key is internal");
  assert.deepEqual(await (await app.request(`/jobs/${third}/output`)).json(), { key: `outputs/${id}.mp3` });
  const other = await (await post("/jobs", { id: crypto.randomUUID(), input, cacheKey: "0".repeat(64) }))
    .json();
  assert.equal(other.status, "queued", "other options or bytes are another output");
  kv.close();
});
