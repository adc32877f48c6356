/**
 * Import from URL: `POST /imports` with `{"url": ..., "webhook_url"?: ..., <option>: ...}` fetches the video
 * from a public http(s) URL (through adapters/public_http.ts, which refuses private addresses at connect time and
 * on every redirect), streams it into storage hashed on the way, exactly as a form upload is, and accepts it as a
 * job. The Gateway forwards `POST /v1/jobs` JSON bodies here, with `x-vmp3-owner` naming the caller's API key.
 */
import { Hono } from "hono";
import {
  AppError,
  displayFilename,
  jobKeys,
  onError,
  onNotFound,
  OWNER_HEADER,
  sha256Tap,
} from "@vmp3/shared";
import type { PublicHttp } from "@vmp3/adapters/public-http";
import { type AcceptDeps, createAccept } from "./accept.ts";
import { filenameFromDisposition } from "./receive.ts";
import { uploadFields } from "./upload_fields.ts";
import { claimKey, holdKey, idempotencyKeyOf, importPrint, replayImport } from "./idempotency.ts";

/** What URL import needs. */
export interface UrlImportDeps extends AcceptDeps {
  /** The client that fetches the URL; absent, imports answer 501 not_implemented. */
  publicHttp?: PublicHttp;
  /** The largest video imported, in bytes (the upload limit). */
  maxUploadBytes: number;
}

/** The largest JSON body taken, in bytes. */
const MAX_BODY_BYTES = 64 * 1024;
/** The longest URL taken. */
const MAX_URL_LENGTH = 8192;

/** The request body, checked: the URL, and the rest as upload fields. */
async function readBody(
  request: Request,
): Promise<{ url: string; webhookUrl?: string; options: Record<string, string> }> {
  const text = await request.text();
  if (new TextEncoder().encode(text).byteLength > MAX_BODY_BYTES) {
    throw new AppError("invalid_request", `The JSON body is larger than ${MAX_BODY_BYTES} bytes`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new AppError("invalid_request", 'The body must be JSON: {"url": "https://…", …}');
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new AppError("invalid_request", 'The body must be a JSON object: {"url": "https://…", …}');
  }
  const { url, webhook_url: webhookUrl, ...rest } = body as Record<string, unknown>;
  if (typeof url !== "string" || url.length === 0 || url.length > MAX_URL_LENGTH) {
    throw new AppError("invalid_request", `"url" must be a URL of at most ${MAX_URL_LENGTH} characters`);
  }
  if (webhookUrl !== undefined && typeof webhookUrl !== "string") {
    throw new AppError("invalid_request", '"webhook_url" must be a string');
  }
  const options: Record<string, string> = {};
  for (const [name, value] of Object.entries(rest)) {
    if (!["string", "number", "boolean"].includes(typeof value)) {
      throw new AppError("invalid_option", `"${name}" must be a string or a number`);
    }
    options[name] = String(value);
  }
  return { url, webhookUrl, options };
}

/** The file name a download goes by: its Content-Disposition's, else the last segment of its URL's path. */
function downloadFilename(headers: Headers, url: string): string {
  const named = filenameFromDisposition(headers.get("content-disposition"));
  if (named !== undefined) return displayFilename(named);
  const segment = new URL(url).pathname.split("/").pop() ?? "";
  try {
    return displayFilename(decodeURIComponent(segment));
  } catch {
    return displayFilename(segment); // not valid percent-encoding: shown as it is
  }
}

/** `body` as a stream that remembers the error it failed with, if any. */
function watched(
  body: ReadableStream<Uint8Array>,
): { stream: ReadableStream<Uint8Array>; error: () => unknown } {
  const reader = body.getReader();
  let failure: unknown;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await reader.read();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      } catch (error) {
        failure = error;
        controller.error(error);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return { stream, error: () => failure };
}

/** Creates the app of `POST /imports` (mounted at /imports by the Upload app). */
export function createUrlImportApp(deps: UrlImportDeps): Hono {
  const { blobs, publicHttp, maxUploadBytes } = deps;
  const accept = createAccept(deps);
  const app = new Hono();
  app.onError(onError);
  app.notFound(onNotFound);

  app.post("/", async (c) => {
    const body = await readBody(c.req.raw);
    // Fail fast on a bad option or webhook URL, before anything is fetched.
    const fields = uploadFields({ webhookUrl: body.webhookUrl, options: body.options });
    if (!publicHttp) throw new AppError("not_implemented", "Import from URL is not enabled on this server");
    const owner = c.req.header(OWNER_HEADER) || undefined;
    // Idempotency-Key (upload/idempotency.ts): the same URL, options and webhook URL under one key make one job.
    const idempotencyKey = idempotencyKeyOf(c.req.header("idempotency-key"));
    const print = idempotencyKey ? await importPrint(body.url, fields.options, fields.webhookUrl) : undefined;
    const claim = idempotencyKey ? await claimKey(deps.metadata, owner, idempotencyKey, print) : undefined;
    await using held = holdKey(claim);
    if (claim && !claim.first) {
      held.answered();
      return c.json(await replayImport(deps.metadata, claim, print!), 202, { "idempotent-replayed": "true" });
    }
    // The key's jobs at once, before anything is fetched; the exact check follows once the video is stored.
    if (owner !== undefined) await deps.metadata.checkQuota(owner, 0);

    const id = claim?.id ?? crypto.randomUUID();
    const { inputKey } = jobKeys(id);
    const response = await publicHttp.request(body.url, {
      maxBytes: maxUploadBytes,
      signal: c.req.raw.signal,
    });
    if (response.status < 200 || response.status > 299) {
      await response.body.cancel().catch(() => {});
      throw new AppError(
        "url_fetch_failed",
        `The URL answered ${response.status}${
          response.statusText ? ` ${response.statusText}` : ""
        }, not a file`,
      );
    }
    const filename = downloadFilename(response.headers, response.url);
    const contentType = response.headers.get("content-type")?.split(";")[0].trim() ||
      "application/octet-stream";

    const source = watched(response.body);
    const tap = sha256Tap();
    let size: number;
    try {
      ({ size } = await blobs.put(inputKey, source.stream.pipeThrough(tap.stream), { contentType }));
    } catch (cause) {
      await blobs.delete(inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));
      // The download's own failure (too large, cut off, too slow) says more than the store's echo of it.
      const failure = source.error() ?? cause;
      if (failure instanceof AppError) throw failure;
      throw new AppError("service_unavailable", "The download could not be stored; nothing was accepted", {
        cause,
      });
    }
    // accept removes the stored video itself should anything fail.
    const job = await accept({
      id,
      filename,
      size,
      sha256: tap.digest(),
      options: fields.options,
      extra: { owner, webhookUrl: fields.webhookUrl },
    });
    held.answered();
    return c.json(job, 202);
  });

  return app;
}
