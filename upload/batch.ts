/**
 * Batches: several videos in one multipart request (each a field `file`) make several jobs, one per file, with the
 * same options and a shared batch id; the batch is a small record beside the files (`batches/{id}.json`), so that
 * `GET /batches/{id}` lists its jobs and the Gateway can stream a zip of their MP3s.
 */
import { Hono } from "hono";
import { z } from "zod";
import { AppError, type BlobStore, isErrorCode, jobKeys, OWNER_HEADER, sha256Tap } from "@vmp3/shared";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";
import type { Accept } from "./accept.ts";
import { receiveUploads, type StallLimit } from "./receive.ts";
import { pickOptions, uploadFields } from "./upload_fields.ts";

/** The most files one batch takes. */
export const MAX_BATCH_FILES = 20;

/** A batch as stored: whose it is and its jobs, in the form's order. */
export const BatchRecord = z.object({
  id: z.uuid(),
  owner: z.string().optional(),
  jobIds: z.array(z.uuid()),
  createdAt: z.iso.datetime(),
});
/** A batch as stored. */
export type BatchRecord = z.infer<typeof BatchRecord>;

/** What the batch routes need. */
export interface BatchDeps {
  blobs: BlobStore;
  metadata: MetadataClient;
  accept: Accept;
  maxUploadBytes: number;
  stall?: Partial<StallLimit>;
  now?: () => Date;
}

/** Where a batch's record is stored. */
export function batchKey(id: string): string {
  return `batches/${id}.json`;
}

async function readRecord(blobs: BlobStore, id: string): Promise<BatchRecord | null> {
  if (!z.uuid().safeParse(id).success) return null;
  const object = await blobs.get(batchKey(id));
  if (!object) return null;
  return BatchRecord.parse(JSON.parse(await new Response(object.body).text()));
}

/** Creates the batch routes. */
export function createBatchRoutes(deps: BatchDeps): Hono {
  const { blobs, metadata, accept, maxUploadBytes, now = () => new Date() } = deps;
  const app = new Hono();

  app.post("/batches", async (c) => {
    const owner = c.req.header(OWNER_HEADER) || undefined;
    const query = c.req.query();
    uploadFields({ options: pickOptions(query), webhookUrl: query.webhook_url }); // fail fast, before any byte
    const stored: { id: string; filename: string; size: number; sha256: string }[] = [];
    const removeAll = () =>
      Promise.all(stored.map(({ id }) => blobs.delete(jobKeys(id).inputKey).catch(() => {})));
    let fields: Record<string, string>;
    try {
      ({ fields } = await receiveUploads(c.req.raw, async (file) => {
        const id = crypto.randomUUID();
        const tap = sha256Tap();
        const entry = { id, filename: file.filename, size: 0, sha256: "" };
        stored.push(entry); // before the bytes: a failure midway removes it too
        try {
          ({ size: entry.size } = await blobs.put(jobKeys(id).inputKey, file.stream.pipeThrough(tap.stream), {
            contentType: file.contentType,
          }));
        } catch (cause) {
          if (cause instanceof AppError) throw cause;
          throw new AppError("service_unavailable", "The upload could not be stored; nothing was accepted", {
            cause,
          });
        }
        entry.sha256 = tap.digest();
      }, { maxBytes: maxUploadBytes, stall: deps.stall, maxFiles: MAX_BATCH_FILES }));
    } catch (error) {
      await removeAll();
      throw error;
    }
    let checked;
    try {
      const merged = { ...fields, ...query };
      checked = uploadFields({ options: pickOptions(merged), webhookUrl: merged.webhook_url });
    } catch (error) {
      await removeAll();
      throw error;
    }
    const batchId = crypto.randomUUID();
    const jobs: PublicJob[] = [];
    const errors: { filename: string; error: { code: string; message: string } }[] = [];
    // One at a time: each is admitted against the key's quotas as the ones before it count.
    for (const file of stored) {
      try {
        jobs.push(
          await accept({
            ...file,
            options: checked.options,
            extra: { owner, webhookUrl: checked.webhookUrl, batchId },
          }),
        );
      } catch (error) {
        const { code, message } = error instanceof AppError
          ? error
          : { code: "internal", message: "The file could not be accepted" };
        errors.push({ filename: file.filename, error: { code, message } });
      }
    }
    if (jobs.length === 0) {
      const first = errors[0]?.error;
      throw new AppError(
        first && isErrorCode(first.code) ? first.code : "internal",
        first?.message ?? "No file was accepted",
      );
    }
    const record: BatchRecord = {
      id: batchId,
      ...(owner ? { owner } : {}),
      jobIds: jobs.map((job) => job.id),
      createdAt: now().toISOString(),
    };
    await blobs.put(batchKey(batchId), new Blob([JSON.stringify(record)]).stream(), {
      contentType: "application/json",
    });
    return c.json({ id: batchId, jobs, errors }, 202);
  });

  app.get("/batches/:id", async (c) => {
    const id = c.req.param("id");
    const owner = c.req.header(OWNER_HEADER) || undefined;
    const record = await readRecord(blobs, id);
    if (!record || record.owner !== owner) {
      throw new AppError("not_found", `There is no batch ${JSON.stringify(id)}`);
    }
    const jobs = await Promise.all(record.jobIds.map((jobId) => metadata.getJob(jobId, { owner })));
    return c.json({ id, createdAt: record.createdAt, jobs: jobs.filter((job) => job !== null) });
  });

  return app;
}
