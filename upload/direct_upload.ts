/**
 * Direct-to-S3 uploads: `POST /v1/uploads/presign` hands out presigned URLs (one PUT up to 64 MiB, else the part
 * URLs of a multipart upload), the client sends the bytes straight to S3, and `POST /v1/uploads/{id}/complete`
 * checks what arrived and makes the job. The bytes never pass through this service, so they are not hashed: such
 * a job has no sha256 and no content-cache lookup. The pending upload's state is stored like a tus upload's
 * (pending_uploads.ts), so any Upload process completes it, and the sweep removes it once expired.
 */
import { Hono } from "hono";
import { z } from "zod";
import {
  AppError,
  type BlobStore,
  JobId,
  jobKeys,
  type MultipartStore,
  onError,
  OWNER_HEADER,
} from "@vmp3/shared";
import type { Accept } from "./accept.ts";
import { createPendingUploads, discardUpload, type PendingUpload } from "./pending_uploads.ts";
import { uploadFields } from "./upload_fields.ts";

const MiB = 1024 * 1024;
/** The largest upload sent with one presigned PUT; larger ones are multipart. */
export const SINGLE_PUT_MAX_BYTES = 64 * MiB;
/** S3's most parts in one upload. */
const MAX_PARTS = 10_000;

/** What the direct upload routes need. */
export interface DirectUploadDeps {
  blobs: BlobStore;
  parts: MultipartStore;
  accept: Accept;
  maxUploadBytes: number;
  /** Lifetime of the presigned URLs, in seconds (default 3600). */
  urlSeconds?: number;
  /** How long a pending upload is kept, in ms (default 24 h, and never less than its URLs live). */
  expiryMs?: number;
  /** Uploads up to this size get one PUT URL (default {@linkcode SINGLE_PUT_MAX_BYTES}). */
  singlePutMaxBytes?: number;
  /** The least part size of multipart uploads (default 16 MiB; more when 10 000 parts would not hold the file). */
  partBytes?: number;
  now?: () => Date;
}

const PresignRequest = z.object({
  filename: z.string().max(4096),
  size: z.number().int().positive(),
  webhook_url: z.string().optional(),
  options: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
});

const CompleteRequest = z.object({
  /** The parts as S3 answered them (ETag of each PUT), for stores that cannot list parts (s3rver). */
  parts: z.array(z.object({ number: z.number().int().min(1).max(MAX_PARTS), etag: z.string().min(1) })).min(1)
    .optional(),
});

/** The part size for an upload of `size` bytes: at least `least`, whole MiB, and at most 10 000 parts. */
export function partSizeFor(size: number, least: number): number {
  const needed = Math.ceil(size / MAX_PARTS);
  return Math.ceil(Math.max(least, needed) / MiB) * MiB;
}

/** Creates the Hono app of the direct upload routes (full paths, `/v1/uploads/...`). */
export function createDirectUploadApp(deps: DirectUploadDeps): Hono {
  const { blobs, parts, accept, maxUploadBytes, now = () => new Date() } = deps;
  const urlSeconds = deps.urlSeconds ?? 3600;
  const expiryMs = Math.max(deps.expiryMs ?? 24 * 3600 * 1000, urlSeconds * 1000);
  const singlePutMax = deps.singlePutMaxBytes ?? SINGLE_PUT_MAX_BYTES;
  const leastPart = Math.max(deps.partBytes ?? 16 * MiB, parts.minPartBytes);
  const pending = createPendingUploads(blobs);
  const completing = new Set<string>();
  const log = (message: string) => console.error(`direct upload: ${message}`);

  const app = new Hono();
  app.onError(onError);

  app.post("/v1/uploads/presign", async (c) => {
    const parsed = PresignRequest.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new AppError(
        "invalid_request",
        `Send JSON {filename, size, webhook_url?, options?}: "${
          issue.path.join(".") || "body"
        }" ${issue.message}`,
      );
    }
    const { filename, size, webhook_url, options = {} } = parsed.data;
    if (size > maxUploadBytes) {
      throw new AppError(
        "payload_too_large",
        `The upload is larger than the limit of ${maxUploadBytes} bytes`,
      );
    }
    const fields = uploadFields({
      filename,
      webhookUrl: webhook_url,
      options: Object.fromEntries(Object.entries(options).map(([k, v]) => [k, String(v)])),
    });
    const id = crypto.randomUUID();
    const { inputKey } = jobKeys(id);
    const created = now();
    const expiresAt = new Date(created.getTime() + urlSeconds * 1000).toISOString();
    const single = size <= singlePutMax;
    const putUrl = await parts.presignPut(inputKey, urlSeconds); // null: the store cannot presign at all
    if (putUrl === null) {
      throw new AppError(
        "not_implemented",
        "Direct uploads need S3 storage, and this deployment keeps files in a local folder: upload with tus " +
          "at /v1/uploads/ or POST /v1/jobs instead",
      );
    }
    const upload: PendingUpload = {
      version: 1,
      id,
      kind: "direct",
      // An empty header is a caller without a key (the API runs open): nobody's upload.
      owner: c.req.header(OWNER_HEADER) || undefined,
      filename: fields.filename,
      webhookUrl: fields.webhookUrl,
      options: fields.options,
      size,
      createdAt: created.toISOString(),
      expiresAt: new Date(created.getTime() + expiryMs).toISOString(),
      parts: [],
    };
    if (single) {
      await pending.save(upload);
      return c.json({ id, expiresAt, method: "PUT", url: putUrl }, 201);
    }
    const partSize = partSizeFor(size, leastPart);
    const uploadId = await parts.create(inputKey);
    const count = Math.ceil(size / partSize);
    const urls: { number: number; url: string }[] = [];
    for (let number = 1; number <= count; number++) {
      urls.push({ number, url: (await parts.presignPart(inputKey, uploadId, number, urlSeconds))! });
    }
    await pending.save({ ...upload, uploadId, partSize });
    return c.json({ id, expiresAt, partSize, parts: urls }, 201);
  });

  app.post("/v1/uploads/:id/complete", async (c) => {
    const id = c.req.param("id");
    const text = await c.req.text();
    const body = CompleteRequest.safeParse(
      text.trim() === "" ? {} : (() => {
        try {
          return JSON.parse(text);
        } catch {
          return null;
        }
      })(),
    );
    if (!body.success) {
      throw new AppError("invalid_request", "The body, when given, is JSON {parts: [{number, etag}, ...]}");
    }
    const notFound = new AppError("not_found", `There is no direct upload ${JSON.stringify(id)}`);
    if (!JobId.safeParse(id).success) throw notFound;
    const upload = await pending.get(id);
    const owner = c.req.header(OWNER_HEADER) || undefined;
    if (!upload || upload.kind !== "direct" || upload.owner !== owner) throw notFound;
    if (Date.parse(upload.expiresAt) <= now().getTime()) {
      throw new AppError("expired", `Upload ${id} expired at ${upload.expiresAt}; start a new one`);
    }
    if (completing.has(id)) throw new AppError("conflict", `Upload ${id} is being completed already`);
    completing.add(id);
    try {
      const { inputKey } = jobKeys(id);
      const mismatch = async (what: string) => {
        await discardUpload(upload, { blobs, parts, log });
        return new AppError(
          "conflict",
          `Upload ${id} was announced as ${upload.size} bytes, but ${what}; it was removed: start again`,
        );
      };
      if (upload.uploadId) {
        let sent = body.data.parts;
        if (!sent) {
          const listed = await parts.listParts(inputKey, upload.uploadId).catch((error) => {
            if (error instanceof AppError && error.code === "not_implemented") {
              throw new AppError(
                "not_implemented",
                "This object store cannot list the parts of an upload: send them in the body, as " +
                  '{"parts":[{"number":1,"etag":"…"},…]} with the ETag S3 answered to each PUT',
              );
            }
            throw error;
          });
          const total = listed.reduce((sum, p) => sum + p.size, 0);
          const contiguous = listed.every((p, i) => p.number === i + 1);
          if (listed.length === 0 || !contiguous || total !== upload.size) {
            throw await mismatch(`its parts hold ${total} bytes${contiguous ? "" : " with gaps"}`);
          }
          sent = listed;
        }
        try {
          await parts.complete(inputKey, upload.uploadId, sent);
        } catch (error) {
          if (error instanceof AppError) throw error;
          // The store refused the parts (an unknown etag, a small part before the last).
          throw await mismatch(`the store refused its parts (${(error as Error)?.message ?? error})`);
        }
        upload.completed = true;
      }
      const stored = await blobs.head(inputKey);
      if (stored?.size !== upload.size) {
        throw await mismatch(stored ? `${stored.size} bytes arrived` : "nothing arrived");
      }
      try {
        const job = await accept({
          id,
          filename: upload.filename,
          size: upload.size,
          options: upload.options,
          extra: { owner: upload.owner, webhookUrl: upload.webhookUrl },
        });
        c.header("Location", `/v1/jobs/${id}`);
        return c.json(job, 202);
      } finally {
        // Made a job, or failed and accept removed the video: either way nothing is pending any more.
        await pending.remove(id).catch((e) => log(`could not remove the state of ${id}: ${e}`));
      }
    } finally {
      completing.delete(id);
    }
  });

  return app;
}
