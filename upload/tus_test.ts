/**
 * tus uploads, with the official tus-js-client against the app served on a port, on both storages: S3 (the
 * s3rver of `bash scripts/test_servers.sh`) and a folder (embedded mode).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import * as tus from "tus-js-client";
import { Hono } from "hono";
import type { BlobStore, MultipartStore } from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createFsMultipartStore } from "@vmp3/adapters/fs-multipart";
import { createS3BlobStore } from "@vmp3/adapters/s3";
import { createS3MultipartStore } from "@vmp3/adapters/s3-multipart";
import type { PublicJob } from "@vmp3/metadata";
import type { Accept, StoredInput } from "./accept.ts";
import { createTusApp, parseUploadMetadata } from "./tus.ts";
import { createPendingUploadSweeper } from "./pending_upload_sweeper.ts";

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

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

interface Storage {
  root?: string;
  blobs: BlobStore;
  parts: MultipartStore;
  close(): Promise<void>;
}

async function folderStorage(): Promise<Storage> {
  const root = await Deno.makeTempDir();
  return {
    root,
    blobs: createFsBlobStore(root),
    parts: createFsMultipartStore(root),
    close: () => Deno.remove(root, { recursive: true }),
  };
}

async function s3Storage(): Promise<Storage> {
  const endpoint = Deno.env.get("TEST_S3_ENDPOINT");
  if (!endpoint) throw new Error("TEST_S3_ENDPOINT is not set: run through bash scripts/test_servers.sh");
  const settings = {
    endpoint,
    bucket: `tus-${crypto.randomUUID().slice(0, 8)}`,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required" as const,
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
      return Promise.resolve();
    },
  };
}

/** An Upload-like app with the tus routes, recording what it accepts. */
function tusApp(
  storage: Storage,
  options: { now?: () => Date; fail?: boolean; maxUploadBytes?: number } = {},
) {
  const accepted: StoredInput[] = [];
  const accept: Accept = (stored) => {
    if (options.fail) return Promise.reject(new Error("the queue is down"));
    accepted.push(stored);
    return Promise.resolve({ id: stored.id, status: "queued" } as PublicJob);
  };
  const app = new Hono();
  app.route(
    "/",
    createTusApp({
      blobs: storage.blobs,
      parts: storage.parts,
      accept,
      maxUploadBytes: options.maxUploadBytes ?? 100 * MiB,
      partBytes: 5 * MiB,
      expiryMs: 3600_000,
      now: options.now,
    }),
  );
  return { app, accepted };
}

async function stored(blobs: BlobStore, key: string): Promise<Uint8Array | null> {
  const object = await blobs.get(key);
  return object ? new Uint8Array(await new Response(object.body).arrayBuffer()) : null;
}

/**
 * A TCP proxy in front of `port` that, once armed, cuts both connections after forwarding `cutAfter` more bytes
 * from the client (a connection dropped mid-upload), then forwards faithfully again.
 */
function cuttingProxy(port: number, cutAfter: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let budget = cutAfter;
  let cuts = 0;
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.add(client);
      conns.add(server);
      const close = () => {
        for (const c of [client, server]) {
          try {
            c.close();
          } catch { /* closed already */ }
          conns.delete(c);
        }
      };
      (async () => {
        const buffer = new Uint8Array(64 * 1024);
        try {
          for (;;) {
            const n = await client.read(buffer);
            if (n === null) break;
            if (budget !== Infinity && n >= budget) {
              await server.write(buffer.subarray(0, budget));
              budget = Infinity;
              cuts++;
              break;
            }
            if (budget !== Infinity) budget -= n;
            for (let w = 0; w < n;) w += await server.write(buffer.subarray(w, n));
          }
        } catch { /* the other side closed */ }
        close();
      })();
      (async () => {
        try {
          await server.readable.pipeTo(client.writable, { preventClose: true });
        } catch { /* closed */ }
        close();
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cuts: () => cuts,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Uploads `bytes` with tus-js-client; resolves with the upload URL once it succeeds. */
function tusUpload(
  endpoint: string,
  bytes: Uint8Array,
  options: { metadata?: Record<string, string>; chunkSize?: number; retryDelays?: number[] } = {},
): Promise<{ url: string; errors: number }> {
  return new Promise((resolve, reject) => {
    let errors = 0;
    const upload = new tus.Upload(Buffer.from(bytes), {
      endpoint,
      metadata: options.metadata ?? { filename: "clip.mp4" },
      ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }),
      retryDelays: options.retryDelays ?? [0, 100, 300],
      onShouldRetry: () => {
        errors++;
        return true;
      },
      onError: reject,
      onSuccess: () => resolve({ url: upload.url!, errors }),
    });
    upload.start();
  });
}

function serve(app: Hono) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (r) => app.fetch(r));
}

for (const [name, open] of [["S3", s3Storage], ["folder", folderStorage]] as const) {
  Deno.test(`tus (${name}): tus-js-client resumes after the connection is cut mid-upload; bytes and sha256 kept`, async () => {
    const storage = await open();
    const { app, accepted } = tusApp(storage);
    const server = serve(app);
    // Cut 7 MiB into the upload: after its first 5 MiB part is stored, in the middle of the second.
    const proxy = cuttingProxy(server.addr.port, 7 * MiB);
    try {
      const file = patterned(12 * MiB + 123);
      const { url, errors } = await tusUpload(`http://127.0.0.1:${proxy.port}/v1/uploads/`, file, {
        metadata: { filename: "été.mp4", bitrate: "128", filetype: "video/mp4" },
      });
      assert.equal(proxy.cuts(), 1);
      assert.ok(errors >= 1, "the client saw the cut and retried");
      const id = new URL(url).pathname.split("/").pop()!;
      assert.equal(new URL(url).pathname, `/v1/uploads/${id}`);
      assert.equal(accepted.length, 1);
      assert.deepEqual(accepted[0], {
        id,
        filename: "été.mp4",
        size: file.byteLength,
        sha256: sha256(file),
        options: { bitrate: 128 },
        extra: { owner: undefined, webhookUrl: undefined },
      });
      assert.deepEqual(await stored(storage.blobs, `inputs/${id}`), file);
      // The receipt: HEAD still tells the job after the end.
      const head = await app.request(`/v1/uploads/${id}`, {
        method: "HEAD",
        headers: { "Tus-Resumable": "1.0.0" },
      });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get("upload-offset"), String(file.byteLength));
      assert.equal(head.headers.get("vmp3-job-id"), id);
    } finally {
      proxy.close();
      await server.shutdown();
      await storage.close();
    }
  });

  Deno.test(`tus (${name}): size edges: under one part, exactly 5 MiB, several parts in small PATCHes`, async () => {
    const storage = await open();
    const { app, accepted } = tusApp(storage);
    const server = serve(app);
    try {
      const cases = [
        { size: 1000 },
        { size: 5 * MiB },
        { size: 11 * MiB + 7, chunkSize: 3 * MiB }, // tails of 3 and 1 MiB are put in front of the next PATCH
        { size: 10 * MiB, chunkSize: 5 * MiB },
      ];
      for (const [i, { size, chunkSize }] of cases.entries()) {
        const file = patterned(size, i + 2);
        const { url } = await tusUpload(`http://127.0.0.1:${server.addr.port}/v1/uploads/`, file, {
          chunkSize,
        });
        const id = new URL(url).pathname.split("/").pop()!;
        assert.deepEqual(await stored(storage.blobs, `inputs/${id}`), file, `size ${size}`);
        const job = accepted.find((a) => a.id === id);
        assert.equal(job?.sha256, sha256(file), `size ${size}`);
        assert.equal(job?.size, size);
        // Nothing temporary is left but the receipt.
        assert.deepEqual(await storage.blobs.list(`uploads/${id}/`), [`uploads/${id}/state.json`]);
      }
      assert.equal(accepted.length, cases.length);
    } finally {
      await server.shutdown();
      await storage.close();
    }
  });

  Deno.test(`tus (${name}): another process finishes an upload; the stored object is hashed by reading it back`, async () => {
    const storage = await open();
    const first = tusApp(storage);
    const second = tusApp(storage); // another Upload process: no in-memory hash, no lock
    try {
      const file = patterned(6 * MiB + 5, 9);
      const headers = { "Tus-Resumable": "1.0.0" };
      const created = await first.app.request("/v1/uploads/", {
        method: "POST",
        headers: {
          ...headers,
          "Upload-Length": String(file.byteLength),
          "Upload-Metadata": `filename ${btoa("a.mov")}`,
        },
      });
      assert.equal(created.status, 201);
      const location = created.headers.get("location")!;
      const patch = (app: Hono, offset: number, body: Uint8Array<ArrayBuffer>) =>
        app.request(location, {
          method: "PATCH",
          headers: {
            ...headers,
            "Upload-Offset": String(offset),
            "Content-Type": "application/offset+octet-stream",
          },
          body,
        });
      const a = await patch(first.app, 0, file.subarray(0, 2 * MiB));
      assert.equal(a.status, 204);
      assert.equal(a.headers.get("upload-offset"), String(2 * MiB));
      const b = await patch(second.app, 2 * MiB, file.subarray(2 * MiB));
      assert.equal(b.status, 204);
      const id = location.split("/").pop()!;
      assert.equal(b.headers.get("vmp3-job-id"), id);
      assert.equal(b.headers.get("upload-offset"), String(file.byteLength));
      assert.equal(first.accepted.length, 0);
      assert.equal(second.accepted[0].sha256, sha256(file));
      assert.deepEqual(await stored(storage.blobs, `inputs/${id}`), file);
    } finally {
      await storage.close();
    }
  });
}

const TUS = { "Tus-Resumable": "1.0.0" };

async function create(app: Hono, headers: Record<string, string>, body?: Uint8Array<ArrayBuffer>) {
  return await app.request("/v1/uploads", { method: "POST", headers: { ...TUS, ...headers }, body });
}

async function errorOf(res: Response): Promise<[number, string]> {
  const body = await res.json();
  return [res.status, body.error.code];
}

Deno.test("tus: OPTIONS tells the version, extensions and the largest size", async () => {
  const storage = await folderStorage();
  try {
    const { app } = tusApp(storage, { maxUploadBytes: 12345 });
    const res = await app.request("/v1/uploads/", { method: "OPTIONS" });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("tus-version"), "1.0.0");
    assert.equal(res.headers.get("tus-resumable"), "1.0.0");
    assert.equal(res.headers.get("tus-max-size"), "12345");
    assert.deepEqual(res.headers.get("tus-extension")?.split(","), [
      "creation",
      "creation-with-upload",
      "termination",
      "expiration",
    ]);
  } finally {
    await storage.close();
  }
});

Deno.test("tus: creation refuses a bad Tus-Resumable, no or zero length, too large, a bad option", async () => {
  const storage = await folderStorage();
  try {
    const { app } = tusApp(storage, { maxUploadBytes: 1000 });
    const noVersion = await app.request("/v1/uploads", {
      method: "POST",
      headers: { "Upload-Length": "10" },
    });
    assert.equal(noVersion.headers.get("tus-version"), "1.0.0");
    assert.deepEqual(await errorOf(noVersion), [412, "precondition_failed"]);
    const old = await app.request("/v1/uploads", {
      method: "POST",
      headers: { "Tus-Resumable": "0.2.2", "Upload-Length": "10" },
    });
    assert.deepEqual(await errorOf(old), [412, "precondition_failed"]);
    assert.deepEqual(await errorOf(await create(app, {})), [400, "invalid_request"]);
    assert.deepEqual(await errorOf(await create(app, { "Upload-Length": "0" })), [422, "unsupported_input"]);
    assert.deepEqual(await errorOf(await create(app, { "Upload-Length": "1001" })), [
      413,
      "payload_too_large",
    ]);
    const badOption = await create(app, {
      "Upload-Length": "10",
      "Upload-Metadata": `bitrate ${btoa("129")}`,
    });
    const body = await badOption.json();
    assert.deepEqual([badOption.status, body.error.code], [400, "invalid_option"]);
    assert.match(body.error.message, /bitrate/);
    assert.equal(badOption.headers.get("tus-resumable"), "1.0.0");
    const badHook = await create(app, {
      "Upload-Length": "10",
      "Upload-Metadata": `webhook_url ${btoa("ftp://x")}`,
    });
    assert.deepEqual(await errorOf(badHook), [400, "invalid_option"]);
    assert.deepEqual(await errorOf(await create(app, { "Upload-Length": "10", "Upload-Metadata": "a !!" })), [
      400,
      "invalid_request",
    ]);
    assert.deepEqual(await storage.blobs.list(""), [], "nothing was stored for a refused creation");
  } finally {
    await storage.close();
  }
});

Deno.test("tus: HEAD and PATCH: offsets, conflicts, media type, bytes beyond the length, and owners", async () => {
  const storage = await folderStorage();
  try {
    const { app, accepted } = tusApp(storage);
    const metadata = `filename ${btoa("x.mp4")},webhook_url ${btoa("https://hooks.example.com/a")},quality ${
      btoa("2")
    },filetype ${btoa("video/mp4")},flag`;
    const res = await create(app, {
      "Upload-Length": "100",
      "Upload-Metadata": metadata,
      "x-vmp3-owner": "key-1",
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("upload-offset"), null);
    assert.ok(Date.parse(res.headers.get("upload-expires")!) > Date.now());
    const location = res.headers.get("location")!;
    assert.match(location, /^\/v1\/uploads\/[0-9a-f-]{36}$/);
    const owner = { ...TUS, "x-vmp3-owner": "key-1" };
    const patch = (offset: number, body: Uint8Array<ArrayBuffer>, extra: Record<string, string> = {}) =>
      app.request(location, {
        method: "PATCH",
        headers: {
          ...owner,
          "Upload-Offset": String(offset),
          "Content-Type": "application/offset+octet-stream",
          ...extra,
        },
        body,
      });

    const head = await app.request(location, { method: "HEAD", headers: owner });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("upload-offset"), "0");
    assert.equal(head.headers.get("upload-length"), "100");
    assert.equal(head.headers.get("upload-metadata"), metadata);
    assert.equal(head.headers.get("cache-control"), "no-store");
    // Another key's upload, or none at all: 404.
    assert.equal((await app.request(location, { method: "HEAD", headers: TUS })).status, 404);
    const stranger = await app.request(location, {
      method: "HEAD",
      headers: { ...TUS, "x-vmp3-owner": "key-2" },
    });
    assert.equal(stranger.status, 404);
    assert.equal((await app.request("/v1/uploads/nope", { method: "HEAD", headers: owner })).status, 404);

    assert.equal((await patch(0, patterned(40))).status, 204);
    assert.deepEqual(await errorOf(await patch(0, patterned(10))), [409, "conflict"]);
    assert.deepEqual(await errorOf(await patch(40, patterned(10), { "Content-Type": "text/plain" })), [
      415,
      "unsupported_media_type",
    ]);
    assert.deepEqual(await errorOf(await patch(40, patterned(61))), [413, "payload_too_large"]);
    const again = await app.request(location, { method: "HEAD", headers: owner });
    assert.equal(again.headers.get("upload-offset"), "40");
    const last = await patch(40, patterned(60, 5));
    assert.equal(last.status, 204);
    const id = location.split("/").pop()!;
    assert.equal(last.headers.get("vmp3-job-id"), id);
    assert.deepEqual(accepted.map((a) => [a.filename, a.options, a.extra]), [
      ["x.mp4", { quality: 2 }, { owner: "key-1", webhookUrl: "https://hooks.example.com/a" }],
    ]);
    const file = new Uint8Array([...patterned(40), ...patterned(60, 5)]);
    assert.deepEqual(await stored(storage.blobs, `inputs/${id}`), file);
    assert.equal(accepted[0].sha256, sha256(file));
    // Sending the end again answers the same job, and makes no second one.
    const repeat = await patch(100, new Uint8Array(0));
    assert.equal(repeat.headers.get("vmp3-job-id"), id);
    assert.equal(accepted.length, 1);
    assert.deepEqual(await errorOf(await app.request(location, { method: "DELETE", headers: owner })), [
      409,
      "conflict",
    ]);
  } finally {
    await storage.close();
  }
});

Deno.test("tus: creation-with-upload takes the whole file in the POST and answers the job id", async () => {
  const storage = await folderStorage();
  try {
    const { app, accepted } = tusApp(storage);
    const file = patterned(3000);
    const res = await create(app, {
      "Upload-Length": "3000",
      "Content-Type": "application/offset+octet-stream",
    }, file);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("upload-offset"), "3000");
    const id = res.headers.get("location")!.split("/").pop()!;
    assert.equal(res.headers.get("vmp3-job-id"), id);
    assert.deepEqual(accepted.map((a) => [a.id, a.filename, a.sha256]), [[id, "upload", sha256(file)]]);
  } finally {
    await storage.close();
  }
});

Deno.test("tus: DELETE ends an upload: its parts are dropped and it answers 404 after", async () => {
  const storage = await folderStorage();
  try {
    const { app } = tusApp(storage);
    const res = await create(app, { "Upload-Length": String(7 * MiB) });
    const location = res.headers.get("location")!;
    const patch = await app.request(location, {
      method: "PATCH",
      headers: { ...TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" },
      body: patterned(6 * MiB),
    });
    assert.equal(patch.status, 204);
    const deleted = await app.request(location, { method: "DELETE", headers: TUS });
    assert.equal(deleted.status, 204);
    assert.equal(deleted.headers.get("tus-resumable"), "1.0.0");
    assert.equal((await app.request(location, { method: "HEAD", headers: TUS })).status, 404);
    assert.deepEqual(await storage.blobs.list(""), []);
  } finally {
    await storage.close();
  }
});

Deno.test("tus: an expired upload answers 410 until the sweep removes it (multipart aborted), then 404", async () => {
  const storage = await folderStorage();
  try {
    let clock = new Date("2030-01-01T00:00:00Z");
    const now = () => clock;
    const { app } = tusApp(storage, { now });
    const res = await create(app, { "Upload-Length": "100" });
    assert.equal(new Date(res.headers.get("upload-expires")!).toISOString(), "2030-01-01T01:00:00.000Z");
    const location = res.headers.get("location")!;
    await app.request(location, {
      method: "PATCH",
      headers: { ...TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" },
      body: patterned(30),
    });
    clock = new Date("2030-01-01T00:30:00Z");
    const other = await create(app, { "Upload-Length": "100" }); // younger: kept
    const otherId = other.headers.get("location")!.split("/").pop()!;
    const sweeper = createPendingUploadSweeper({ blobs: storage.blobs, parts: storage.parts, now });
    assert.deepEqual(await sweeper.runOnce(), []);
    clock = new Date("2030-01-01T01:00:01Z");
    assert.equal((await app.request(location, { method: "HEAD", headers: TUS })).status, 410);
    const late = await app.request(location, {
      method: "PATCH",
      headers: { ...TUS, "Upload-Offset": "30", "Content-Type": "application/offset+octet-stream" },
      body: patterned(10),
    });
    assert.deepEqual(await errorOf(late), [410, "expired"]);
    const id = location.split("/").pop()!;
    const multipart = (await Array.fromAsync(Deno.readDir(`${storage.root}/multipart`))).length;
    assert.equal(multipart, 2);
    assert.deepEqual(await sweeper.runOnce(), [id]);
    assert.equal((await app.request(location, { method: "HEAD", headers: TUS })).status, 404);
    assert.equal((await Array.fromAsync(Deno.readDir(`${storage.root}/multipart`))).length, 1, "aborted");
    assert.deepEqual(await storage.blobs.list("uploads/"), [`uploads/${otherId}/state.json`]);
  } finally {
    await storage.close();
  }
});

Deno.test("tus: when accepting fails, the upload is gone and the PATCH answers the error", async () => {
  const storage = await folderStorage();
  try {
    const { app } = tusApp(storage, { fail: true });
    const res = await create(app, { "Upload-Length": "10" });
    const location = res.headers.get("location")!;
    const patch = await app.request(location, {
      method: "PATCH",
      headers: { ...TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" },
      body: patterned(10),
    });
    assert.equal(patch.status, 500);
    assert.equal((await app.request(location, { method: "HEAD", headers: TUS })).status, 404);
    assert.deepEqual(await storage.blobs.list("uploads/"), []);
  } finally {
    await storage.close();
  }
});

Deno.test("parseUploadMetadata reads base64 values, keys without a value, and refuses repeats", () => {
  assert.deepEqual(
    parseUploadMetadata(`filename ${btoa("a b.mp4")},is_confidential, bitrate ${btoa("128")}`),
    {
      filename: "a b.mp4",
      is_confidential: "",
      bitrate: "128",
    },
  );
  assert.deepEqual(parseUploadMetadata(null), {});
  assert.throws(() => parseUploadMetadata(`a ${btoa("1")},a ${btoa("2")}`), /twice/);
});
