/**
 * Direct-to-S3 uploads: presigned URLs used with plain fetch against the s3rver of `bash scripts/test_servers.sh`,
 * then completed; and the folder storage of embedded mode, which cannot presign.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import type { BlobStore, MultipartStore } from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createS3BlobStore, type S3Settings } from "@vmp3/adapters/s3";
import { createFsMultipartStore } from "@vmp3/adapters/fs-multipart";
import { createS3MultipartStore } from "@vmp3/adapters/s3-multipart";
import type { PublicJob } from "@vmp3/metadata";
import type { Accept, StoredInput } from "./accept.ts";
import { createDirectUploadApp, partSizeFor } from "./direct_upload.ts";

const MiB = 1024 * 1024;

function patterned(size: number, seed = 1): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

async function s3(overrides: Partial<S3Settings> = {}) {
  const endpoint = Deno.env.get("TEST_S3_ENDPOINT");
  if (!endpoint) throw new Error("TEST_S3_ENDPOINT is not set: run through bash scripts/test_servers.sh");
  const settings: S3Settings = {
    endpoint,
    bucket: `direct-${crypto.randomUUID().slice(0, 8)}`,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
    ...overrides,
  };
  const blobs = createS3BlobStore(settings);
  await blobs.ensureBucket();
  const parts = createS3MultipartStore(settings);
  return {
    blobs,
    parts,
    close() {
      parts.close();
      blobs.close();
    },
  };
}

function directApp(blobs: BlobStore, parts: MultipartStore, extra: { singlePutMaxBytes?: number } = {}) {
  const accepted: StoredInput[] = [];
  const accept: Accept = (stored) => {
    accepted.push(stored);
    return Promise.resolve({ id: stored.id, status: "queued" } as PublicJob);
  };
  const app = new Hono();
  app.route(
    "/",
    createDirectUploadApp({
      blobs,
      parts,
      accept,
      maxUploadBytes: 1024 * MiB,
      partBytes: 5 * MiB,
      ...extra,
    }),
  );
  return { app, accepted };
}

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

async function put(url: string, bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const res = await fetch(url, { method: "PUT", body: bytes });
  await res.body?.cancel();
  assert.equal(res.status, 200);
  return res.headers.get("etag") ?? "";
}

async function read(blobs: BlobStore, key: string) {
  const object = await blobs.get(key);
  return object ? new Uint8Array(await new Response(object.body).arrayBuffer()) : null;
}

Deno.test("direct upload (S3): one presigned PUT, then complete makes the job without a sha256", async () => {
  const store = await s3();
  try {
    const { app, accepted } = directApp(store.blobs, store.parts);
    const file = patterned(300_000);
    const res = await app.request(
      "/v1/uploads/presign",
      json({
        filename: "clip.mp4",
        size: file.byteLength,
        webhook_url: "https://h.example.com/x",
        options: { bitrate: 192 },
      }, {
        "x-vmp3-owner": "key-1",
      }),
    );
    assert.equal(res.status, 201);
    const answer = await res.json();
    assert.deepEqual(Object.keys(answer).sort(), ["expiresAt", "id", "method", "url"]);
    assert.equal(answer.method, "PUT");
    assert.ok(Date.parse(answer.expiresAt) > Date.now() + 3000_000);
    await put(answer.url, file);
    // Another owner cannot complete it.
    const stranger = await app.request(`/v1/uploads/${answer.id}/complete`, { method: "POST" });
    assert.equal(stranger.status, 404);
    const done = await app.request(`/v1/uploads/${answer.id}/complete`, {
      method: "POST",
      headers: { "x-vmp3-owner": "key-1" },
    });
    assert.equal(done.status, 202);
    assert.equal(done.headers.get("location"), `/v1/jobs/${answer.id}`);
    assert.deepEqual(accepted, [{
      id: answer.id,
      filename: "clip.mp4",
      size: file.byteLength,
      options: { bitrate: 192 },
      extra: { owner: "key-1", webhookUrl: "https://h.example.com/x" },
    }]);
    assert.deepEqual(await read(store.blobs, `inputs/${answer.id}`), file);
    assert.deepEqual(await store.blobs.list("uploads/"), [], "nothing pending is left");
    const again = await app.request(`/v1/uploads/${answer.id}/complete`, {
      method: "POST",
      headers: { "x-vmp3-owner": "key-1" },
    });
    assert.equal(again.status, 404);
  } finally {
    store.close();
  }
});

Deno.test("direct upload (S3): multipart part URLs, PUT with fetch, then complete with the parts' ETags", async () => {
  const store = await s3();
  try {
    const { app, accepted } = directApp(store.blobs, store.parts, { singlePutMaxBytes: 6 * MiB });
    const file = patterned(11 * MiB + 17, 4);
    const res = await app.request(
      "/v1/uploads/presign",
      json({ filename: "big.mkv", size: file.byteLength }),
    );
    const answer = await res.json();
    assert.equal(res.status, 201);
    assert.equal(answer.partSize, 5 * MiB);
    assert.deepEqual(answer.parts.map((p: { number: number }) => p.number), [1, 2, 3]);
    const etags: { number: number; etag: string }[] = [];
    for (const { number, url } of answer.parts) {
      const bytes = file.subarray((number - 1) * answer.partSize, number * answer.partSize);
      etags.push({ number, etag: await put(url, bytes) });
    }
    // s3rver offers no ListParts: without the parts, the answer says how to send them.
    const bare = await app.request(`/v1/uploads/${answer.id}/complete`, { method: "POST" });
    const bareBody = await bare.json();
    assert.deepEqual([bare.status, bareBody.error.code], [501, "not_implemented"]);
    assert.match(bareBody.error.message, /send them in the body/);
    const done = await app.request(`/v1/uploads/${answer.id}/complete`, json({ parts: etags }));
    assert.equal(done.status, 202);
    assert.deepEqual(accepted.map((a) => [a.id, a.size, a.sha256]), [[
      answer.id,
      file.byteLength,
      undefined,
    ]]);
    assert.deepEqual(await read(store.blobs, `inputs/${answer.id}`), file);
  } finally {
    store.close();
  }
});

Deno.test("direct upload (S3): a stored size other than the announced one is 409, and the upload is removed", async () => {
  const store = await s3();
  try {
    const { app, accepted } = directApp(store.blobs, store.parts);
    const res = await app.request("/v1/uploads/presign", json({ filename: "a.mp4", size: 1000 }));
    const answer = await res.json();
    await put(answer.url, patterned(5000)); // more than announced
    const done = await app.request(`/v1/uploads/${answer.id}/complete`, { method: "POST" });
    const body = await done.json();
    assert.deepEqual([done.status, body.error.code], [409, "conflict"]);
    assert.match(body.error.message, /5000 bytes arrived/);
    assert.equal(accepted.length, 0);
    assert.equal(await store.blobs.head(`inputs/${answer.id}`), null);
    assert.equal((await app.request(`/v1/uploads/${answer.id}/complete`, { method: "POST" })).status, 404);
  } finally {
    store.close();
  }
});

Deno.test("direct upload (S3): presign checks the request, options and size, and signs for the public endpoint", async () => {
  const store = await s3({ publicEndpoint: "https://files.example.com" });
  try {
    const { app } = directApp(store.blobs, store.parts);
    const error = async (body: unknown) => {
      const res = await app.request("/v1/uploads/presign", json(body));
      return [res.status, (await res.json()).error.code];
    };
    assert.deepEqual(await error({ filename: "a.mp4" }), [400, "invalid_request"]);
    assert.deepEqual(await error({ filename: "a.mp4", size: 0 }), [400, "invalid_request"]);
    assert.deepEqual(await error({ filename: "a.mp4", size: 10, options: { bitrate: 7 } }), [
      400,
      "invalid_option",
    ]);
    assert.deepEqual(await error({ filename: "a.mp4", size: 10, options: { nope: 1 } }), [
      400,
      "invalid_option",
    ]);
    assert.deepEqual(await error({ filename: "a.mp4", size: 1025 * MiB }), [413, "payload_too_large"]);
    const res = await app.request("/v1/uploads/presign", json({ filename: "a.mp4", size: 10 }));
    assert.equal(new URL((await res.json()).url).origin, "https://files.example.com");
  } finally {
    store.close();
  }
});

Deno.test("direct upload (S3): one PUT up to 64 MiB, parts above it", async () => {
  const store = await s3();
  try {
    const { app } = createDirectApp64(store);
    const at = await (await app.request("/v1/uploads/presign", json({ filename: "a", size: 64 * MiB })))
      .json();
    assert.equal(at.method, "PUT");
    const above =
      await (await app.request("/v1/uploads/presign", json({ filename: "a", size: 64 * MiB + 1 })))
        .json();
    assert.equal(above.partSize, 16 * MiB);
    assert.equal(above.parts.length, 5);
    assert.equal(above.url, undefined);
  } finally {
    store.close();
  }
});

function createDirectApp64(store: { blobs: BlobStore; parts: MultipartStore }) {
  const app = new Hono();
  app.route(
    "/",
    createDirectUploadApp({
      blobs: store.blobs,
      parts: store.parts,
      accept: () => Promise.reject(new Error("not used")),
      maxUploadBytes: 1024 * MiB,
    }),
  );
  return { app };
}

Deno.test("partSizeFor keeps to 10 000 parts in whole MiB", () => {
  assert.equal(partSizeFor(100 * MiB, 16 * MiB), 16 * MiB);
  assert.equal(partSizeFor(500_000 * MiB, 16 * MiB), 50 * MiB);
  assert.equal(partSizeFor(10_000 * 16 * MiB + 1, 16 * MiB), 17 * MiB);
});

Deno.test("direct upload (folder): presign answers 501 with a clear message", async () => {
  const root = await Deno.makeTempDir();
  try {
    const { app } = directApp(createFsBlobStore(root), createFsMultipartStore(root));
    const res = await app.request("/v1/uploads/presign", json({ filename: "a.mp4", size: 100 }));
    const body = await res.json();
    assert.deepEqual([res.status, body.error.code], [501, "not_implemented"]);
    assert.match(body.error.message, /need S3 storage/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("direct upload: complete lists the parts itself where the store can, and checks their total", async () => {
  // The folder store lists parts; presigned URLs are stood in for by storing each part as the client would.
  const root = await Deno.makeTempDir();
  try {
    const fsParts = createFsMultipartStore(root, { minPartBytes: 1000 });
    const parts: MultipartStore = {
      ...fsParts,
      presignPut: (key) => Promise.resolve(`client://${key}`),
      presignPart: (key, uploadId, number) => Promise.resolve(`client://${key}/${uploadId}/${number}`),
    };
    const blobs = createFsBlobStore(root);
    const { app, accepted } = directApp(blobs, parts, { singlePutMaxBytes: 1000 });
    const send = async (size: number) => {
      const answer = await (await app.request("/v1/uploads/presign", json({ filename: "a.mp4", size })))
        .json();
      return answer as { id: string; partSize: number; parts: { number: number; url: string }[] };
    };
    const uploadIdOf = (url: string) => /\/([0-9a-f-]{36})\/\d+$/.exec(url)![1];
    // Parts of at least 5 MiB (partBytes): a 3000-byte upload is one part.
    const ok = await send(3000);
    assert.equal(ok.parts.length, 1);
    await fsParts.uploadPart(`inputs/${ok.id}`, uploadIdOf(ok.parts[0].url), 1, patterned(3000));
    const done = await app.request(`/v1/uploads/${ok.id}/complete`, { method: "POST" });
    assert.equal(done.status, 202);
    assert.deepEqual(await read(blobs, `inputs/${ok.id}`), patterned(3000));

    const short = await send(3000);
    await fsParts.uploadPart(`inputs/${short.id}`, uploadIdOf(short.parts[0].url), 1, patterned(2000));
    const refused = await app.request(`/v1/uploads/${short.id}/complete`, { method: "POST" });
    const body = await refused.json();
    assert.deepEqual([refused.status, body.error.code], [409, "conflict"]);
    assert.match(body.error.message, /hold 2000 bytes/);
    assert.equal(accepted.length, 1);
    assert.deepEqual(await blobs.list("uploads/"), []);
    assert.deepEqual(
      await Array.fromAsync(Deno.readDir(`${root}/multipart`)),
      [],
      "the multipart upload was aborted",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
