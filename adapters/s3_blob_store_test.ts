/**
 * Tests of the S3 blob store against a real s3rver. Run through `bash scripts/test_servers.sh deno test -A ...`.
 */
import assert from "node:assert/strict";
import { AppError, contentDisposition } from "@vmp3/shared";
import { createS3BlobStore, type S3BlobStore, type S3Settings } from "./s3_blob_store.ts";

function endpoint(): string {
  const value = Deno.env.get("TEST_S3_ENDPOINT");
  if (!value) {
    throw new Error(
      "TEST_S3_ENDPOINT is not set: run through `bash scripts/test_servers.sh deno test -A adapters/`",
    );
  }
  return value;
}

function settings(overrides: Partial<S3Settings> = {}): S3Settings {
  return {
    endpoint: endpoint(),
    bucket: `test-${crypto.randomUUID().slice(0, 8)}`,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
    presignSeconds: 300,
    ...overrides,
  };
}

async function withStore(
  fn: (store: S3BlobStore) => Promise<void>,
  overrides: Partial<S3Settings> = {},
): Promise<void> {
  const store = createS3BlobStore(settings(overrides));
  try {
    await store.ensureBucket();
    await fn(store);
  } finally {
    store.close();
  }
}

/** A stream of MiB chunks that errors with `boom` once `bytes` are sent, as a client going away would. */
function failingAfter(bytes: number): { stream: ReadableStream<Uint8Array>; boom: Error } {
  let sent = 0;
  const boom = new Error("client went away");
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= bytes) {
        controller.error(boom);
        return;
      }
      sent += 1024 * 1024;
      controller.enqueue(new Uint8Array(1024 * 1024).fill(7));
    },
  });
  return { stream, boom };
}

/** Deterministic pseudo-random bytes, `size` in total, in chunks of 64 KiB. */
function generated(size: number, seed = 1): { stream: ReadableStream<Uint8Array>; digest: Promise<string> } {
  const hashed: Uint8Array[] = [];
  let sent = 0;
  let state = seed;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => finish = resolve);
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= size) {
        controller.close();
        finish();
        return;
      }
      const chunk = new Uint8Array(Math.min(64 * 1024, size - sent));
      for (let i = 0; i < chunk.length; i++) {
        state = (state * 1103515245 + 12345) >>> 0;
        chunk[i] = state >>> 24;
      }
      sent += chunk.length;
      hashed.push(chunk);
      controller.enqueue(chunk);
    },
  });
  const digest = done.then(() => sha256(hashed));
  return { stream, digest };
}

async function sha256(chunks: Uint8Array[]): Promise<string> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  const hash = await crypto.subtle.digest("SHA-256", all);
  return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(new Uint8Array(chunk));
  return chunks;
}

function bytesOf(text: string): ReadableStream<Uint8Array> {
  return new Blob([text]).stream();
}

Deno.test("s3: a 20 MiB multipart object round-trips byte for byte", async () => {
  await withStore(async (store) => {
    const size = 20 * 1024 * 1024 + 123;
    const { stream, digest } = generated(size);
    const put = await store.put("inputs/big", stream, { contentType: "video/mp4" });
    assert.equal(put.size, size);
    assert.deepEqual(await store.head("inputs/big"), { size });
    const got = await store.get("inputs/big");
    assert.ok(got);
    assert.equal(got.size, size);
    assert.equal(await sha256(await readAll(got.body)), await digest);
  });
});

Deno.test("s3: a body of unknown length round-trips byte for byte, ending within the first two part buffers (one PutObject) or past them (multipart), also with a budget of one buffer", async () => {
  for (const uploadBuffers of [12, 1]) {
    await withStore(async (store) => {
      for (
        const size of [8 * 1024 * 1024 + 7, 12 * 1024 * 1024 + 7, 16 * 1024 * 1024, 20 * 1024 * 1024 + 7]
      ) {
        const key = `inputs/unknown-${size}`;
        const { stream, digest } = generated(size, size);
        assert.deepEqual(await store.put(key, stream), { size });
        const got = await store.get(key);
        assert.equal(got?.size, size);
        assert.equal(
          await sha256(await readAll(got!.body)),
          await digest,
          `${size} with ${uploadBuffers} buffers`,
        );
      }
    }, { uploadBuffers });
  }
});

Deno.test("s3: uploads at once share a budget of 2 part buffers and all complete, byte for byte", async () => {
  await withStore(async (store) => {
    const size = 18 * 1024 * 1024 + 7; // 3 parts each, so each upload needs more buffers than the budget alone
    const uploads = [1, 2, 3, 4].map((seed) => ({ key: `inputs/many-${seed}`, ...generated(size, seed) }));
    const puts = await Promise.all(uploads.map((u) => store.put(u.key, u.stream)));
    assert.deepEqual(puts, uploads.map(() => ({ size })));
    for (const u of uploads) {
      const got = await store.get(u.key);
      assert.equal(await sha256(await readAll(got!.body)), await u.digest, u.key);
    }
    // A failed upload gives its buffers back too: the next one still finds them.
    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(9 * 1024 * 1024));
        controller.error(new Error("client gone"));
      },
    });
    await assert.rejects(store.put("inputs/failed", failing), /client gone/);
    const after = generated(size, 9);
    assert.deepEqual(await store.put("inputs/after", after.stream), { size });
  }, { uploadBuffers: 2 });
});

Deno.test("s3: a stream that fails midway leaves no object behind", async () => {
  await withStore(async (store) => {
    // Past the two part buffers filled before anything is sent, so that the multipart upload has begun.
    const { stream: failing, boom } = failingAfter(20 * 1024 * 1024);
    // The stream's own error comes out (a caller's size-limit error must stay recognisable).
    await assert.rejects(store.put("inputs/broken", failing), (error) => error === boom);
    assert.equal(await store.head("inputs/broken"), null);
    assert.deepEqual(await store.list(""), []);
    assert.equal(await store.get("inputs/broken"), null);
  });
});

Deno.test("s3: a small stream that fails leaves no object behind", async () => {
  await withStore(async (store) => {
    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(1000));
        controller.error(new Error("early failure"));
      },
    });
    await assert.rejects(store.put("inputs/small-broken", failing), /early failure/);
    assert.equal(await store.head("inputs/small-broken"), null);
    assert.deepEqual(await store.list(""), []);
  });
});

Deno.test("s3: a put with its size streams as one PutObject, byte for byte, needing no part buffer", async () => {
  await withStore(async (store) => {
    // An upload of unknown size holds the store's only part buffer, its stream stalled until released.
    let release!: () => void;
    const released = new Promise<void>((resolve) => release = resolve);
    const stalled = store.put(
      "inputs/stalled",
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          controller.enqueue(new Uint8Array(1024 * 1024).fill(1));
          await released;
          controller.close();
        },
      }),
    );
    const size = 20 * 1024 * 1024 + 123;
    const { stream, digest } = generated(size, 5);
    assert.deepEqual(await store.put("inputs/sized", stream, { contentType: "video/mp4", size }), { size });
    assert.deepEqual(await store.head("inputs/sized"), { size });
    const got = await store.get("inputs/sized");
    assert.equal(await sha256(await readAll(got!.body)), await digest);
    release();
    assert.deepEqual(await stalled, { size: 1024 * 1024 });
  }, { uploadBuffers: 1 });
});

Deno.test("s3: a put with its size whose stream fails midway leaves no object behind", async () => {
  await withStore(async (store) => {
    const { stream: failing, boom } = failingAfter(12 * 1024 * 1024);
    await assert.rejects(store.put("inputs/broken", failing, { size: 20 * 1024 * 1024 }), (e) => e === boom);
    assert.equal(await store.head("inputs/broken"), null);
    assert.deepEqual(await store.list(""), []);
  });
});

Deno.test("s3: a body shorter or longer than its size hint fails with invalid_request and leaves no object", async () => {
  await withStore(async (store) => {
    for (const [key, size] of [["inputs/short", 3 * 1024 * 1024], ["inputs/long", 1024 * 1024]] as const) {
      const { stream } = generated(2 * 1024 * 1024);
      await assert.rejects(
        store.put(key, stream, { size }),
        (error) =>
          error instanceof AppError && error.code === "invalid_request" && /declared/.test(error.message),
      );
      assert.equal(await store.head(key), null, key);
    }
    assert.deepEqual(await store.list(""), []);
  });
});

Deno.test("s3: an empty and a small object round-trip", async () => {
  await withStore(async (store) => {
    assert.deepEqual(await store.put("empty", new ReadableStream({ start: (c) => c.close() })), { size: 0 });
    assert.deepEqual(await store.head("empty"), { size: 0 });
    const empty = await store.get("empty");
    assert.ok(empty);
    assert.equal((await readAll(empty.body)).length, 0);

    assert.deepEqual(await store.put("small", bytesOf("héllo")), { size: 6 });
    const small = await store.get("small");
    assert.ok(small);
    assert.equal(small.size, 6);
    assert.equal(await new Response(small.body).text(), "héllo");
  });
});

Deno.test("s3: get and head of a missing object are null", async () => {
  await withStore(async (store) => {
    assert.equal(await store.get("missing"), null);
    assert.equal(await store.head("missing"), null);
  });
});

Deno.test("s3: delete removes, and deleting again is not an error", async () => {
  await withStore(async (store) => {
    await store.put("outputs/a.mp3", bytesOf("abc"));
    await store.delete("outputs/a.mp3");
    assert.equal(await store.head("outputs/a.mp3"), null);
    await store.delete("outputs/a.mp3");
    await store.delete("never-existed");
  });
});

Deno.test("s3: list returns the keys under a prefix, across pages", async () => {
  await withStore(async (store) => {
    const keys = Array.from({ length: 1005 }, (_, i) => `inputs/${String(i).padStart(4, "0")}`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((key) => store.put(key, bytesOf("x"))));
    }
    await store.put("outputs/one.mp3", bytesOf("y"));
    assert.deepEqual((await store.list("inputs/")).sort(), keys);
    assert.deepEqual(await store.list("outputs/"), ["outputs/one.mp3"]);
    assert.deepEqual(await store.list("nothing/"), []);
  });
});

Deno.test("s3: a presigned URL downloads the exact bytes with the filename", async () => {
  await withStore(async (store) => {
    const { stream, digest } = generated(300_000, 7);
    await store.put("outputs/song.mp3", stream, { contentType: "audio/mpeg" });
    const url = await store.presignGet("outputs/song.mp3", { filename: 'Café "live".mp3', expiresIn: 60 });
    assert.ok(url);
    assert.ok(url.startsWith(endpoint()), url);
    const response = await fetch(url);
    assert.equal(response.status, 200);
    const disposition = response.headers.get("content-disposition");
    assert.equal(disposition, contentDisposition('Café "live".mp3'));
    assert.equal(
      disposition,
      `attachment; filename="Caf_ _live_.mp3"; filename*=UTF-8''Caf%C3%A9%20%22live%22.mp3`,
    );
    assert.equal(await sha256([new Uint8Array(await response.arrayBuffer())]), await digest);
  });
});

Deno.test("s3: presigned URLs use the public endpoint when one is set", async () => {
  await withStore(async (store) => {
    const url = await store.presignGet("k", { filename: "a.mp3", expiresIn: 60 });
    assert.ok(url?.startsWith("https://files.example.test/"), url ?? "null");
  }, { publicEndpoint: "https://files.example.test" });
});

Deno.test("s3: readLocation signs a GET on the store's own endpoint that serves byte ranges, past the clients' lifetime; null when missing", async () => {
  await withStore(async (store) => {
    const { stream, digest } = generated(1_000_000, 3);
    await store.put("inputs/video", stream);
    const found = await store.readLocation!("inputs/video", { expiresIn: 7200 });
    assert.ok(found);
    assert.equal(found.size, 1_000_000);
    assert.ok(found.location.startsWith(endpoint()), "the store's own endpoint, not the public one");
    assert.equal(
      new URL(found.location).searchParams.get("X-Amz-Expires"),
      "7200",
      "not cut to S3_PRESIGN_SECONDS",
    );
    const whole = await fetch(found.location);
    assert.equal(await sha256([new Uint8Array(await whole.arrayBuffer())]), await digest);
    const tail = await fetch(found.location, { headers: { range: "bytes=999990-" } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers.get("content-range"), "bytes 999990-999999/1000000");
    assert.equal((await tail.arrayBuffer()).byteLength, 10);
    assert.equal(await store.readLocation!("inputs/missing", { expiresIn: 60 }), null);
  }, { publicEndpoint: "https://files.example.test", presignSeconds: 300 });
});

Deno.test("s3: with checksum when_required the stored bytes are exactly the uploaded bytes", async () => {
  await withStore(async (store) => {
    // Both paths: a single PutObject (under one part) and a multipart upload.
    for (const size of [100_000, 9 * 1024 * 1024]) {
      const key = `inputs/exact-${size}`;
      const { stream, digest } = generated(size, size);
      assert.deepEqual(await store.put(key, stream), { size });
      // Read the stored object with a plain HTTP GET, outside the SDK's response handling.
      const url = await store.presignGet(key, { filename: "x", expiresIn: 60 });
      const response = await fetch(url!);
      const stored = new Uint8Array(await response.arrayBuffer());
      assert.equal(stored.length, size);
      assert.equal(await sha256([stored]), await digest);
    }
  }, { checksum: "when_required" });
});

Deno.test("s3: a store that cannot be reached fails each call with service_unavailable", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = `http://127.0.0.1:${listener.addr.port}`;
  listener.close();
  const store = createS3BlobStore(settings({ endpoint: closed }));
  try {
    const calls: [string, () => Promise<unknown>][] = [
      ["get", () => store.get("a")],
      ["head", () => store.head("a")],
      ["delete", () => store.delete("a")],
      ["list", () => store.list("")],
      ["put", () => store.put("a", new Blob([new Uint8Array(1000)]).stream())],
      ["put with its size", () => store.put("a", new Blob([new Uint8Array(1000)]).stream(), { size: 1000 })],
      ["ensureBucket", () => store.ensureBucket()],
    ];
    for (const [name, call] of calls) {
      await assert.rejects(call(), (error) => {
        assert.ok(error instanceof AppError, `${name}: ${error}`);
        assert.equal(error.code, "service_unavailable", name);
        return true;
      });
    }
  } finally {
    store.close();
  }
});

Deno.test("s3: a multipart upload cut by an outage fails with service_unavailable, and its abort is tried again once the store is back", async () => {
  const reports: string[] = [];
  await withStore(async (store) => {
    let sent = 0;
    let stopped = false;
    let started = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 24 * 1024 * 1024) return controller.close();
        // Past the first two part buffers (16 MiB), so that the multipart upload has begun.
        if (sent >= 18 * 1024 * 1024 && !stopped) {
          stopped = true;
          await testServer("TEST_S3_STOP");
        }
        sent += 1024 * 1024;
        controller.enqueue(new Uint8Array(1024 * 1024).fill(3));
      },
    });
    try {
      await assert.rejects(store.put("inputs/cut", body), (error) => {
        assert.ok(error instanceof AppError && error.code === "service_unavailable", String(error));
        return true;
      });
      assert.ok(stopped);
      await testServer("TEST_S3_START");
      started = true;
      for (let i = 0; !reports.some((r) => r.includes('"inputs/cut"')); i++) {
        assert.ok(i < 100, `no second abort: ${reports}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // s3rver answers that it cannot abort; a real store drops the parts. Either way, no object.
      assert.match(
        reports.join("\n"),
        /multipart upload \S+ of "inputs\/cut" (was not aborted|aborted once)/,
      );
      assert.equal(await store.head("inputs/cut"), null);
      assert.deepEqual(await store.list(""), []);
    } finally {
      if (stopped && !started) await testServer("TEST_S3_START");
    }
  }, {
    abortRetryDelaysMs: [200, 300, 500, 1000, 1000, 2000, 2000],
    report: (message) => reports.push(message),
  });
});

/** Runs the script that `name` (from scripts/test_servers.sh) names. */
async function testServer(name: string): Promise<void> {
  const script = Deno.env.get(name);
  assert.ok(script, `${name} is not set: run through scripts/test_servers.sh`);
  const out = await new Deno.Command(script, { stdout: "piped", stderr: "piped" }).output();
  assert.ok(out.success, `${name} failed: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test("s3: a PutObject of two part buffers that the store refuses once (503) is sent again with the whole body", async () => {
  // A stand-in for a store that answers 503 SlowDown to the first PUT: the SDK never retries a stream body, so
  // the store must. Each PUT's body is counted to the last byte.
  const bodies: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    if (request.method !== "PUT") return new Response(null, { status: 405 });
    let length = 0;
    for await (const chunk of request.body!) length += chunk.length;
    bodies.push(length);
    if (bodies.length === 1) {
      return new Response("<Error><Code>SlowDown</Code><Message>Slow down</Message></Error>", {
        status: 503,
        headers: { "content-type": "application/xml" },
      });
    }
    return new Response(null, { status: 200, headers: { etag: '"e"' } });
  });
  const store = createS3BlobStore({
    ...settings(),
    endpoint: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
  });
  try {
    const size = 12 * 1024 * 1024 + 5;
    const { stream } = generated(size);
    assert.deepEqual(await store.put("inputs/twice", stream), { size });
    assert.deepEqual(bodies, [size, size]);
  } finally {
    store.close();
    await server.shutdown();
  }
});
