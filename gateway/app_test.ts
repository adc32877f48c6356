import assert from "node:assert/strict";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";
import { createGatewayApp } from "./app.ts";

const id = "0f8fad5b-d9cb-469f-a165-70867728950e";

function metadataWith(job: PublicJob | null): MetadataClient {
  return {
    createJob: () => Promise.reject(new Error("not used")),
    getJob: () => Promise.resolve(job),
    outputKey: () => Promise.reject(new Error("not used")),
    markPublished: () => Promise.reject(new Error("not used")),
    unpublished: () => Promise.reject(new Error("not used")),
    postEvent: () => Promise.resolve(),
    listJobs: () => Promise.reject(new Error("not used")),
    cancelJob: () => Promise.reject(new Error("not used")),
    retryJob: () => Promise.reject(new Error("not used")),
    deleteJob: () => Promise.reject(new Error("not used")),
    authenticate: () => Promise.reject(new Error("not used")),
    admit: () => Promise.reject(new Error("not used")),
    admitted: () => Promise.reject(new Error("not used")),
    checkQuota: () => Promise.reject(new Error("not used")),
    expiring: () => Promise.reject(new Error("not used")),
    expireJob: () => Promise.reject(new Error("not used")),
    markExpired: () => Promise.reject(new Error("not used")),
    reserve: () => Promise.reject(new Error("not used")),
    unreserve: () => Promise.reject(new Error("not used")),
    events: () =>
      Promise.resolve(new Response("data: {}\n\n", { headers: { "content-type": "text/event-stream" } })),
  };
}

const job = (status: string, extra: Record<string, unknown> = {}): PublicJob => ({
  id,
  status,
  input: { filename: "clip.mp4", size: 3 },
  ...extra,
});

Deno.test("GET /v1/jobs/:id/download answers 409 not_ready before the job is done", async () => {
  for (const status of ["queued", "converting", "failed"]) {
    const app = createGatewayApp({
      upload: () => new Response(null, { status: 500 }),
      metadata: metadataWith(job(status)),
    });
    const res = await app.request(`/v1/jobs/${id}/download`);
    assert.deepEqual(res.status, 409);
    assert.deepEqual((await res.json()).error.code, "not_ready");
  }
});

Deno.test("GET /v1/jobs/:id/download passes the store's redirect through with the original name", async () => {
  let asked = "";
  const app = createGatewayApp({
    upload: (request) => {
      asked = request.url;
      return new Response(null, {
        status: 302,
        headers: { location: "https://s3.example/x?X-Amz-Signature=1" },
      });
    },
    metadata: metadataWith(job("done")),
  });
  const res = await app.request(`/v1/jobs/${id}/download`);
  assert.deepEqual([res.status, res.headers.get("location")], [
    302,
    "https://s3.example/x?X-Amz-Signature=1",
  ]);
  assert.deepEqual(new URL(asked).searchParams.get("filename"), "clip.mp4");
  assert.deepEqual(new URL(asked).searchParams.get("mode"), "redirect");
});

Deno.test("The Gateway answers 503 with the error JSON when a service behind it cannot be reached", async () => {
  const app = createGatewayApp({
    upload: () => Promise.reject(new TypeError("connection refused")),
    metadata: metadataWith(null),
  });
  const res = await app.request("/v1/jobs", {
    method: "POST",
    body: "x",
    headers: { "content-type": "video/mp4" },
  });
  assert.deepEqual(res.status, 503);
  assert.deepEqual((await res.json()).error.code, "service_unavailable");
  assert.deepEqual((await app.request(`/v1/jobs/${id}`)).status, 404);
});

Deno.test("POST /v1/convert answers a failed job's error with its status and the job id", async () => {
  const app = createGatewayApp({
    upload: () => Response.json(job("queued"), { status: 202 }),
    metadata: metadataWith(job("failed", { error: { code: "no_audio_stream", message: "no audio" } })),
    pollMs: 1,
  });
  const res = await app.request("/v1/convert", {
    method: "POST",
    body: "x",
    headers: { "content-type": "video/mp4" },
  });
  assert.deepEqual(res.status, 422);
  assert.deepEqual(res.headers.get("x-job-id"), id);
  assert.deepEqual(await res.json(), { error: { code: "no_audio_stream", message: "no audio" } });
});

Deno.test("POST /v1/jobs passes the client's declared size on as x-content-length", async () => {
  let seen: Headers | undefined;
  const app = createGatewayApp({
    upload: async (request) => {
      seen = request.headers;
      await request.body?.cancel();
      return Response.json({ error: { code: "payload_too_large", message: "too big" } }, { status: 413 });
    },
    metadata: metadataWith(null),
  });
  const res = await app.request("/v1/jobs", {
    method: "POST",
    body: "x".repeat(100),
    headers: { "content-type": "video/mp4", "content-length": "100" },
  });
  assert.equal(res.status, 413);
  assert.equal(seen?.get("x-content-length"), "100");
  assert.equal(seen?.get("content-type"), "video/mp4");
});

Deno.test("POST /v1/convert that outlasts its wait answers 504 still_converting with the job's location", async () => {
  const app = createGatewayApp({
    upload: () => Response.json(job("queued"), { status: 202 }),
    metadata: metadataWith(job("converting")),
    pollMs: 1,
    convertTimeoutMs: 20,
  });
  const res = await app.request("/v1/convert", {
    method: "POST",
    body: "x",
    headers: { "content-type": "video/mp4" },
  });
  assert.equal(res.status, 504);
  assert.equal(res.headers.get("location"), `/v1/jobs/${id}`);
  assert.equal((await res.json()).error.code, "still_converting");
});

Deno.test("POST /v1/convert learns of the end from the job's event stream, without waiting to poll", async () => {
  let reads = 0;
  const done = job("done", { output: { key: "outputs/x.mp3", codec: "mp3" } });
  const app = createGatewayApp({
    upload: (request) =>
      new URL(request.url).pathname.startsWith("/files/")
        ? new Response("MP3", { headers: { "content-type": "audio/mpeg" } })
        : Response.json(job("queued"), { status: 202 }),
    metadata: {
      ...metadataWith(null),
      // Read once after the stream says done: before it, the job would still be converting.
      getJob: () => Promise.resolve(reads++ === 0 ? done : job("converting")),
      events: () =>
        Promise.resolve(
          new Response(
            `event: job\ndata: ${JSON.stringify(job("converting"))}\n\n` +
              `event: job\ndata: ${JSON.stringify(done)}\n\n`,
            { headers: { "content-type": "text/event-stream" } },
          ),
        ),
    },
    pollMs: 60_000, // a poll would outlast the test
  });
  const started = Date.now();
  const res = await app.request("/v1/convert", {
    method: "POST",
    body: "x",
    headers: { "content-type": "video/mp4" },
  });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "MP3");
  assert.equal(res.headers.get("x-job-id"), id);
  assert.equal(reads, 1, "the job is read once, when its stream told it is done");
  assert.ok(Date.now() - started < 5_000);
});
