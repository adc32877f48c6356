/**
 * @module
 * The vmp3 domain: message, job, option and config schemas, error types, and the interfaces adapters implement.
 * No I/O happens here.
 */
export * from "./api_key.ts";
export * from "./config.ts";
export * from "./digest.ts";
export * from "./errors.ts";
export * from "./job.ts";
export * from "./messages.ts";
export * from "./options.ts";
export * from "./ports.ts";
export * from "./http.ts";
export * from "./ip_ranges.ts";
export * from "./webhook_signature.ts";
