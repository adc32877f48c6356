/**
 * The Upload service's HTTP API: stream a video into storage, record the job, publish its conversion task, and
 * hand out finished MP3s.
 */
import { Hono } from "hono";
import {
  AppError,
  type BlobStore,
  cacheKey,
  contentDisposition,
  type ConversionRequested,
  conversionTask,
  JobId,
  jobKeys,
  mp3Filename,
  onError,
  onNotFound,
  OPTION_NAMES,
  parseOptions,
  type Queue,
  sha256Tap,
} from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";
import { receiveUpload, type StallLimit } from "./receive.ts";

/** What the Upload app needs. */
export interface UploadAppDeps {
  blobs: BlobStore;
  tasks: Queue<ConversionRequested>;
  metadata: MetadataClient;
  maxUploadBytes: number;
  /** Called after the job is recorded and before its task is published (tests use it to crash right there). */
  beforePublish?: (job: { id: string; filename: string }) => void;
  /** How a stalled or trickling client is cut off (default: 16 KiB in every 30 s, see upload/receive.ts). */
  stall?: Partial<StallLimit>;
  /** Lifetime of presigned download URLs, in seconds. */
  presignSeconds?: number;
  now?: () => Date;
}

function pickOptions(source: Record<string, string | undefined>): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of OPTION_NAMES) {
    const value = source[name];
    if (value !== undefined) picked[name] = value;
  }
  return picked;
}

/** Creates the Upload HTTP app. */
export function createUploadApp(deps: UploadAppDeps): Hono {
  const { blobs, tasks, metadata, maxUploadBytes, presignSeconds = 300, now = () => new Date() } = deps;
  const app = new Hono();
  app.onError(onError);
  app.notFound(onNotFound);

  app.get("/healthz", (c) => c.json({ ok: true }));

  app.post("/uploads", async (c) => {
    const queryOptions = pickOptions(c.req.query());
    parseOptions(queryOptions); // fail fast, before a byte is stored
    const id = crypto.randomUUID();
    const { inputKey } = jobKeys(id);

    const { result: stored, fields } = await receiveUpload(c.req.raw, async (file) => {
      try {
        // Hashed as it streams into storage, for the content cache: the upload is never read twice.
        const tap = sha256Tap();
        const { size } = await blobs.put(inputKey, file.stream.pipeThrough(tap.stream), {
          contentType: file.contentType,
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

    let recorded = false;
    try {
      const options = parseOptions({ ...pickOptions(fields), ...queryOptions });
      if (stored.size === 0) {
        throw new AppError("unsupported_input", `Cannot convert "${stored.filename}": the file is empty`);
      }
      const job = await metadata.createJob({
        id,
        input: { filename: stored.filename, size: stored.size, sha256: stored.sha256 },
        options,
        cacheKey: await cacheKey(stored.sha256, options),
      });
      recorded = true;
      if (job.status === "done") {
        // The same bytes were converted with the same options before: the job is done already, from that MP3.
        await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
        return c.json(job, 202);
      }
      deps.beforePublish?.({ id, filename: stored.filename });
      await tasks.publish(conversionTask(id, stored.filename, options, now()));
      // The task is out: the job leaves the outbox. Should this fail, the reconciler publishes the task again,
      // and the worker's deterministic output key makes the second conversion harmless.
      await metadata.markPublished(id).catch((e) =>
        console.error(`Job ${id}: could not mark it published:`, e)
      );
      return c.json(job, 202);
    } catch (error) {
      await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
      if (recorded) {
        const failure = error instanceof AppError ? error : new AppError(
          "service_unavailable",
          "The conversion queue cannot be reached; the job was not started, please upload again",
          { cause: error },
        );
        await metadata.postEvent({
          type: "job.failed",
          version: 1,
          jobId: id,
          at: now().toISOString(),
          error: { code: failure.code, message: failure.message },
        }).catch((e) => console.error(`Could not mark job ${id} failed:`, e));
        throw failure;
      }
      throw error;
    }
  });

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
