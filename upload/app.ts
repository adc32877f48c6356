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
  onError,
  onNotFound,
  OPTION_NAMES,
  parseOptions,
  sha256Tap,
} from "@vmp3/shared";
import { receiveUpload, type StallLimit } from "./receive.ts";
import { type AcceptDeps, createAccept } from "./accept.ts";

/** What the Upload app needs. */
export interface UploadAppDeps extends AcceptDeps {
  maxUploadBytes: number;
  /** How a stalled or trickling client is cut off (default: 16 KiB in every 30 s, see upload/receive.ts). */
  stall?: Partial<StallLimit>;
  /** Lifetime of presigned download URLs, in seconds. */
  presignSeconds?: number;
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
  const { blobs, maxUploadBytes, presignSeconds = 300 } = deps;
  const metadata = deps.metadata;
  const accept = createAccept(deps);
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

    let options;
    try {
      options = parseOptions({ ...pickOptions(fields), ...queryOptions });
    } catch (error) {
      await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
      throw error;
    }
    // accept removes the stored video itself should anything fail.
    const job = await accept({
      id,
      filename: stored.filename,
      size: stored.size,
      sha256: stored.sha256,
      options,
    });
    return c.json(job, 202);
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
