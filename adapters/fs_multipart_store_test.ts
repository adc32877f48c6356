import assert from "node:assert/strict";
import { createFsBlobStore } from "./fs_blob_store.ts";
import { createFsMultipartStore } from "./fs_multipart_store.ts";
import { patterned, testMultipartStore } from "./testing/multipart_store_contract.ts";

async function open(minPartBytes = 1024) {
  const root = await Deno.makeTempDir();
  return {
    root,
    store: createFsMultipartStore(root, { minPartBytes }),
    blobs: createFsBlobStore(root),
    close: () => Deno.remove(root, { recursive: true }),
  };
}

testMultipartStore("folder", () => open());

Deno.test("folder multipart store lists the parts stored so far with their sizes and etags", async () => {
  const { store, close } = await open();
  try {
    const key = "inputs/a";
    const uploadId = await store.create(key);
    assert.deepEqual(await store.listParts(key, uploadId), []);
    const e2 = await store.uploadPart(key, uploadId, 2, patterned(300));
    const e1 = await store.uploadPart(key, uploadId, 1, patterned(2000));
    assert.deepEqual(await store.listParts(key, uploadId), [
      { number: 1, etag: e1, size: 2000 },
      { number: 2, etag: e2, size: 300 },
    ]);
    assert.notEqual(e1, e2);
  } finally {
    await close();
  }
});

Deno.test("folder multipart store refuses a small part that is not the last, and a wrong etag", async () => {
  const { store, blobs, close } = await open();
  try {
    const key = "inputs/b";
    const uploadId = await store.create(key);
    const e1 = await store.uploadPart(key, uploadId, 1, patterned(100));
    const e2 = await store.uploadPart(key, uploadId, 2, patterned(100));
    await assert.rejects(
      store.complete(key, uploadId, [{ number: 1, etag: e1 }, { number: 2, etag: e2 }]),
      /smaller than 1024 bytes/,
    );
    await assert.rejects(store.complete(key, uploadId, [{ number: 1, etag: "nope" }]), /missing or changed/);
    assert.equal(await blobs.head(key), null);
  } finally {
    await close();
  }
});

Deno.test("folder multipart store abort drops the parts; the upload is gone", async () => {
  const { root, store, blobs, close } = await open();
  try {
    const key = "inputs/c";
    const uploadId = await store.create(key);
    await store.uploadPart(key, uploadId, 1, patterned(100));
    await store.abort(key, uploadId);
    await assert.rejects(Deno.stat(`${root}/multipart/${uploadId}`), Deno.errors.NotFound);
    await assert.rejects(store.listParts(key, uploadId), /no multipart upload/);
    await store.abort(key, uploadId); // again: harmless
    assert.equal(await blobs.head(key), null);
  } finally {
    await close();
  }
});

Deno.test("folder multipart store keeps no parts after completing, and refuses keys that leave the folder", async () => {
  const { root, store, close } = await open();
  try {
    const uploadId = await store.create("inputs/d");
    const etag = await store.uploadPart("inputs/d", uploadId, 1, patterned(10));
    await store.complete("inputs/d", uploadId, [{ number: 1, etag }]);
    await assert.rejects(Deno.stat(`${root}/multipart/${uploadId}`), Deno.errors.NotFound);
    await assert.rejects(store.create("../etc/passwd"), /Invalid storage key/);
    await assert.rejects(store.uploadPart("inputs/d", "../../x", 1, patterned(1)), /Invalid upload id/);
    assert.equal(await store.presignPut("inputs/e", 60), null);
  } finally {
    await close();
  }
});
