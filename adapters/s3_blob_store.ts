/**
 * @module
 * A {@linkcode BlobStore} on an S3-compatible object store (AWS S3, MinIO, R2, s3rver).
 *
 * An upload whose size is known up front (`put`'s `size` hint, up to S3's 5 GiB limit for one PUT) streams
 * straight into one PutObject: no part buffers, no assembly of parts (which, on s3rver, took as long again as
 * sending them; docs/benchmarks.md). Other uploads stream through multipart upload with bounded memory (8 MiB
 * parts, 2 in flight per upload, buffers from a budget all uploads share, S3_UPLOAD_BUFFERS); a failed upload is
 * aborted so it leaves neither an object nor a dangling multipart upload (when the store cannot be reached, the
 * abort is tried again in the background until it answers).
 *
 * A store that cannot be reached (no answer, or a 5xx) fails a call with an `AppError` `service_unavailable`, so a
 * service answers 503 with that code, and a worker knows the failure is passing.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { Readable } from "node:stream";
import { AppError, type BlobStore, contentDisposition, type S3Env } from "@vmp3/shared";
import { createBufferPool } from "./buffer_pool.ts";
import { collectSpentChunks } from "./chunk_collector.ts";

/** How to reach one bucket of an S3-compatible store. */
export interface S3Settings {
  /** The store's API endpoint; unset means AWS S3 itself. */
  endpoint?: string;
  /** Where clients reach the store, used only to sign download URLs; defaults to `endpoint`. */
  publicEndpoint?: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (`endpoint/bucket/key`), which s3rver and MinIO need. */
  forcePathStyle: boolean;
  /** "when_required" for stores that keep the aws-chunked framing of streamed uploads (s3rver, some MinIO, R2). */
  checksum: "when_supported" | "when_required";
  /** The longest lifetime of a presigned URL, in seconds; a longer `expiresIn` is cut to it. */
  presignSeconds?: number;
  /**
   * Waits between tries to abort a failed multipart upload while the store cannot be reached, in ms (default
   * about five minutes of tries).
   */
  abortRetryDelaysMs?: number[];
  /** Told what the store does in the background (aborts of failed uploads); default console.error. */
  report?: (message: string) => void;
  /**
   * How many part buffers (8 MiB each) all the uploads of this store share (default 12, 96 MiB): the memory of
   * uploads is capped at that whatever their number; past it an upload waits for a buffer.
   */
  uploadBuffers?: number;
}

/** A {@linkcode BlobStore} on S3, with bucket setup and shutdown. */
export interface S3BlobStore extends BlobStore {
  /** Creates the bucket if it does not exist. */
  ensureBucket(): Promise<void>;
  /** Releases the HTTP connections. */
  close(): void;
}

/** The part size of multipart uploads. */
const PART_SIZE = 8 * 1024 * 1024;
/** How many parts of one upload are sent at once. */
const QUEUE_SIZE = 2;
/** How many part buffers a body of unknown length may fill before it is sent: one that ends within them is one PUT. */
const SINGLE_PUT_BUFFERS = 2;
/** The waits before trying again a PutObject of two part buffers (the SDK's own tries do not cover it). */
const SINGLE_PUT_RETRY_DELAYS_MS = [100, 400];
/** How many part buffers the uploads of one store share by default. */
const UPLOAD_BUFFERS = 12;
/** The largest object one PutObject may create (S3's limit); a larger known size goes multipart. */
const MAX_SINGLE_PUT = 5 * 1024 ** 3;

/** The longest lifetime of a SigV4 presigned URL (7 days), in seconds. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

/** The error of a body whose length is not the size it declared. */
function lengthMismatch(declared: number, sent: number, ended: boolean): AppError {
  return new AppError(
    "invalid_request",
    ended
      ? `The upload ended after ${sent} of the ${declared} bytes its length declared; nothing was kept`
      : `The upload is longer than the ${declared} bytes its length declared; nothing was kept`,
  );
}

/** Maps the S3 settings of the environment to {@linkcode S3Settings}. */
export function s3SettingsFromEnv(env: S3Env): S3Settings {
  return {
    endpoint: env.S3_ENDPOINT,
    publicEndpoint: env.S3_PUBLIC_ENDPOINT,
    bucket: env.S3_BUCKET,
    region: env.S3_REGION,
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
    forcePathStyle: env.S3_FORCE_PATH_STYLE,
    checksum: env.S3_CHECKSUM,
    presignSeconds: env.S3_PRESIGN_SECONDS,
    uploadBuffers: env.S3_UPLOAD_BUFFERS,
  };
}

/** An S3 client for `settings`, talking to `endpoint` (the store's, or the public one to sign URLs for clients). */
export function makeS3Client(settings: S3Settings, endpoint: string | undefined): S3Client {
  const checksum = settings.checksum === "when_required" ? "WHEN_REQUIRED" : "WHEN_SUPPORTED";
  return new S3Client({
    endpoint,
    region: settings.region,
    credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey },
    forcePathStyle: settings.forcePathStyle,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
  });
}

const ABORT_RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 60_000, 60_000, 60_000];

/** Network errors: the store was not reached, or the connection broke. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** Whether `error` says the store could not be reached (no answer) or failed on its side (5xx). */
export function isUnreachable(error: unknown): boolean {
  if (typeof error !== "object" || error === null || error instanceof AppError) return false;
  const e = error as {
    name?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined) return status >= 500;
  return NETWORK_CODES.has(e.code ?? "") || e.name === "TimeoutError" || e.name === "RequestTimeout" ||
    /ECONNREFUSED|ECONNRESET|socket hang up|connection (refused|reset|closed)|timed? ?out/i.test(
      e.message ?? "",
    );
}

/** `error` as a service_unavailable AppError when it says the store cannot be reached; else as it is. */
function unreachable(error: unknown, what: string): unknown {
  if (!isUnreachable(error)) return error;
  const message = `Object storage cannot be reached (${what}); try again shortly`;
  return new AppError("service_unavailable", message, { cause: error });
}

/** Whether `error` is S3's answer that an object or bucket does not exist. */
function isNotFound(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === "NoSuchKey" || e.name === "NotFound" || e.name === "NoSuchBucket" ||
    e.$metadata?.httpStatusCode === 404;
}

/** Creates a {@linkcode BlobStore} on the bucket that `settings` names; nothing connects until first use. */
export function createS3BlobStore(settings: S3Settings): S3BlobStore {
  const client = makeS3Client(settings, settings.endpoint);
  const signer = settings.publicEndpoint && settings.publicEndpoint !== settings.endpoint
    ? makeS3Client(settings, settings.publicEndpoint)
    : client;
  const Bucket = settings.bucket;
  const report = settings.report ?? ((message: string) => console.error(`s3: ${message}`));
  const abortDelays = settings.abortRetryDelaysMs ?? ABORT_RETRY_DELAYS_MS;
  /** Aborts still being tried in the background; `close()` stops them. */
  const pendingAborts = new Set<AbortController>();

  /** The object's size, or null if there is none (head(), and readLocation's check). */
  const headObject = async (key: string): Promise<{ size: number } | null> => {
    try {
      const out = await client.send(new HeadObjectCommand({ Bucket, Key: key }));
      return { size: out.ContentLength ?? 0 };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw unreachable(error, "metadata");
    }
  };
  const buffers = createBufferPool(PART_SIZE, settings.uploadBuffers ?? UPLOAD_BUFFERS);

  /**
   * Aborts a failed multipart upload. If the store cannot be reached, it is tried again in the background (the
   * caller need not wait) until the store answers; a store that answers and refuses (s3rver cannot abort) is
   * left to its lifecycle rules.
   */
  const abortUpload = async (Key: string, UploadId: string): Promise<void> => {
    const abort = () => client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
    const refused = (error: unknown) =>
      report(
        `multipart upload ${UploadId} of "${Key}" was not aborted: ${(error as Error)?.message ?? error}`,
      );
    try {
      await abort();
      return;
    } catch (error) {
      if (!isUnreachable(error)) return refused(error);
    }
    const stop = new AbortController();
    pendingAborts.add(stop);
    (async () => {
      for (const delay of abortDelays) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          stop.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          }, { once: true });
        });
        if (stop.signal.aborted) return;
        try {
          await abort();
          report(`multipart upload ${UploadId} of "${Key}" aborted once the store was back`);
          return;
        } catch (error) {
          if (!isUnreachable(error)) return refused(error);
        }
      }
      report(`multipart upload ${UploadId} of "${Key}" could not be aborted: the store stayed unreachable`);
    })().finally(() => pendingAborts.delete(stop));
  };

  /**
   * Streams a body of known length into one PutObject: nothing buffered beyond the stream's own chunks. A body
   * that errors, or turns out longer or shorter than `size`, cancels the request; S3 then keeps nothing (a PUT is
   * atomic), and whatever a lesser store (s3rver) wrote of it is deleted.
   */
  const putWhole = async (
    key: string,
    body: ReadableStream<Uint8Array>,
    size: number,
    contentType: string | undefined,
  ): Promise<{ size: number }> => {
    const reader = body.getReader();
    const stop = new AbortController();
    let streamError: { error: unknown } | undefined;
    let sent = 0;
    const fail = (error: unknown) => {
      streamError ??= { error };
      stop.abort(error);
      return error;
    };
    const counted = new ReadableStream<Uint8Array>({
      async pull(controller) {
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await reader.read();
        } catch (error) {
          controller.error(fail(error));
          return;
        }
        if (result.done) {
          if (sent === size) controller.close();
          else controller.error(fail(lengthMismatch(size, sent, true)));
          return;
        }
        sent += result.value.byteLength;
        if (sent > size) {
          const error = fail(lengthMismatch(size, sent, false));
          reader.cancel(error).catch(() => {});
          controller.error(error);
          return;
        }
        collectSpentChunks(result.value.byteLength);
        controller.enqueue(result.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    const source = Readable.fromWeb(counted as import("node:stream/web").ReadableStream<Uint8Array>);
    // The SDK pipes the body into its request, and a pipe does not take errors from its source: the abort signal
    // ends the request instead, and without a listener the error event would be thrown.
    source.on("error", () => {});
    try {
      await client.send(
        new PutObjectCommand({
          Bucket,
          Key: key,
          Body: source,
          ContentLength: size,
          ContentType: contentType,
        }),
        { abortSignal: stop.signal },
      );
      return { size };
    } catch (error) {
      source.destroy();
      reader.cancel(error).catch(() => {});
      // S3 keeps nothing of a cut PUT, but s3rver writes the object as the bytes come.
      await client.send(new DeleteObjectCommand({ Bucket, Key: key })).catch(() => {});
      // The caller's own stream error (say, a size limit it enforces) wins over what the SDK made of it.
      throw streamError ? streamError.error : unreachable(error, "upload");
    }
  };

  return {
    async ensureBucket() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }));
        return;
      } catch (error) {
        if (!isNotFound(error)) throw unreachable(error, "bucket check");
      }
      try {
        await client.send(new CreateBucketCommand({ Bucket }));
      } catch (error) {
        const name = (error as { name?: string }).name;
        if (name !== "BucketAlreadyOwnedByYou" && name !== "BucketAlreadyExists") {
          throw unreachable(error, "bucket creation");
        }
      }
    },

    async put(key, body, options) {
      const declared = options?.size;
      if (
        declared !== undefined && Number.isSafeInteger(declared) && declared > 0 && declared <= MAX_SINGLE_PUT
      ) {
        return await putWhole(key, body, declared, options?.contentType);
      }
      // Our own multipart upload rather than lib-storage's: the stream is copied once into part buffers taken from
      // the store's shared budget and given back once sent, so the memory of all uploads together is capped,
      // whatever their size and number (at most QUEUE_SIZE + 1 buffers per upload).
      const reader = body.getReader();
      const held = new Set<Uint8Array>();
      const take = async () => {
        const buffer = await buffers.take();
        held.add(buffer);
        return buffer;
      };
      const give = (buffer: Uint8Array) => {
        if (held.delete(buffer)) buffers.give(buffer);
      };
      let pending: Uint8Array | undefined;
      let ended = false;
      let streamError: { error: unknown } | undefined;
      let size = 0;

      /** Fills `buffer` from the stream; returns how many bytes it holds. */
      const fill = async (buffer: Uint8Array): Promise<number> => {
        let length = 0;
        while (length < buffer.byteLength) {
          let chunk = pending;
          pending = undefined;
          if (!chunk) {
            if (ended) break;
            let result: ReadableStreamReadResult<Uint8Array>;
            try {
              result = await reader.read();
            } catch (error) {
              streamError = { error };
              throw error;
            }
            if (result.done) {
              ended = true;
              break;
            }
            chunk = result.value;
          }
          const n = Math.min(chunk.byteLength, buffer.byteLength - length);
          buffer.set(chunk.subarray(0, n), length);
          length += n;
          if (n < chunk.byteLength) pending = chunk.subarray(n);
          collectSpentChunks(n);
        }
        size += length;
        return length;
      };

      let uploadId: string | undefined;
      const inFlight = new Set<Promise<void>>();
      try {
        // Up to SINGLE_PUT_BUFFERS buffers are filled before anything is sent: a body that ends within them goes
        // in one PutObject, which costs a store much less than a multipart upload (for 10 MB on s3rver, 0.05 s
        // against 0.12 s: bench/upload_breakdown.ts). A longer one sends them as its first parts.
        // Only the first is waited for: an upload holding one buffer must never wait for another that uploads
        // holding one each would never give back.
        const first = await take();
        const filled = [{ buffer: first, length: await fill(first) }];
        while (filled.length < SINGLE_PUT_BUFFERS && !(ended && !pending)) {
          const buffer = buffers.tryTake();
          if (!buffer) break;
          held.add(buffer);
          filled.push({ buffer, length: await fill(buffer) });
        }
        if (ended && !pending) {
          const chunks = filled.map(({ buffer, length }) => buffer.subarray(0, length));
          // The SDK retries a request whose body is one buffer, never one whose body is a stream (it cannot read
          // it twice): two buffers go as a stream, so their tries are made here, each with a fresh stream.
          for (let attempt = 0;; attempt++) {
            try {
              await client.send(
                new PutObjectCommand({
                  Bucket,
                  Key: key,
                  Body: chunks.length === 1 ? chunks[0] : Readable.from(chunks),
                  ContentLength: size,
                  ContentType: options?.contentType,
                }),
              );
              return { size };
            } catch (error) {
              if (chunks.length === 1 || attempt >= SINGLE_PUT_RETRY_DELAYS_MS.length) throw error;
              await new Promise((resolve) => setTimeout(resolve, SINGLE_PUT_RETRY_DELAYS_MS[attempt]));
            }
          }
        }
        const created = await client.send(
          new CreateMultipartUploadCommand({ Bucket, Key: key, ContentType: options?.contentType }),
        );
        uploadId = created.UploadId;
        const parts: { PartNumber: number; ETag?: string }[] = [];
        let failure: { error: unknown } | undefined;
        const send = (buffer: Uint8Array, length: number, PartNumber: number) => {
          const sending = client.send(
            new UploadPartCommand({
              Bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber,
              Body: buffer.subarray(0, length),
              ContentLength: length,
            }),
          ).then((out) => {
            parts.push({ PartNumber, ETag: out.ETag });
          }, (error) => {
            failure ??= { error };
          }).finally(() => {
            inFlight.delete(sending);
            give(buffer);
          });
          inFlight.add(sending);
        };
        let partNumber = 0;
        for (const { buffer, length } of filled) send(buffer, length, ++partNumber);
        while (!(ended && !pending)) {
          while (inFlight.size >= QUEUE_SIZE) await Promise.race(inFlight);
          if (failure) throw failure.error;
          const buffer = await take();
          const length = await fill(buffer);
          if (length === 0) {
            give(buffer);
            break;
          }
          send(buffer, length, ++partNumber);
        }
        await Promise.all(inFlight);
        if (failure) throw failure.error;
        parts.sort((a, b) => a.PartNumber - b.PartNumber);
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        );
        return { size };
      } catch (error) {
        reader.cancel(error).catch(() => {});
        await Promise.allSettled(inFlight); // a part still on its way would outlive the abort
        // Never completed, so no object is there; the abort drops the parts (s3rver cannot abort).
        if (uploadId) await abortUpload(key, uploadId);
        // The caller's own stream error (say, a size limit it enforces) wins over what the SDK made of it.
        throw streamError ? streamError.error : unreachable(error, "upload");
      } finally {
        // Nothing is sending from them any more (in-flight parts were awaited): back to the shared budget.
        for (const buffer of [...held]) give(buffer);
      }
    },

    async get(key) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket, Key: key }));
        if (!out.Body) throw new Error(`S3 GetObject of "${key}" returned no body`);
        return {
          body: out.Body.transformToWebStream() as ReadableStream<Uint8Array>,
          size: out.ContentLength ?? 0,
        };
      } catch (error) {
        if (isNotFound(error)) return null;
        throw unreachable(error, "download");
      }
    },

    head: headObject,

    async delete(key) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: key }));
      } catch (error) {
        if (!isNotFound(error)) throw unreachable(error, "delete");
      }
    },

    async list(prefix) {
      // ListObjects (v1) paged by Marker: v2's continuation tokens break s3rver (it makes them with DES, which
      // neither Deno nor OpenSSL 3 offer), and every S3-compatible store still answers v1.
      const keys: string[] = [];
      let Marker: string | undefined;
      for (;;) {
        const out = await client.send(new ListObjectsCommand({ Bucket, Prefix: prefix, Marker })).catch(
          (error) => {
            throw unreachable(error, "listing");
          },
        );
        const page = (out.Contents ?? []).flatMap((item) => item.Key === undefined ? [] : [item.Key]);
        keys.push(...page);
        if (!out.IsTruncated || page.length === 0) return keys;
        Marker = out.NextMarker ?? page[page.length - 1];
      }
    },

    async presignGet(key, { filename, expiresIn }) {
      const lifetime = Math.max(
        1,
        Math.floor(settings.presignSeconds ? Math.min(expiresIn, settings.presignSeconds) : expiresIn),
      );
      const command = new GetObjectCommand({
        Bucket,
        Key: key,
        ResponseContentDisposition: contentDisposition(filename),
      });
      return await getSignedUrl(signer, command, { expiresIn: lifetime });
    },

    async readLocation(key, { expiresIn }) {
      // Signed for the store's own endpoint (the worker's, not the clients'), for as long as the reader needs
      // it: S3_PRESIGN_SECONDS is the clients' links' lifetime, and SigV4 allows at most 7 days.
      const found = await headObject(key);
      if (!found) return null;
      const lifetime = Math.max(1, Math.min(Math.ceil(expiresIn), MAX_PRESIGN_SECONDS));
      const command = new GetObjectCommand({ Bucket, Key: key });
      return { location: await getSignedUrl(client, command, { expiresIn: lifetime }), size: found.size };
    },

    close() {
      for (const stop of pendingAborts) stop.abort();
      client.destroy();
      if (signer !== client) signer.destroy();
    },
  };
}
