/**
 * Tests of the S3 multipart store against a real s3rver. Run through `bash scripts/test_servers.sh deno test -A ...`.
 */
import assert from "node:assert/strict";
import { AppError } from "@vmp3/shared";
import { createS3BlobStore, type S3Settings } from "./s3_blob_store.ts";
import { createS3MultipartStore } from "./s3_multipart_store.ts";
import { patterned, testMultipartStore } from "./testing/multipart_store_contract.ts";

function settings(overrides: Partial<S3Settings> = {}): S3Settings {
  const endpoint = Deno.env.get("TEST_S3_ENDPOINT");
  if (!endpoint) {
    throw new Error(
      "TEST_S3_ENDPOINT is not set: run through `bash scripts/test_servers.sh deno test -A ...`",
    );
  }
  return {
    endpoint,
    bucket: `test-${crypto.randomUUID().slice(0, 8)}`,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
    ...overrides,
  };
}

async function open(overrides: Partial<S3Settings> = {}) {
  const s = settings(overrides);
  const blobs = createS3BlobStore(s);
  await blobs.ensureBucket();
  const store = createS3MultipartStore(s);
  return {
    store,
    blobs,
    settings: s,
    close: () => {
      store.close();
      blobs.close();
    },
  };
}

testMultipartStore("S3", () => open());

Deno.test("S3 multipart store: presigned PUT and part URLs take plain fetch uploads", async () => {
  const { store, blobs, close } = await open();
  try {
    const key = `inputs/${crypto.randomUUID()}`;
    const put = await store.presignPut(key, 60);
    assert.ok(put);
    const small = patterned(1234);
    const res = await fetch(put, { method: "PUT", body: small });
    await res.body?.cancel();
    assert.equal(res.status, 200);
    assert.deepEqual(await blobs.head(key), { size: 1234 });

    const big = `inputs/${crypto.randomUUID()}`;
    const uploadId = await store.create(big);
    const data = patterned(store.minPartBytes + 10, 3);
    const etags: string[] = [];
    for (
      const [number, bytes] of [[1, data.subarray(0, store.minPartBytes)], [
        2,
        data.subarray(store.minPartBytes),
      ]] as const
    ) {
      const url = await store.presignPart(big, uploadId, number, 60);
      assert.ok(url);
      const r = await fetch(url, { method: "PUT", body: bytes });
      await r.body?.cancel();
      assert.equal(r.status, 200);
      etags.push(r.headers.get("etag") ?? "");
    }
    await store.complete(big, uploadId, etags.map((etag, i) => ({ number: i + 1, etag })));
    const object = await blobs.get(big);
    assert.ok(object);
    assert.deepEqual(new Uint8Array(await new Response(object.body).arrayBuffer()), data);
  } finally {
    close();
  }
});

Deno.test("S3 multipart store: presigned URLs point at the public endpoint when one is set", async () => {
  const { store, close } = await open({ publicEndpoint: "https://files.example.com" });
  try {
    const put = new URL((await store.presignPut("inputs/x", 60))!);
    assert.equal(put.origin, "https://files.example.com");
    assert.ok(put.searchParams.get("X-Amz-Signature"));
    const part = new URL((await store.presignPart("inputs/x", "abc", 3, 60))!);
    assert.equal(part.origin, "https://files.example.com");
    assert.equal(part.searchParams.get("partNumber"), "3");
    assert.equal(part.searchParams.get("uploadId"), "abc");
  } finally {
    close();
  }
});

Deno.test("S3 multipart store: what the store does not offer (s3rver: ListParts, abort) fails not_implemented", async () => {
  const { store, close } = await open();
  try {
    const key = `inputs/${crypto.randomUUID()}`;
    const uploadId = await store.create(key);
    await store.uploadPart(key, uploadId, 1, patterned(10));
    for (const call of [() => store.listParts(key, uploadId), () => store.abort(key, uploadId)]) {
      await assert.rejects(call(), (e) => e instanceof AppError && e.code === "not_implemented");
    }
  } finally {
    close();
  }
});

Deno.test("S3 multipart store: an unreachable store fails service_unavailable", async () => {
  const store = createS3MultipartStore(settings({ endpoint: "http://127.0.0.1:9" }));
  try {
    await assert.rejects(
      store.create("inputs/x"),
      (e) => e instanceof AppError && e.code === "service_unavailable",
    );
  } finally {
    store.close();
  }
});
