/**
 * @module
 * A {@linkcode MultipartStore} on S3 multipart uploads, for resumable (tus) and direct (presigned) uploads.
 * Presigned URLs are signed for `S3Settings.publicEndpoint` when set, where clients reach the store.
 *
 * A store that cannot be reached fails a call with an `AppError` `service_unavailable`; one that does not offer
 * ListParts or AbortMultipartUpload (s3rver) fails those with `not_implemented`.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { AppError, type MultipartStore, type StoredPart } from "@vmp3/shared";
import { isUnreachable, makeS3Client, type S3Settings } from "./s3_blob_store.ts";

/** The least size of an S3 part that is not the last. */
const S3_MIN_PART_BYTES = 5 * 1024 * 1024;

/** A {@linkcode MultipartStore} on S3 that can be shut down. */
export interface S3MultipartStore extends MultipartStore {
  /** Releases the HTTP connections. */
  close(): void;
}

/** Whether the store answered that it does not offer the operation (s3rver: ListParts, aborts). */
function isUnsupported(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } } | null;
  return e?.name === "NotImplemented" || e?.name === "MethodNotAllowed" ||
    e?.$metadata?.httpStatusCode === 405 ||
    e?.$metadata?.httpStatusCode === 501;
}

function storeError(error: unknown, what: string): unknown {
  if (error instanceof AppError) return error;
  if (isUnreachable(error)) {
    return new AppError(
      "service_unavailable",
      `Object storage cannot be reached (${what}); try again shortly`,
      {
        cause: error,
      },
    );
  }
  if (isUnsupported(error)) {
    return new AppError("not_implemented", `The object store does not offer ${what}`, { cause: error });
  }
  return error;
}

/** Creates a {@linkcode MultipartStore} on the bucket `settings` names; nothing connects until first use. */
export function createS3MultipartStore(settings: S3Settings): S3MultipartStore {
  const client = makeS3Client(settings, settings.endpoint);
  const signer = settings.publicEndpoint && settings.publicEndpoint !== settings.endpoint
    ? makeS3Client(settings, settings.publicEndpoint)
    : client;
  const Bucket = settings.bucket;
  const send = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (error) {
      throw storeError(error, what);
    }
  };
  const lifetime = (expiresIn: number) => Math.max(1, Math.floor(expiresIn));

  return {
    minPartBytes: S3_MIN_PART_BYTES,

    async create(key, options) {
      const out = await send(
        "multipart upload creation",
        () =>
          client.send(
            new CreateMultipartUploadCommand({ Bucket, Key: key, ContentType: options?.contentType }),
          ),
      );
      if (!out.UploadId) throw new Error(`S3 CreateMultipartUpload of "${key}" returned no UploadId`);
      return out.UploadId;
    },

    async uploadPart(key, uploadId, number, bytes) {
      const out = await send("part upload", () =>
        client.send(
          new UploadPartCommand({
            Bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: number,
            Body: bytes,
            ContentLength: bytes.byteLength,
          }),
        ));
      return out.ETag ?? "";
    },

    async listParts(key, uploadId) {
      const parts: StoredPart[] = [];
      let PartNumberMarker: string | undefined;
      for (;;) {
        const out = await send(
          "ListParts",
          () => client.send(new ListPartsCommand({ Bucket, Key: key, UploadId: uploadId, PartNumberMarker })),
        );
        for (const part of out.Parts ?? []) {
          if (part.PartNumber === undefined) continue;
          parts.push({ number: part.PartNumber, etag: part.ETag ?? "", size: part.Size ?? 0 });
        }
        if (!out.IsTruncated || !out.NextPartNumberMarker) break;
        PartNumberMarker = out.NextPartNumberMarker;
      }
      return parts.sort((a, b) => a.number - b.number);
    },

    async complete(key, uploadId, parts) {
      await send("multipart upload completion", () =>
        client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: {
              Parts: [...parts].sort((a, b) => a.number - b.number).map((p) => ({
                PartNumber: p.number,
                ETag: p.etag,
              })),
            },
          }),
        ));
    },

    async abort(key, uploadId) {
      await send(
        "aborting multipart uploads",
        () => client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId })),
      );
    },

    async presignPut(key, expiresIn) {
      return await getSignedUrl(signer, new PutObjectCommand({ Bucket, Key: key }), {
        expiresIn: lifetime(expiresIn),
      });
    },

    async presignPart(key, uploadId, number, expiresIn) {
      const command = new UploadPartCommand({ Bucket, Key: key, UploadId: uploadId, PartNumber: number });
      return await getSignedUrl(signer, command, { expiresIn: lifetime(expiresIn) });
    },

    close() {
      client.destroy();
      if (signer !== client) signer.destroy();
    },
  };
}
