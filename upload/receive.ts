/**
 * Reads an upload from a request as a stream, never buffering it: a multipart/form-data body (field `file`) or a
 * raw video body. Bytes are counted as they pass, and the stream fails with payload_too_large past the limit.
 */
import { Readable } from "node:stream";
import busboy from "busboy";
import { AppError, displayFilename } from "@vmp3/shared";

/** The file part of an upload, as a stream. */
export interface IncomingFile {
  filename: string;
  contentType: string;
  stream: ReadableStream<Uint8Array>;
}

/** What was received: the result of handling the file, and the form's text fields. */
export interface Received<R> {
  result: R;
  fields: Record<string, string>;
}

const RAW_TYPES = /^(video\/[\w.+-]+|audio\/[\w.+-]+|application\/octet-stream)$/i;

function filenameFromDisposition(header: string | null): string | undefined {
  if (!header) return undefined;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch { /* fall back to the plain parameter */ }
  }
  return /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(header)?.[1] ??
    /filename\s*=\s*([^;\s]+)/i.exec(header)?.[1];
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
 * and `onFile` is done; throws AppError payload_too_large, unsupported_media_type or invalid_request.
 */
export async function receiveUpload<R>(
  request: Request,
  onFile: (file: IncomingFile) => Promise<R>,
  options: { maxBytes: number },
): Promise<Received<R>> {
  const { maxBytes } = options;
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

  const guarded = async (file: IncomingFile): Promise<R> => {
    const limit = limitBytes(maxBytes);
    try {
      return await onFile({ ...file, stream: file.stream.pipeThrough(limit.stream) });
    } catch (error) {
      throw limit.exceeded() ? tooLarge(maxBytes) : error;
    }
  };

  if (/^multipart\/form-data/i.test(contentType)) {
    return await receiveMultipart(request.body, contentType, guarded);
  }
  const mediaType = contentType.split(";")[0].trim();
  if (mediaType && !RAW_TYPES.test(mediaType)) {
    await request.body.cancel().catch(() => {});
    throw new AppError(
      "unsupported_media_type",
      `Send the video as multipart/form-data (field "file") or as a raw video/*, audio/* or application/octet-stream body, not ${mediaType}`,
    );
  }
  const filename = displayFilename(
    url.searchParams.get("filename") ?? filenameFromDisposition(request.headers.get("content-disposition")),
  );
  const result = await guarded({
    filename,
    contentType: mediaType || "application/octet-stream",
    stream: request.body,
  });
  return { result, fields: {} };
}

function receiveMultipart<R>(
  body: ReadableStream<Uint8Array>,
  contentType: string,
  onFile: (file: IncomingFile) => Promise<R>,
): Promise<Received<R>> {
  const { promise, resolve, reject } = Promise.withResolvers<Received<R>>();
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { "content-type": contentType },
      defParamCharset: "utf8",
      limits: { files: 1, fields: 32, fieldSize: 4096, parts: 40, headerPairs: 32 },
    });
  } catch (cause) {
    body.cancel().catch(() => {});
    return Promise.reject(
      new AppError("invalid_request", "The multipart body has no valid boundary", { cause }),
    );
  }
  const source = Readable.fromWeb(body as import("node:stream/web").ReadableStream<Uint8Array>);
  const fields: Record<string, string> = {};
  let handled: Promise<R> | undefined;
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
    (handled ?? Promise.resolve()).catch(() => {}).finally(() => reject(error));
  };

  parser.on("field", (name, value, info) => {
    if (info.valueTruncated) fail(new AppError("invalid_request", `Form field "${name}" is too long`));
    else fields[name] = value;
  });
  parser.on("file", (name, stream, info) => {
    if (name !== "file" || handled) {
      stream.resume();
      return;
    }
    file = stream;
    const web = Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>;
    handled = onFile({
      filename: displayFilename(info.filename),
      contentType: info.mimeType || "application/octet-stream",
      stream: web,
    });
    handled.catch(fail);
  });
  parser.on("close", () => {
    if (settled) return;
    if (!handled) {
      fail(new AppError("invalid_request", 'The form has no file field; send the video as field "file"'));
      return;
    }
    handled.then((result) => {
      settled = true;
      resolve({ result, fields });
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
