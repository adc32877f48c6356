/**
 * The error vocabulary of vmp3. Every error that reaches a client is an {@linkcode AppError} with a code from
 * {@linkcode ERROR_STATUS}, answered as `{"error":{"code","message"}}`.
 */
import { z } from "zod";

/** Each error code and the HTTP status it answers with. */
export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_option: 400,
  not_found: 404,
  request_timeout: 408,
  not_ready: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
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
