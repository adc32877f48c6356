/**
 * The durable state of uploads not finished yet (tus and direct-to-S3): one JSON object per upload in the blob
 * store, `uploads/{id}/state.json`, beside its temporary tail objects (`uploads/{id}/tail-*`). Any Upload process,
 * or this one after a restart, picks an upload up from there.
 */
import { z } from "zod";
import { type BlobStore, ConversionOptions, jobKeys, type MultipartStore } from "@vmp3/shared";

/** An unfinished upload. */
export const PendingUpload = z.object({
  version: z.literal(1),
  id: z.uuid(),
  /** tus: bytes come through this service; direct: the client sends them to S3 with presigned URLs. */
  kind: z.enum(["tus", "direct"]),
  /** The API key id of the uploader (absent: no key); another owner never sees the upload. */
  owner: z.string().optional(),
  filename: z.string(),
  webhookUrl: z.string().optional(),
  options: ConversionOptions,
  /** The announced size in bytes (tus: Upload-Length). */
  size: z.number().int().positive(),
  createdAt: z.iso.datetime(),
  /** After this the upload answers 410 and the sweep removes it. */
  expiresAt: z.iso.datetime(),
  /** The multipart upload assembling `inputs/{id}` (absent: a direct upload by a single PUT). */
  uploadId: z.string().optional(),
  /** tus: the parts stored so far, in order. */
  parts: z.array(z.object({ number: z.number().int(), etag: z.string(), size: z.number().int() })).default(
    [],
  ),
  /** tus: the bytes after the last part (fewer than a part), kept as a temporary object. */
  tail: z.object({ key: z.string(), size: z.number().int().positive() }).optional(),
  /** tus: the raw Upload-Metadata header, echoed by HEAD. */
  metadata: z.string().optional(),
  /** direct multipart: the size of each part but the last. */
  partSize: z.number().int().positive().optional(),
  /** tus: every byte is in and the object is complete; only accepting the job is left. */
  completed: z.boolean().optional(),
  /** tus: the job made from the upload; the state stays as a receipt (HEAD tells the job) until it expires. */
  jobId: z.uuid().optional(),
});
/** An unfinished upload. */
export type PendingUpload = z.infer<typeof PendingUpload>;

/** How many bytes of a tus upload are stored: its parts and its tail. */
export function storedBytes(upload: PendingUpload): number {
  return upload.parts.reduce((sum, p) => sum + p.size, 0) + (upload.tail?.size ?? 0);
}

/** The folder of an upload's state and temporary objects. */
export function uploadFolder(id: string): string {
  return `uploads/${id}/`;
}

/** Reads and writes {@linkcode PendingUpload}s in a blob store. */
export interface PendingUploads {
  /** The upload, or null when there is none. */
  get(id: string): Promise<PendingUpload | null>;
  /** Writes the upload's state (whole: it replaces the one before). */
  save(upload: PendingUpload): Promise<void>;
  /** Removes the upload's state and its temporary objects (not the multipart upload: abort that first). */
  remove(id: string): Promise<void>;
  /** The ids of every upload with a state. */
  ids(): Promise<string[]>;
}

/** Creates {@linkcode PendingUploads} on `blobs`. */
export function createPendingUploads(blobs: BlobStore): PendingUploads {
  const stateKey = (id: string) => `${uploadFolder(id)}state.json`;
  return {
    async get(id) {
      const object = await blobs.get(stateKey(id));
      if (!object) return null;
      const text = await new Response(object.body).text();
      return PendingUpload.parse(JSON.parse(text));
    },
    async save(upload) {
      const bytes = new TextEncoder().encode(JSON.stringify(PendingUpload.parse(upload)));
      await blobs.put(stateKey(upload.id), new Blob([bytes]).stream(), { contentType: "application/json" });
    },
    async remove(id) {
      // The state last: an upload with a state is one the sweep will find again, should this stop half way.
      const keys = await blobs.list(uploadFolder(id));
      for (const key of keys.filter((k) => k !== stateKey(id))) await blobs.delete(key);
      await blobs.delete(stateKey(id));
    },
    async ids() {
      const keys = await blobs.list("uploads/");
      return keys.flatMap((key) => {
        const match = /^uploads\/([0-9a-f-]{36})\/state\.json$/.exec(key);
        return match ? [match[1]] : [];
      });
    },
  };
}

/**
 * Removes an unfinished upload: its multipart upload (a store that cannot abort, such as s3rver, leaves the parts
 * to its lifecycle rules), its object unless a job was made of it, its temporary objects and its state.
 */
export async function discardUpload(
  upload: PendingUpload,
  deps: { blobs: BlobStore; parts: MultipartStore; log: (message: string) => void },
): Promise<void> {
  const { inputKey } = jobKeys(upload.id);
  if (upload.uploadId && !upload.completed && !upload.jobId) {
    await deps.parts.abort(inputKey, upload.uploadId).catch((error) =>
      deps.log(`the multipart upload of ${upload.id} was not aborted: ${(error as Error)?.message ?? error}`)
    );
  }
  if (!upload.jobId) await deps.blobs.delete(inputKey);
  await createPendingUploads(deps.blobs).remove(upload.id);
}
