/**
 * The error vocabulary of vmp3. Every error that reaches a client is an {@linkcode AppError} with a code from
 * {@linkcode ERROR_STATUS}, answered as `{"error":{"code","message"}}`.
 */
import { z } from "zod";

/** Each error code and the HTTP status it answers with. */
export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_option: 400,
  /** A URL to import from (or to deliver webhooks to) that vmp3 will not reach: a private address, say. */
  url_not_allowed: 400,
  /** No API key, or one that is not valid. */
  unauthorized: 401,
  /** The key may not do this (an admin route, say). */
  forbidden: 403,
  not_found: 404,
  request_timeout: 408,
  not_ready: 409,
  /** The request conflicts with the resource's state: a tus offset that is not the upload's, a job not failed. */
  conflict: 409,
  /** An Idempotency-Key already used with a different request. */
  idempotency_key_reused: 422,
  /** The job's files were removed when it expired. */
  expired: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  /** A tus request with a Tus-Resumable version this server does not speak. */
  precondition_failed: 412,
  /** The URL to import from answered with an error, or could not be reached. */
  url_fetch_failed: 422,
  /** Too many requests for the key's rate limit; see Retry-After. */
  rate_limited: 429,
  /** The key's quota (bytes stored, jobs at once) is used up. */
  quota_exceeded: 429,
  /** What the request asks for is not available in this deployment (direct S3 uploads on a local folder, say). */
  not_implemented: 501,
  no_audio_stream: 422,
  unsupported_input: 422,
  corrupt_input: 422,
  input_too_long: 422,
  too_many_streams: 422,
  conversion_failed: 500,
  internal: 500,
  upstream_unavailable: 502,
  service_unavailable: 503,
  still_converting: 504,
} as const;

/** A machine-readable error code. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** Codes caused by the input itself: a job failing with one is final and never retried. */
export const INPUT_ERROR_CODES: readonly ErrorCode[] = [
  "no_audio_stream",
  "unsupported_input",
  "corrupt_input",
  "input_too_long",
  "too_many_streams",
];

/** The body of every error response. */
export const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
/** The body of every error response. */
export type ErrorBody = z.infer<typeof ErrorBody>;

/** An error with a code a client can act on. */
export class AppError extends Error {
  override name = "AppError";
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  /** The HTTP status this error answers with. */
  get status(): number {
    return ERROR_STATUS[this.code];
  }
  /** The JSON body this error answers with. */
  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Whether `code` is one of the codes of {@linkcode ERROR_STATUS}. */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_STATUS, code);
}

/** The HTTP status for an error code, 500 for an unknown one. */
export function statusOf(code: string): number {
  return isErrorCode(code) ? ERROR_STATUS[code] : 500;
}
