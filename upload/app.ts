/**
 * The Upload service's HTTP API: stream a video into storage, record the job, publish its conversion task, and
 * hand out finished MP3s.
 */
import { Hono } from "hono";
import {
  AppError,
  contentDisposition,
  JobId,
  jobKeys,
  mp3Filename,
  type MultipartStore,
  onError,
  onNotFound,
  parseOptions,
  sha256Tap,
} from "@vmp3/shared";
import { receiveUpload, type StallLimit } from "./receive.ts";
import { type AcceptDeps, createAccept } from "./accept.ts";
import { createJobControlRoutes, type JobControlDeps } from "./job_control.ts";
import { createBatchRoutes } from "./batch.ts";
import { pickOptions, webhookUrlOf } from "./upload_fields.ts";
import { claimKey, idempotencyKeyOf, replay } from "./idempotency.ts";
import { OWNER_HEADER } from "@vmp3/metadata";
import { createTusApp } from "./tus.ts";
import { createDirectUploadApp } from "./direct_upload.ts";
import { createUrlImportApp } from "./url_import.ts";
import type { PublicHttp } from "@vmp3/adapters/public-http";

/** What the Upload app needs. */
export interface UploadAppDeps extends AcceptDeps, JobControlDeps {
  /**
   * Resumable (tus) and direct-to-S3 uploads at `/v1/uploads/` (upload/tus.ts, upload/direct_upload.ts): their
   * multipart storage and settings. Absent: those routes are not served.
   */
  resumable?: ResumableUploadDeps;
  maxUploadBytes: number;
  /** How a stalled or trickling client is cut off (default: 16 KiB in every 30 s, see upload/receive.ts). */
  stall?: Partial<StallLimit>;
  /** Lifetime of presigned download URLs, in seconds. */
  presignSeconds?: number;
  /** The client that imports videos from URLs (`POST /imports`); absent, imports answer 501. */
  publicHttp?: PublicHttp;
}

/** The storage and settings of resumable and direct uploads. */
export interface ResumableUploadDeps {
  parts: MultipartStore;
  /** Size of the parts a tus upload is stored in (memory of each PATCH in progress). */
  partBytes?: number;
  /** How long an unfinished upload is kept from its creation, in ms. */
  expiryMs?: number;
  /** Lifetime of the presigned URLs of direct uploads, in seconds. */
  directUrlSeconds?: number;
}

/** What a form's other parts (its boundaries, headers and text fields) may add to its file's size, at most. */
const FORM_OVERHEAD_BYTES = 64 * 1024;

/**
 * The least size the uploaded file can have, from the declared size of the body (Content-Length, or the
 * x-content-length the Gateway passes on): all of it for a raw body, less room for a form's other parts. 0 when
 * nothing is declared.
 */
function declaredFileBytes(request: Request): number {
  const declared = Number(
    request.headers.get("content-length") ?? request.headers.get("x-content-length") ?? NaN,
  );
  if (!Number.isSafeInteger(declared) || declared <= 0) return 0;
  const form = (request.headers.get("content-type") ?? "").toLowerCase().startsWith("multipart/");
  return form ? Math.max(0, declared - FORM_OVERHEAD_BYTES) : declared;
}

/** Creates the Upload HTTP app. */
export function createUploadApp(deps: UploadAppDeps): Hono {
  const { blobs, maxUploadBytes, presignSeconds = 300 } = deps;
  const metadata = deps.metadata;
  const accept = createAccept(deps);
  const app = new Hono();
  app.onError(onError);
  app.notFound(onNotFound);

  app.get("/healthz", (c) => c.json({ ok: true }));

  // Import from URL: the video is fetched from a public address instead of sent (upload/url_import.ts).
  app.route("/imports", createUrlImportApp(deps));

  // Resumable (tus) and direct-to-S3 uploads, served at the Gateway's own paths (it forwards /v1/uploads/ as is).
  if (deps.resumable) {
    const { parts, partBytes, expiryMs, directUrlSeconds } = deps.resumable;
    app.route("/", createDirectUploadApp({ ...deps, parts, expiryMs, urlSeconds: directUrlSeconds, accept }));
    app.route("/", createTusApp({ ...deps, parts, partBytes, expiryMs, accept }));
  }

  app.route("/", createJobControlRoutes(deps));
  // Several files in one form: one job each, in a batch (upload/batch.ts).
  app.route("/", createBatchRoutes({ ...deps, accept }));

  app.post("/uploads", async (c) => {
    const queryOptions = pickOptions(c.req.query());
    parseOptions(queryOptions); // fail fast, before a byte is stored
    const owner = c.req.header(OWNER_HEADER) || undefined;
    const webhookUrl = webhookUrlOf(c.req.query("webhook_url"));
    const idempotencyKey = idempotencyKeyOf(c.req.header("idempotency-key"));
    const claim = idempotencyKey
      ? await claimKey(metadata, owner, idempotencyKey).catch(async (error) => {
        await c.req.raw.body?.cancel().catch(() => {});
        throw error;
      })
      : undefined;
    if (claim && !claim.first) {
      try {
        // A repeat: what was sent is hashed, never stored, and compared with the job the key names.
        const { result: sha256, fields } = await receiveUpload(c.req.raw, async (file) => {
          const tap = sha256Tap();
          await file.stream.pipeThrough(tap.stream).pipeTo(new WritableStream());
          return tap.digest();
        }, { maxBytes: maxUploadBytes, stall: deps.stall });
        const options = parseOptions({ ...pickOptions(fields), ...queryOptions });
        const job = await replay(metadata, claim, {
          content: sha256,
          options,
          webhookUrl: webhookUrl ?? webhookUrlOf(fields.webhook_url),
        });
        return c.json(job, 202, { "idempotent-replayed": "true" });
      } finally {
        await claim.end();
      }
    }
    const id = claim?.id ?? crypto.randomUUID();
    try {
      if (owner !== undefined) {
        // The key's quotas, before a byte is read: an over-quota client is told at once. The exact check follows
        // once the upload is stored (accept.ts).
        await metadata.checkQuota(owner, declaredFileBytes(c.req.raw)).catch(async (error) => {
          await c.req.raw.body?.cancel().catch(() => {});
          throw error;
        });
      }
      return c.json(await receiveAndAccept(c.req.raw, id, queryOptions, { owner, webhookUrl }), 202);
    } catch (error) {
      await claim?.release();
      throw error;
    } finally {
      await claim?.end();
    }
  });

  /** Stores the video of a form (or raw) upload as job `id`'s input, and accepts it. */
  async function receiveAndAccept(
    request: Request,
    id: string,
    queryOptions: Record<string, string>,
    extra: { owner?: string; webhookUrl?: string },
  ) {
    const { inputKey } = jobKeys(id);

    const { result: stored, fields } = await receiveUpload(request, async (file) => {
      try {
        // Hashed as it streams into storage, for the content cache: the upload is never read twice.
        const tap = sha256Tap();
        // A raw body's declared length lets the store send it in one request (adapters/s3_blob_store.ts).
        const { size } = await blobs.put(inputKey, file.stream.pipeThrough(tap.stream), {
          contentType: file.contentType,
          size: file.size,
        });
        return { size, filename: file.filename, sha256: tap.digest() };
      } catch (cause) {
        if (cause instanceof AppError) throw cause;
        throw new AppError("service_unavailable", "The upload could not be stored; nothing was accepted", {
          cause,
        });
      }
    }, { maxBytes: maxUploadBytes, stall: deps.stall }).catch(async (error) => {
      // The file may have been stored before the request failed (say, a bad form field after it).
      await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
      throw error;
    });

    let options;
    let webhookUrl = extra.webhookUrl;
    try {
      options = parseOptions({ ...pickOptions(fields), ...queryOptions });
      webhookUrl ??= webhookUrlOf(fields.webhook_url);
    } catch (error) {
      await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
      throw error;
    }
    // accept removes the stored video itself should anything fail.
    return await accept({
      id,
      filename: stored.filename,
      size: stored.size,
      sha256: stored.sha256,
      options,
      extra: { owner: extra.owner, webhookUrl },
    });
  }

  // The finished MP3 of a job: a redirect to a short-lived URL where the store can make one, else the bytes.
  app.get("/files/:id/output", async (c) => {
    const id = c.req.param("id");
    if (!JobId.safeParse(id).success) {
      throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    }
    // Where Metadata says: a job done from the cache shares the MP3 of the job that made it.
    const outputKey = await metadata.outputKey(id);
    if (!outputKey) throw new AppError("not_found", `Job ${id} has no MP3`);
    const filename = mp3Filename(c.req.query("filename") ?? "audio");
    if (c.req.query("mode") !== "stream") {
      if (!(await blobs.head(outputKey))) throw new AppError("not_found", `Job ${id} has no MP3`);
      const url = await blobs.presignGet(outputKey, { filename, expiresIn: presignSeconds });
      if (url) return c.redirect(url, 302);
    }
    const object = await blobs.get(outputKey);
    if (!object) throw new AppError("not_found", `Job ${id} has no MP3`);
    return c.body(object.body, 200, {
      "content-type": "audio/mpeg",
      "content-length": String(object.size),
      "content-disposition": contentDisposition(filename),
    });
  });

  return app;
}
