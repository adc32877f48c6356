/**
 * Reads an upload from a request as a stream, never buffering it: a multipart/form-data body (field `file`) or a
 * raw video body. Bytes are counted as they pass, and the stream fails with payload_too_large past the limit, or
 * with request_timeout when the client sends too little for too long (a stalled or deliberately slow client).
 * File names are display data only (see `displayFilename`): the one rule applies to every way of naming an upload.
 */
import { Readable } from "node:stream";
import busboy from "busboy";
import { AppError, displayFilename } from "@vmp3/shared";

/** The file part of an upload, as a stream. */
export interface IncomingFile {
  filename: string;
  contentType: string;
  stream: ReadableStream<Uint8Array>;
  /**
   * The file's exact length when the request declares it: a raw body's Content-Length (or the x-content-length
   * the Gateway passes on). Unknown for a form's file.
   */
  size?: number;
}

/** What was received: the result of handling the file, and the form's text fields. */
export interface Received<R> {
  result: R;
  fields: Record<string, string>;
}

const RAW_TYPES = /^(video\/[\w.+-]+|audio\/[\w.+-]+|application\/octet-stream)$/i;

/**
 * How a stalled or slow client is cut off: it must send at least `minBytes` in every `timeoutMs` spent waiting for
 * it (the time storage takes to accept the bytes does not count), else the upload fails with request_timeout. A
 * client that stops sending, or trickles a byte a second, is cut off after `timeoutMs`; one that sends 16 KiB in
 * 30 s (about 550 B/s) never is.
 */
export interface StallLimit {
  /** The window, in ms (default 30 s). */
  timeoutMs: number;
  /** The least the client must send in each window, in bytes (default 16 KiB). */
  minBytes: number;
}

/** The default {@linkcode StallLimit}: 16 KiB in every 30 s. */
export const DEFAULT_STALL_LIMIT: Readonly<StallLimit> = { timeoutMs: 30_000, minBytes: 16 * 1024 };

/**
 * The client's file name from a raw upload's Content-Disposition header: `filename*` (RFC 8187: UTF-8 or
 * ISO-8859-1, with or without a language) if it can be decoded, else `filename`, quoted (with `\x` escapes) or
 * not. A header carries bytes: a plain `filename` sent as raw UTF-8 (as curl and many clients do) is read as
 * UTF-8.
 */
export function filenameFromDisposition(header: string | null): string | undefined {
  if (!header) return undefined;
  const star = /(?:^|;)\s*filename\*\s*=\s*([\w!#$%&+^`{}~-]+)'[\w-]*'([^;\s]+)/i.exec(header);
  if (star) {
    const charset = star[1].toLowerCase();
    try {
      if (charset === "utf-8") return decodeURIComponent(star[2]);
      if (charset === "iso-8859-1") {
        return star[2].replace(/%([0-9a-f]{2})/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
      }
    } catch { /* fall back to the plain parameter */ }
  }
  const quoted = /(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(header)?.[1]?.replace(/\\(.)/g, "$1");
  const plain = quoted ?? /(?:^|;)\s*filename\s*=\s*([^;\s"]+)/i.exec(header)?.[1];
  return plain === undefined ? undefined : bytesAsUtf8(plain);
}

/** A header value's bytes (each one a character of 0-255, as fetch gives them) read as UTF-8, when they are. */
function bytesAsUtf8(value: string): string {
  const codes = Array.from(value, (c) => c.charCodeAt(0));
  if (!codes.some((c) => c >= 0x80) || codes.some((c) => c > 0xff)) return value;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(codes));
  } catch {
    return value; // ISO-8859-1 after all
  }
}

/**
 * A multipart file name as browsers, curl (7.81+) and fetch send it: the HTML standard makes them write `"`, CR
 * and LF as %22, %0D and %0A, and nothing else, so those three (and only those) are turned back.
 */
export function multipartFilename(raw: string | undefined): string | undefined {
  return raw?.replace(/%(22|0D|0A)/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/**
 * `body` as a stream that fails with request_timeout when the client sends less than `limit.minBytes` in
 * `limit.timeoutMs` of waiting for it. Only the time spent waiting for the client counts: a slow reader (storage)
 * never times the upload out.
 */
export function stallGuard(
  body: ReadableStream<Uint8Array>,
  limit: StallLimit,
): { stream: ReadableStream<Uint8Array>; timedOut: () => boolean } {
  const reader = body.getReader();
  let timedOut = false;
  let waited = 0; // ms spent waiting for the client since the window began
  let received = 0; // bytes received since then
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<"stalled">((resolve) => {
        timer = setTimeout(() => resolve("stalled"), Math.max(0, limit.timeoutMs - waited));
      });
      const started = performance.now();
      try {
        const next = await Promise.race([reader.read(), stalled]);
        waited += performance.now() - started;
        if (next === "stalled") {
          timedOut = true;
          const error = requestTimeout(limit);
          reader.cancel(error).catch(() => {});
          controller.error(error);
        } else if (next.done) {
          controller.close();
        } else {
          received += next.value.byteLength;
          if (received >= limit.minBytes) [waited, received] = [0, 0];
          controller.enqueue(next.value);
        }
      } catch (error) {
        controller.error(error);
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { stream, timedOut: () => timedOut };
}

function requestTimeout(limit: StallLimit): AppError {
  return new AppError(
    "request_timeout",
    `The upload sent less than ${limit.minBytes} bytes in ${Math.round(limit.timeoutMs / 100) / 10} s; ` +
      "it was cut off and nothing was kept",
  );
}

function limitBytes(
  maxBytes: number,
): { stream: TransformStream<Uint8Array, Uint8Array>; exceeded: () => boolean } {
  let size = 0;
  let over = false;
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      size += chunk.byteLength;
      if (size > maxBytes) {
        over = true;
        controller.error(tooLarge(maxBytes));
        return;
      }
      controller.enqueue(chunk);
    },
  });
  return { stream, exceeded: () => over };
}

function tooLarge(maxBytes: number): AppError {
  return new AppError("payload_too_large", `The upload is larger than the limit of ${maxBytes} bytes`);
}

/**
 * Streams the uploaded file of `request` to `onFile`, which must consume it. Resolves once the whole body is read
 * and `onFile` is done; throws AppError payload_too_large, unsupported_media_type, invalid_request or
 * request_timeout (the client sent too little for too long; see {@linkcode StallLimit}).
 */
export async function receiveUpload<R>(
  request: Request,
  onFile: (file: IncomingFile) => Promise<R>,
  options: ReceiveOptions,
): Promise<Received<R>> {
  const { results, fields } = await receiveUploads(request, onFile, { ...options, maxFiles: 1 });
  return { result: results[0], fields };
}

/** How an upload is received. */
export interface ReceiveOptions {
  /** The most bytes of one file (the whole body, for a raw upload). */
  maxBytes: number;
  /** When a stalled or slow client is cut off with request_timeout (default {@linkcode DEFAULT_STALL_LIMIT}). */
  stall?: Partial<StallLimit>;
}

/**
 * Like {@linkcode receiveUpload}, for a form of up to `maxFiles` files (each a field `file`, handled one after the
 * other as they arrive: `onFile` must consume each before the next can come); a raw body is one file. Answers the
 * results in the form's order.
 */
export async function receiveUploads<R>(
  request: Request,
  onFile: (file: IncomingFile) => Promise<R>,
  options: ReceiveOptions & { maxFiles: number },
): Promise<{ results: R[]; fields: Record<string, string> }> {
  const { maxBytes } = options;
  const stall = { ...DEFAULT_STALL_LIMIT, ...options.stall };
  // The Gateway passes the client's Content-Length on as x-content-length (its own hop is chunked).
  const length = Number(
    request.headers.get("content-length") ?? request.headers.get("x-content-length") ?? NaN,
  );
  if (length > maxBytes) {
    await request.body?.cancel().catch(() => {});
    throw tooLarge(maxBytes);
  }
  if (!request.body) {
    throw new AppError("invalid_request", "The request has no body; send the video as the body");
  }
  const contentType = request.headers.get("content-type") ?? "";
  const url = new URL(request.url);
  const guard = stallGuard(request.body, stall);
  try {
    return await receiveBody(
      guard.stream,
      contentType,
      url,
      request.headers,
      Number.isSafeInteger(length) && length >= 0 ? length : undefined,
      maxBytes,
      options.maxFiles,
      onFile,
    );
  } catch (error) {
    throw guard.timedOut() ? requestTimeout(stall) : error;
  }
}

async function receiveBody<R>(
  body: ReadableStream<Uint8Array>,
  contentType: string,
  url: URL,
  headers: Headers,
  declaredLength: number | undefined,
  maxBytes: number,
  maxFiles: number,
  onFile: (file: IncomingFile) => Promise<R>,
): Promise<{ results: R[]; fields: Record<string, string> }> {
  const guarded = async (file: IncomingFile): Promise<R> => {
    const limit = limitBytes(maxBytes);
    try {
      return await onFile({ ...file, stream: file.stream.pipeThrough(limit.stream) });
    } catch (error) {
      throw limit.exceeded() ? tooLarge(maxBytes) : error;
    }
  };

  if (/^multipart\/form-data/i.test(contentType)) {
    return await receiveMultipart(body, contentType, maxFiles, guarded);
  }
  const mediaType = contentType.split(";")[0].trim();
  if (mediaType && !RAW_TYPES.test(mediaType)) {
    await body.cancel().catch(() => {});
    throw new AppError(
      "unsupported_media_type",
      `Send the video as multipart/form-data (field "file") or as a raw video/*, audio/* or application/octet-stream body, not ${mediaType}`,
    );
  }
  const filename = displayFilename(
    url.searchParams.get("filename") ?? filenameFromDisposition(headers.get("content-disposition")),
  );
  const result = await guarded({
    filename,
    contentType: mediaType || "application/octet-stream",
    stream: body,
    size: declaredLength,
  });
  return { results: [result], fields: {} };
}

function receiveMultipart<R>(
  body: ReadableStream<Uint8Array>,
  contentType: string,
  maxFiles: number,
  onFile: (file: IncomingFile) => Promise<R>,
): Promise<{ results: R[]; fields: Record<string, string> }> {
  const { promise, resolve, reject } = Promise.withResolvers<
    { results: R[]; fields: Record<string, string> }
  >();
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { "content-type": contentType },
      defParamCharset: "utf8",
      limits: { files: maxFiles, fields: 32, fieldSize: 4096, parts: 40 + maxFiles, headerPairs: 32 },
    });
  } catch (cause) {
    body.cancel().catch(() => {});
    return Promise.reject(
      new AppError("invalid_request", "The multipart body has no valid boundary", { cause }),
    );
  }
  const source = Readable.fromWeb(body as import("node:stream/web").ReadableStream<Uint8Array>);
  const fields: Record<string, string> = {};
  // Each file's handling, in order.
  const results: Promise<R>[] = [];
  let file: Readable | undefined;
  let settled = false;
  const fail = (error: unknown) => {
    if (settled) return;
    settled = true;
    source.unpipe(parser);
    source.destroy();
    // End the file's stream too, so that whoever stores it stops (and aborts) rather than waiting forever; the
    // caller hears of the failure only once that is done.
    file?.destroy(error instanceof Error ? error : new Error(String(error)));
    Promise.allSettled(results).finally(() => reject(error));
  };

  parser.on("field", (name, value, info) => {
    if (info.valueTruncated) fail(new AppError("invalid_request", `Form field "${name}" is too long`));
    else fields[name] = value;
  });
  parser.on("file", (name, stream, info) => {
    if (name !== "file" || settled) {
      stream.resume();
      return;
    }
    file = stream;
    const web = Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>;
    const result = onFile({
      filename: displayFilename(multipartFilename(info.filename)),
      contentType: info.mimeType || "application/octet-stream",
      stream: web,
    });
    results.push(result);
    result.catch(fail);
  });
  parser.on("filesLimit", () => {
    fail(
      new AppError(
        "invalid_request",
        maxFiles === 1
          ? 'The form has more than one file; send one video, as field "file"'
          : `The form has more than ${maxFiles} files`,
      ),
    );
  });
  for (const event of ["fieldsLimit", "partsLimit"] as const) {
    parser.on(event, () => fail(new AppError("invalid_request", "The form has too many fields")));
  }
  parser.on("close", () => {
    if (settled) return;
    if (results.length === 0) {
      fail(new AppError("invalid_request", 'The form has no file field; send the video as field "file"'));
      return;
    }
    Promise.all(results).then((done) => {
      settled = true;
      resolve({ results: done, fields });
    }, fail);
  });
  parser.on(
    "error",
    (cause) => fail(new AppError("invalid_request", "The multipart body is malformed", { cause })),
  );
  source.on("error", (cause) => fail(new AppError("invalid_request", "The upload was cut off", { cause })));
  source.pipe(parser);
  return promise;
}
