import assert from "node:assert/strict";
import { type BlobStore, ConversionRequested, TASK_QUEUE } from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createMetadataApp, createMetadataClient } from "@vmp3/metadata";
import { createUploadApp } from "./app.ts";
import { eventually, settle, tasksTaken } from "./testing/wait.ts";

async function setup(maxUploadBytes = 1000) {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const store = createFsBlobStore(root);
  /** Puts not yet settled: a put left waiting on a dead request would pin its buffers forever. */
  const pending = new Set<Promise<unknown>>();
  const blobs: BlobStore = {
    ...store,
    put(key, body, options) {
      const putting = store.put(key, body, options);
      pending.add(putting);
      putting.finally(() => pending.delete(putting)).catch(() => {});
      return putting;
    },
  };
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested, { pollMs: 10 });
  const metadataApp = createMetadataApp({
    store: createKvJobStore(kv),
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
  });
  /** Reports a job done, as Convert's event would, with its MP3 at `key`. */
  const finish = (jobId: string, key: string) =>
    metadataApp.request(`/jobs/${jobId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "job.done",
        version: 1,
        jobId,
        at: new Date().toISOString(),
        output: {
          key,
          codec: "mp3",
          size: 3,
          duration: 1,
          bitrate: 128000,
          sampleRate: 44100,
          channels: 2,
          sha256: "a".repeat(64),
          method: "encode",
        },
      }),
    });
  const app = createUploadApp({
    blobs,
    tasks,
    metadata: createMetadataClient((r) => metadataApp.fetch(r)),
    maxUploadBytes,
  });
  const published: ConversionRequested[] = [];
  const sub = await tasks.consume((task) => {
    published.push(task);
    return Promise.resolve("ack");
  });
  return {
    app,
    blobs,
    finish,
    pending,
    published,
    /** Waits until `count` tasks came (see {@linkcode tasksTaken}). */
    tasksTaken: (count: number) => tasksTaken(published, count),
    /** A moment for a task that must not be published to show anyway, before asserting there is none. */
    drain: settle,
    async close() {
      await sub.close();
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

function form(bytes: Uint8Array, filename = "clip.mp4", fields: Record<string, string> = {}): FormData {
  const data = new FormData();
  for (const [k, v] of Object.entries(fields)) data.append(k, v);
  data.append("file", new File([new Uint8Array(bytes)], filename, { type: "video/mp4" }));
  return data;
}

/** A body of `size` bytes sent in chunks with no Content-Length, as a client streaming it would. */
function chunked(size: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= size) return controller.close();
      const n = Math.min(100, size - sent);
      sent += n;
      controller.enqueue(new Uint8Array(n).fill(7));
    },
  });
}

Deno.test("POST /uploads stores a multipart file under a server-made key and publishes one task", async () => {
  const t = await setup();
  const res = await t.app.request("/uploads", {
    method: "POST",
    body: form(new Uint8Array(300), "../../etc/my clip.mp4", { bitrate: "128" }),
  });
  assert.deepEqual(res.status, 202);
  const job = await res.json();
  const sha256 = "d13d4a8b3b8add19b5970157f09d00c12cbda4fed4d74d8493156523f7069b66"; // of 300 zero bytes
  assert.deepEqual([job.status, job.input], ["queued", { filename: "my clip.mp4", size: 300, sha256 }]);
  assert.deepEqual(job.options, { bitrate: 128 });
  await t.tasksTaken(1);
  assert.deepEqual(t.published.length, 1);
  assert.deepEqual(t.published[0].jobId, job.id);
  assert.deepEqual(t.published[0].options, { bitrate: 128 });
  assert.deepEqual(await t.blobs.list(""), [`inputs/${job.id}`]);
  await t.close();
});

Deno.test("POST /uploads takes a raw video body named by ?filename", async () => {
  const t = await setup();
  const res = await t.app.request("/uploads?filename=%C3%A9t%C3%A9.mov", {
    method: "POST",
    headers: { "content-type": "video/quicktime" },
    body: chunked(250),
  });
  assert.deepEqual(res.status, 202);
  const job = await res.json();
  assert.deepEqual([job.input.filename, job.input.size], ["été.mov", 250]);
  assert.deepEqual((await t.blobs.head(`inputs/${job.id}`))?.size, 250);
  await t.close();
});

Deno.test("A raw body's declared length reaches the store as its size; a body of another length is 400 and kept nowhere", async () => {
  const t = await setup();
  const sizes: (number | undefined)[] = [];
  const put = t.blobs.put;
  t.blobs.put = (key, body, options) => {
    sizes.push(options?.size);
    return put(key, body, options);
  };
  const raw = (declared: number, sent: number) =>
    t.app.request("/uploads", {
      method: "POST",
      headers: { "content-type": "video/mp4", "x-content-length": String(declared) },
      body: chunked(sent),
    });
  assert.deepEqual((await raw(250, 250)).status, 202);
  const sent = await t.app.request("/uploads", { method: "POST", body: form(new Uint8Array(100)) });
  assert.deepEqual(sent.status, 202);
  assert.deepEqual(sizes, [250, undefined]); // a form's file has no known length
  for (const [declared, body] of [[300, 250], [200, 250]]) {
    const res = await raw(declared, body);
    assert.deepEqual(res.status, 400, `${declared} declared, ${body} sent`);
    assert.deepEqual((await res.json()).error.code, "invalid_request");
  }
  await t.tasksTaken(2);
  assert.deepEqual((await t.blobs.list("")).length, 2);
  assert.deepEqual(t.published.length, 2);
  await t.close();
});

Deno.test("An upload over the limit answers 413 and leaves nothing in storage and no task", async () => {
  const t = await setup(1000);
  const streamed = await t.app.request("/uploads", {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: chunked(5000),
  });
  assert.deepEqual(streamed.status, 413);
  assert.deepEqual((await streamed.json()).error.code, "payload_too_large");
  const declared = await t.app.request("/uploads", { method: "POST", body: form(new Uint8Array(2000)) });
  assert.deepEqual(declared.status, 413);
  await t.drain();
  assert.deepEqual(await t.blobs.list(""), []);
  assert.deepEqual(t.published.length, 0);
  await t.close();
});

Deno.test("Bad requests answer 4xx with a code, store nothing, and publish nothing", async () => {
  const t = await setup();
  const cases: [RequestInit & { path?: string }, number, string][] = [
    [{ body: "hello", headers: { "content-type": "text/plain" } }, 415, "unsupported_media_type"],
    [
      {
        body: (() => {
          const f = new FormData();
          f.append("other", "x");
          return f;
        })(),
      },
      400,
      "invalid_request",
    ],
    [
      { body: "--x\r\nbroken", headers: { "content-type": "multipart/form-data; boundary=x" } },
      400,
      "invalid_request",
    ],
    [{ body: "--x", headers: { "content-type": "multipart/form-data" } }, 400, "invalid_request"],
    [{ body: form(new Uint8Array(10)), path: "/uploads?bitrate=9999" }, 400, "invalid_option"],
    [{ body: form(new Uint8Array(10), "a.mp4", { bitrate: "loud" }) }, 400, "invalid_option"],
    [{ body: form(new Uint8Array(0)) }, 422, "unsupported_input"],
  ];
  for (const [init, status, code] of cases) {
    const res = await t.app.request(init.path ?? "/uploads", { method: "POST", ...init });
    const body = await res.json();
    assert.deepEqual([res.status, body.error.code], [status, code], JSON.stringify(body));
    assert.deepEqual(typeof body.error.message, "string");
  }
  await t.drain();
  assert.deepEqual(await t.blobs.list(""), []);
  assert.deepEqual(t.published.length, 0);
  await t.close();
});

Deno.test("GET /files/:id/output streams the job's MP3 with a UTF-8 Content-Disposition, 404 before it exists", async () => {
  const t = await setup();
  const created = await t.app.request("/uploads", { method: "POST", body: form(new Uint8Array(10)) });
  const { id } = await created.json();
  assert.deepEqual((await t.app.request(`/files/${id}/output`)).status, 404);
  assert.deepEqual((await t.app.request(`/files/${crypto.randomUUID()}/output`)).status, 404);
  await t.blobs.put(`outputs/${id}.mp3`, ReadableStream.from([new Uint8Array([1, 2, 3])]));
  await t.finish(id, `outputs/${id}.mp3`);
  const res = await t.app.request(`/files/${id}/output?filename=${encodeURIComponent('été "live".mp4')}`);
  assert.deepEqual(res.status, 200);
  assert.deepEqual(res.headers.get("content-type"), "audio/mpeg");
  assert.deepEqual(
    res.headers.get("content-disposition"),
    `attachment; filename="_t_ _live_.mp3"; filename*=UTF-8''%C3%A9t%C3%A9%20%22live%22.mp3`,
  );
  assert.deepEqual([...new Uint8Array(await res.arrayBuffer())], [1, 2, 3]);
  await t.close();
});

Deno.test("A multipart upload cut off mid-file fails, and the half-stored file is not kept", async () => {
  const t = await setup(10_000_000);
  const boundary = "xyz";
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n` +
    `Content-Type: video/mp4\r\n\r\n`;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent === 0) controller.enqueue(new TextEncoder().encode(head));
      if (sent >= 200_000) return controller.error(new Error("connection reset"));
      sent += 50_000;
      controller.enqueue(new Uint8Array(50_000));
    },
  });
  const res = await Promise.race([
    t.app.request("/uploads", {
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
      body,
    }),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the upload hung")), 5000)),
  ]);
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_request");
  await eventually("the put of the cut-off file to settle", () => t.pending.size === 0);
  await t.drain();
  assert.deepEqual(await t.blobs.list(""), []);
  assert.equal(t.published.length, 0);
  await t.close();
});

Deno.test("A bad form field after the file answers 400 and removes the stored file", async () => {
  const t = await setup();
  const data = new FormData();
  data.append("file", new File([new Uint8Array(100)], "a.mp4"));
  data.append("bitrate", "1".repeat(5000));
  const res = await t.app.request("/uploads", { method: "POST", body: data });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_request");
  assert.deepEqual(await t.blobs.list(""), []);
  await t.close();
});

Deno.test("The same bytes with the same options make a job done at once from the first MP3, with no task", async () => {
  const t = await setup();
  const bytes = crypto.getRandomValues(new Uint8Array(500));
  const upload = async (fields: Record<string, string>) =>
    await (await t.app.request("/uploads", { method: "POST", body: form(bytes, "a.mp4", fields) })).json();
  const first = await upload({ bitrate: "128" });
  await t.tasksTaken(1);
  assert.equal(t.published.length, 1);
  await t.blobs.put(`outputs/${first.id}.mp3`, ReadableStream.from([new Uint8Array([4, 5, 6])]));
  await t.finish(first.id, `outputs/${first.id}.mp3`);

  const second = await upload({ bitrate: "128k" }); // the same option, spelt otherwise
  assert.deepEqual([second.status, second.cached, second.input.sha256], ["done", true, first.input.sha256]);
  await t.drain();
  assert.equal(t.published.length, 1, "no conversion task for a cached job");
  assert.equal(await t.blobs.head(`inputs/${second.id}`), null, "its upload is not kept");
  const mp3 = await t.app.request(`/files/${second.id}/output?mode=stream`);
  assert.deepEqual([...new Uint8Array(await mp3.arrayBuffer())], [4, 5, 6], "it serves the first job's MP3");

  const other = await upload({ bitrate: "192" });
  assert.equal(other.status, "queued", "other options are another output");
  await t.tasksTaken(2);
  assert.equal(t.published.length, 2);
  await t.close();
});
