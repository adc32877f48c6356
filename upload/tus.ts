/**
 * Resumable uploads on the tus 1.0 protocol (https://tus.io/protocols/resumable-upload), at `/v1/uploads/`:
 * core (HEAD, PATCH, OPTIONS) and the creation, creation-with-upload, termination and expiration extensions.
 *
 * The upload id is the job's id. Bytes stream into a multipart upload of the job's input key, a part at a time
 * (one part buffer per PATCH in progress, never the whole upload); bytes after the last whole part are kept as a
 * temporary "tail" object and put in front of the next PATCH's bytes. The state (multipart id, parts, tail, owner,
 * expiry) is a JSON object in the blob store (see pending_uploads.ts), so any Upload process, or this one after a
 * restart, resumes an upload. When the last byte is in, the object is completed and the job accepted; the PATCH
 * answers with `Vmp3-Job-Id`, and a HEAD afterwards still tells the job id until the upload expires.
 *
 * The content cache's sha256: each process hashes the bytes it sees in memory, and as long as it has seen every
 * byte from offset 0 that hash is used; otherwise (a restart, another process took part of the upload) the
 * finished object is read back once and hashed.
 */
import { createHash, type Hash } from "node:crypto";
import { type Context, Hono } from "hono";
import {
  AppError,
  type BlobStore,
  JobId,
  jobKeys,
  type MultipartStore,
  onError,
  OWNER_HEADER,
} from "@vmp3/shared";
import type { PublicJob } from "@vmp3/metadata";
import type { Accept } from "./accept.ts";
import {
  createPendingUploads,
  discardUpload,
  type PendingUpload,
  storedBytes,
  uploadFolder,
} from "./pending_uploads.ts";
import { DEFAULT_STALL_LIMIT, stallGuard, type StallLimit } from "./receive.ts";
import { pickOptions, uploadFields } from "./upload_fields.ts";

/** The tus version spoken. */
export const TUS_VERSION = "1.0.0";
/** The tus extensions offered. */
export const TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration";
/** The header of a finishing PATCH (or a HEAD after it) that names the job made from the upload. */
export const JOB_ID_HEADER = "Vmp3-Job-Id";

/** What the tus routes need. */
export interface TusDeps {
  blobs: BlobStore;
  parts: MultipartStore;
  accept: Accept;
  maxUploadBytes: number;
  /** Size of the parts sent to storage, at least `parts.minPartBytes` (default 8 MiB): the memory of a PATCH. */
  partBytes?: number;
  /** How long an upload may take from its creation, in ms (default 24 h); then it answers 410 and is swept. */
  expiryMs?: number;
  /** How a stalled PATCH is cut off (what came before is kept). */
  stall?: Partial<StallLimit>;
  now?: () => Date;
}

const TUS_HEADERS = {
  "Tus-Resumable": TUS_VERSION,
};

/** The fields of an Upload-Metadata header: `key base64,key2 base64,key3`. */
export function parseUploadMetadata(header: string | null): Record<string, string> {
  const fields: Record<string, string> = {};
  if (header === null || header.trim() === "") return fields;
  for (const pair of header.split(",")) {
    const match = /^\s*([^\s,]+)(?:\s+([A-Za-z0-9+/]*={0,2}))?\s*$/.exec(pair);
    if (!match) {
      throw new AppError("invalid_request", `Upload-Metadata is malformed near ${JSON.stringify(pair)}`);
    }
    const [, key, encoded = ""] = match;
    if (Object.hasOwn(fields, key)) {
      throw new AppError("invalid_request", `Upload-Metadata names ${JSON.stringify(key)} twice`);
    }
    try {
      const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
      fields[key] = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new AppError(
        "invalid_request",
        `Upload-Metadata ${JSON.stringify(key)} is not base64 of UTF-8 text`,
      );
    }
  }
  return fields;
}

/** A non-negative whole number header, or undefined when absent. */
function numberHeader(value: string | null, name: string): number | undefined {
  if (value === null) return undefined;
  if (!/^\d{1,16}$/.test(value.trim())) {
    throw new AppError("invalid_request", `${name} must be a whole number of bytes`);
  }
  return Number(value.trim());
}

/** Creates the Hono app of the tus routes (full paths, `/v1/uploads...`). */
export function createTusApp(deps: TusDeps): Hono {
  const { blobs, parts, accept, maxUploadBytes, now = () => new Date() } = deps;
  const partBytes = Math.max(deps.partBytes ?? 8 * 1024 * 1024, parts.minPartBytes);
  const expiryMs = deps.expiryMs ?? 24 * 3600 * 1000;
  const stall = { ...DEFAULT_STALL_LIMIT, ...deps.stall };
  const pending = createPendingUploads(blobs);
  /** Requests on one upload run one at a time in this process (a HEAD waits for a PATCH cut short to save). */
  const locks = new Map<string, Promise<void>>();
  /** The running sha256 of the uploads whose every byte, from offset 0, this process has seen. */
  const hashes = new Map<string, { hash: Hash; offset: number }>();
  const log = (what: string) => (error: unknown) => console.error(`tus: ${what}:`, error);

  const locked = async <T>(id: string, fn: () => Promise<T>): Promise<T> => {
    const before = locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const chain = before.then(() => mine);
    locks.set(id, chain);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (locks.get(id) === chain) locks.delete(id);
    }
  };

  const notFound = (id: string) => new AppError("not_found", `There is no upload ${JSON.stringify(id)}`);

  /** The upload `id` of `owner`; not_found for anyone else's, expired (410) once past its expiry. */
  const load = async (id: string, owner: string | undefined): Promise<PendingUpload> => {
    if (!JobId.safeParse(id).success) throw notFound(id);
    const upload = await pending.get(id);
    if (!upload || upload.kind !== "tus" || upload.owner !== (owner || undefined)) throw notFound(id);
    if (Date.parse(upload.expiresAt) <= now().getTime()) {
      throw new AppError("expired", `Upload ${id} expired at ${upload.expiresAt}; start a new one`);
    }
    return upload;
  };

  const uploadHeaders = (upload: PendingUpload): Record<string, string> => ({
    ...TUS_HEADERS,
    "Upload-Offset": String(upload.completed ? upload.size : storedBytes(upload)),
    "Upload-Length": String(upload.size),
    "Upload-Expires": new Date(upload.expiresAt).toUTCString(),
    "Cache-Control": "no-store",
    ...(upload.jobId ? { [JOB_ID_HEADER]: upload.jobId } : {}),
  });

  /** The sha256 of the stored object, read back once (for uploads this process did not see whole). */
  const hashStored = async (key: string): Promise<string> => {
    const object = await blobs.get(key);
    if (!object) throw new AppError("not_found", "The finished upload is gone; upload the file again");
    const hash = createHash("sha256");
    for await (const chunk of object.body) hash.update(chunk);
    return hash.digest("hex");
  };

  /** Makes the job of a completed upload; the state stays, as a receipt naming the job, until it expires. */
  const finish = async (upload: PendingUpload): Promise<PendingUpload> => {
    const { id } = upload;
    const seen = hashes.get(id);
    hashes.delete(id);
    const sha256 = seen && seen.offset === upload.size
      ? seen.hash.digest("hex")
      : await hashStored(jobKeys(id).inputKey);
    let job: PublicJob;
    try {
      job = await accept({
        id,
        filename: upload.filename,
        size: upload.size,
        sha256,
        options: upload.options,
        extra: { owner: upload.owner, webhookUrl: upload.webhookUrl },
      });
    } catch (error) {
      // accept removed the input: nothing is left to resume.
      await pending.remove(id).catch(log(`could not remove upload ${id}`));
      throw error;
    }
    const receipt: PendingUpload = { ...upload, jobId: job.id };
    await pending.save(receipt).catch(log(`could not record that upload ${id} became a job`));
    return receipt;
  };

  /**
   * Appends `body` to the upload, storing whole parts as they fill and the rest as its tail, then completes the
   * object when the last byte is in. A body cut short (a dropped connection, a stall) keeps what arrived; the
   * failure is returned beside the saved state.
   */
  const append = async (
    start: PendingUpload,
    body: ReadableStream<Uint8Array> | null,
  ): Promise<{ upload: PendingUpload; failure?: unknown }> => {
    const { id } = start;
    const { inputKey } = jobKeys(id);
    const uploadId = start.uploadId!;
    let upload = start;
    const buffer = new Uint8Array(partBytes);
    let filled = 0;
    if (upload.tail) {
      const tail = await blobs.get(upload.tail.key);
      if (!tail) throw new Error(`Upload ${id}: its tail ${upload.tail.key} is missing`);
      for await (const chunk of tail.body) {
        if (filled + chunk.byteLength > upload.tail.size) {
          throw new Error(`Upload ${id}: its tail is too long`);
        }
        buffer.set(chunk, filled);
        filled += chunk.byteLength;
      }
      if (filled !== upload.tail.size) throw new Error(`Upload ${id}: its tail is too short`);
    }
    let saved = filled; // how much of the buffer is saved (as the tail)
    let received = storedBytes(upload);
    let hashed = hashes.get(id);
    if (hashed?.offset !== received) {
      hashes.delete(id);
      hashed = undefined;
    }

    const replaceTail = async (next: PendingUpload) => {
      const old = upload.tail;
      await pending.save(next);
      upload = next;
      if (old && old.key !== next.tail?.key) {
        await blobs.delete(old.key).catch(log(`could not remove ${old.key}`));
      }
    };
    const sendPart = async () => {
      const number = upload.parts.length + 1;
      const etag = await parts.uploadPart(inputKey, uploadId, number, buffer.subarray(0, filled));
      await replaceTail({
        ...upload,
        parts: [...upload.parts, { number, etag, size: filled }],
        tail: undefined,
      });
      filled = 0;
      saved = 0;
    };
    const saveTail = async () => {
      if (filled === saved) return;
      const key = `${uploadFolder(id)}tail-${crypto.randomUUID()}`;
      await blobs.put(key, new Blob([buffer.subarray(0, filled)]).stream());
      await replaceTail({ ...upload, tail: { key, size: filled } });
      saved = filled;
    };

    let failure: unknown;
    let storageFailed = false;
    if (body) {
      const guard = stallGuard(body, stall);
      const reader = guard.stream.getReader();
      try {
        for (;;) {
          let next: ReadableStreamReadResult<Uint8Array>;
          try {
            next = await reader.read();
          } catch (error) {
            failure = guard.timedOut()
              ? new AppError(
                "request_timeout",
                `The upload sent less than ${stall.minBytes} bytes in ${stall.timeoutMs / 1000} s; what ` +
                  "arrived before is kept: resume from the offset HEAD gives",
              )
              : new AppError(
                "invalid_request",
                `The upload's body broke off after offset ${received}; resume from the offset HEAD gives`,
                { cause: error },
              );
            break;
          }
          if (next.done) break;
          let chunk = next.value;
          if (received + chunk.byteLength > upload.size) {
            failure = new AppError(
              "payload_too_large",
              `The upload is ${upload.size} bytes long (Upload-Length): this PATCH sends more`,
            );
            reader.cancel(failure).catch(() => {});
            break;
          }
          hashed?.hash.update(chunk);
          received += chunk.byteLength;
          while (chunk.byteLength > 0) {
            const n = Math.min(chunk.byteLength, buffer.byteLength - filled);
            buffer.set(chunk.subarray(0, n), filled);
            filled += n;
            chunk = chunk.subarray(n);
            if (filled === buffer.byteLength) await sendPart();
          }
        }
      } catch (error) {
        // Storage failed: what was not saved is lost, and the client resends it from the saved offset.
        failure = error;
        storageFailed = true;
        reader.cancel(error).catch(() => {});
      }
    }

    try {
      if (!storageFailed) {
        if (received === upload.size) {
          if (filled > 0) {
            const number = upload.parts.length + 1;
            const etag = await parts.uploadPart(inputKey, uploadId, number, buffer.subarray(0, filled));
            upload = { ...upload, parts: [...upload.parts, { number, etag, size: filled }] };
          }
          await parts.complete(inputKey, uploadId, upload.parts);
          // The object is whole: the job can be made even should saving that fail (it is saved again after).
          const old = upload.tail;
          upload = { ...upload, tail: undefined, completed: true };
          await pending.save(upload).catch(log(`could not save upload ${id} as completed`));
          if (old) await blobs.delete(old.key).catch(log(`could not remove ${old.key}`));
        } else {
          await saveTail();
        }
      }
    } catch (error) {
      failure ??= error;
      storageFailed = true;
    }
    const intact = upload.completed || (!storageFailed && storedBytes(upload) === received);
    if (hashed && intact) {
      hashes.set(id, { hash: hashed.hash, offset: upload.completed ? upload.size : received });
    } else {
      hashes.delete(id);
    }
    return { upload, failure };
  };

  /** Appends a request's body, finishes the upload if that was its last byte, and answers. */
  const patch = async (upload: PendingUpload, body: ReadableStream<Uint8Array> | null) => {
    const { upload: after, failure } = await append(upload, body);
    const done = after.completed ? await finish(after) : after;
    if (failure !== undefined && !done.completed) throw failure;
    if (failure !== undefined) {
      console.error(`tus: upload ${upload.id} finished, then its request failed:`, failure);
    }
    return done;
  };

  const app = new Hono();
  app.onError((error, c) => {
    const response = onError(error, c);
    for (const [name, value] of Object.entries(TUS_HEADERS)) response.headers.set(name, value);
    if (error instanceof AppError && error.code === "precondition_failed") {
      response.headers.set("Tus-Version", TUS_VERSION);
    }
    return response;
  });

  const options = () =>
    new Response(null, {
      status: 204,
      headers: {
        ...TUS_HEADERS,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": String(maxUploadBytes),
      },
    });
  app.options("/v1/uploads", options);
  app.options("/v1/uploads/", options);
  app.options("/v1/uploads/:id", options);

  const create = async (request: Request) => {
    const headers = request.headers;
    if (headers.has("upload-defer-length")) {
      throw new AppError("invalid_request", "Upload-Defer-Length is not supported: give Upload-Length");
    }
    const size = numberHeader(headers.get("upload-length"), "Upload-Length");
    if (size === undefined) throw new AppError("invalid_request", "Give the upload's size in Upload-Length");
    if (size === 0) {
      throw new AppError("unsupported_input", "Cannot convert an empty file (Upload-Length: 0)");
    }
    if (size > maxUploadBytes) {
      throw new AppError(
        "payload_too_large",
        `The upload is larger than the limit of ${maxUploadBytes} bytes`,
      );
    }
    const rawMetadata = headers.get("upload-metadata");
    const metadata = parseUploadMetadata(rawMetadata);
    const fields = uploadFields({
      filename: metadata.filename ?? metadata.name,
      webhookUrl: metadata.webhook_url,
      options: pickOptions(metadata),
    });
    const id = crypto.randomUUID();
    const createdAt = now();
    const uploadId = await parts.create(jobKeys(id).inputKey, { contentType: metadata.filetype });
    let upload: PendingUpload = {
      version: 1,
      id,
      kind: "tus",
      // An empty header is a caller without a key (the API runs open): nobody's upload.
      owner: headers.get(OWNER_HEADER) || undefined,
      filename: fields.filename,
      webhookUrl: fields.webhookUrl,
      options: fields.options,
      size,
      createdAt: createdAt.toISOString(),
      expiresAt: new Date(createdAt.getTime() + expiryMs).toISOString(),
      uploadId,
      parts: [],
      metadata: rawMetadata ?? undefined,
    };
    await pending.save(upload);
    hashes.set(id, { hash: createHash("sha256"), offset: 0 });
    const withBody = request.body !== null &&
      headers.get("content-type")?.toLowerCase() === "application/offset+octet-stream";
    if (withBody) {
      const length = numberHeader(headers.get("content-length"), "Content-Length");
      if (length !== undefined && length > size) {
        throw new AppError("payload_too_large", `The body is longer than Upload-Length (${size} bytes)`);
      }
      upload = await locked(id, () => patch(upload, request.body));
    }
    const answer = uploadHeaders(upload);
    if (!withBody) delete answer["Upload-Offset"];
    return new Response(null, { status: 201, headers: { ...answer, Location: `/v1/uploads/${id}` } });
  };
  app.post("/v1/uploads", (c) => (checkVersion(c), create(c.req.raw)));
  app.post("/v1/uploads/", (c) => (checkVersion(c), create(c.req.raw)));

  // HEAD (Hono answers HEAD with the GET route, without the body).
  app.get("/v1/uploads/:id", async (c) => {
    checkVersion(c);
    const id = c.req.param("id");
    const upload = await locked(id, async () => {
      const found = await load(id, c.req.header(OWNER_HEADER));
      // Completed but its job not made yet (a crash in between): make it now, or the client would stop here.
      return found.completed && !found.jobId ? await finish(found) : found;
    });
    const headers = uploadHeaders(upload);
    if (upload.metadata) headers["Upload-Metadata"] = upload.metadata;
    return new Response(null, { status: 200, headers });
  });

  app.patch("/v1/uploads/:id", async (c) => {
    checkVersion(c);
    const id = c.req.param("id");
    const contentType = c.req.header("content-type")?.toLowerCase();
    if (contentType !== "application/offset+octet-stream") {
      throw new AppError("unsupported_media_type", "A PATCH body must be application/offset+octet-stream");
    }
    const offset = numberHeader(c.req.header("upload-offset") ?? null, "Upload-Offset");
    if (offset === undefined) throw new AppError("invalid_request", "Give Upload-Offset");
    const length = numberHeader(c.req.header("content-length") ?? null, "Content-Length");
    const upload = await locked(id, async () => {
      const found = await load(id, c.req.header(OWNER_HEADER));
      const current = found.completed ? found.size : storedBytes(found);
      if (offset !== current) {
        await c.req.raw.body?.cancel().catch(() => {});
        throw new AppError(
          "conflict",
          `Upload ${id} is at offset ${current}, not ${offset}: send from there`,
        );
      }
      if (length !== undefined && offset + length > found.size) {
        throw new AppError(
          "payload_too_large",
          `The upload is ${found.size} bytes long; this PATCH sends more`,
        );
      }
      if (found.completed) return found.jobId ? found : await finish(found);
      return await patch(found, c.req.raw.body);
    });
    return new Response(null, { status: 204, headers: uploadHeaders(upload) });
  });

  app.delete("/v1/uploads/:id", async (c) => {
    checkVersion(c);
    const id = c.req.param("id");
    await locked(id, async () => {
      const upload = await load(id, c.req.header(OWNER_HEADER));
      if (upload.jobId) {
        throw new AppError("conflict", `Upload ${id} is finished: it is job ${upload.jobId}`);
      }
      await discardUpload(upload, { blobs, parts, log: (m) => console.error(`tus: ${m}`) });
      hashes.delete(id);
    });
    return new Response(null, { status: 204, headers: TUS_HEADERS });
  });

  return app;
}

/** Refuses a tus request without `Tus-Resumable: 1.0.0` (412, answered with Tus-Version). */
function checkVersion(c: Context): void {
  const version = c.req.header("tus-resumable");
  if (version === TUS_VERSION) return;
  throw new AppError(
    "precondition_failed",
    version === undefined
      ? `Send Tus-Resumable: ${TUS_VERSION}`
      : `Tus-Resumable ${JSON.stringify(version)} is not supported; this server speaks ${TUS_VERSION}`,
  );
}
