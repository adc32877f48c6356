import assert from "node:assert/strict";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createFsMultipartStore } from "@vmp3/adapters/fs-multipart";
import { createPendingUploads, discardUpload, type PendingUpload, storedBytes } from "./pending_uploads.ts";

function upload(id: string): PendingUpload {
  return {
    version: 1,
    id,
    kind: "tus",
    filename: "a.mp4",
    options: { bitrate: 128 },
    size: 100,
    createdAt: "2030-01-01T00:00:00.000Z",
    expiresAt: "2030-01-02T00:00:00.000Z",
    parts: [{ number: 1, etag: "e", size: 60 }],
    tail: { key: `uploads/${id}/tail-1`, size: 15 },
  };
}

Deno.test("pending uploads are saved, read back, listed and removed with their temporary objects", async () => {
  const root = await Deno.makeTempDir();
  try {
    const blobs = createFsBlobStore(root);
    const pending = createPendingUploads(blobs);
    const id = crypto.randomUUID();
    assert.equal(await pending.get(id), null);
    await pending.save(upload(id));
    await blobs.put(`uploads/${id}/tail-1`, new Blob([new Uint8Array(15)]).stream());
    assert.deepEqual(await pending.get(id), upload(id));
    assert.equal(storedBytes(upload(id)), 75);
    assert.deepEqual(await pending.ids(), [id]);
    await pending.remove(id);
    assert.deepEqual(await blobs.list(""), []);
    assert.deepEqual(await pending.ids(), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("discardUpload aborts the multipart upload and removes a finished object no job took", async () => {
  const root = await Deno.makeTempDir();
  try {
    const blobs = createFsBlobStore(root);
    const parts = createFsMultipartStore(root);
    const id = crypto.randomUUID();
    const uploadId = await parts.create(`inputs/${id}`);
    await parts.uploadPart(`inputs/${id}`, uploadId, 1, new Uint8Array(10));
    await createPendingUploads(blobs).save({ ...upload(id), uploadId, tail: undefined });
    const messages: string[] = [];
    const log = (m: string) => {
      messages.push(m);
    };
    await discardUpload({ ...upload(id), uploadId }, { blobs, parts, log });
    await assert.rejects(parts.listParts(`inputs/${id}`, uploadId), /no multipart upload/);
    assert.deepEqual(await blobs.list(""), []);
    assert.deepEqual(messages, []);

    // A direct upload sent by one PUT: its object is removed.
    await blobs.put(`inputs/${id}`, new Blob([new Uint8Array(5)]).stream());
    await discardUpload({ ...upload(id), kind: "direct", parts: [], tail: undefined }, { blobs, parts, log });
    assert.equal(await blobs.head(`inputs/${id}`), null);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
