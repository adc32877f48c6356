/**
 * @module
 * The behaviour every MultipartStore must have, as tests any adapter's test file registers with its own factory.
 * ListParts and aborts are left to each adapter's own tests: s3rver, the S3 store of the tests, offers neither.
 */
import assert from "node:assert/strict";
import type { BlobStore, MultipartStore } from "@vmp3/shared";

/** What a test runs on: the store, and a BlobStore on the same storage to read finished objects. */
export interface MultipartFixture {
  store: MultipartStore;
  blobs: BlobStore;
  close: () => Promise<void> | void;
}

/** `size` bytes that differ from one offset to the next (so a misplaced part shows). */
export function patterned(size: number, seed = 1): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

async function readAll(blobs: BlobStore, key: string): Promise<Uint8Array | null> {
  const object = await blobs.get(key);
  if (!object) return null;
  return new Uint8Array(await new Response(object.body).arrayBuffer());
}

/** Registers the MultipartStore tests for `name`, each run on a fresh fixture from `open`. */
export function testMultipartStore(name: string, open: () => Promise<MultipartFixture>): void {
  const test = (title: string, fn: (f: MultipartFixture) => Promise<void>) =>
    Deno.test(`${name} multipart store: ${title}`, async () => {
      const fixture = await open();
      try {
        await fn(fixture);
      } finally {
        await fixture.close();
      }
    });

  test("joins parts in order into the object, which appears only once completed", async ({ store, blobs }) => {
    const min = store.minPartBytes;
    const data = patterned(2 * min + 1000);
    const key = `inputs/${crypto.randomUUID()}`;
    const uploadId = await store.create(key);
    // Sent out of order: their numbers, not their arrival, place them.
    const e3 = await store.uploadPart(key, uploadId, 3, data.subarray(2 * min));
    const e1 = await store.uploadPart(key, uploadId, 1, data.subarray(0, min));
    const e2 = await store.uploadPart(key, uploadId, 2, data.subarray(min, 2 * min));
    assert.equal(await blobs.head(key), null);
    await store.complete(key, uploadId, [{ number: 1, etag: e1 }, { number: 2, etag: e2 }, {
      number: 3,
      etag: e3,
    }]);
    assert.deepEqual(await blobs.head(key), { size: data.byteLength });
    assert.deepEqual(await readAll(blobs, key), data);
  });

  test("a part sent again with its number replaces the first one", async ({ store, blobs }) => {
    const key = `inputs/${crypto.randomUUID()}`;
    const uploadId = await store.create(key);
    await store.uploadPart(key, uploadId, 1, patterned(1000, 7));
    const etag = await store.uploadPart(key, uploadId, 1, patterned(1500, 8));
    await store.complete(key, uploadId, [{ number: 1, etag }]);
    assert.deepEqual(await readAll(blobs, key), patterned(1500, 8));
  });

  test("a single small part makes a whole object (the last part may be any size)", async ({ store, blobs }) => {
    const key = `inputs/${crypto.randomUUID()}`;
    const uploadId = await store.create(key);
    const etag = await store.uploadPart(key, uploadId, 1, patterned(10));
    await store.complete(key, uploadId, [{ number: 1, etag }]);
    assert.deepEqual(await readAll(blobs, key), patterned(10));
  });
}
