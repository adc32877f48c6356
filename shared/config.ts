/**
 * Configuration from the environment, parsed once with zod. A bad value stops the service at start with a message
 * naming the variable. Each service's schema is built here from shared pieces, so no service copies another's.
 */
import { z } from "zod";
import { parseCidrList } from "./ip_ranges.ts";
import { webhookSecretKey } from "./webhook_signature.ts";

const url = (protocols: string[]) =>
  z.string().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `must be a ${protocols.map((p) => `${p}//`).join(" or ")} URL`);

const port = (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback);
const bool = (fallback: boolean) =>
  z.enum(["true", "false", "1", "0"]).default(fallback ? "true" : "false").transform((v) =>
    v === "true" || v === "1"
  );
const bytes = (fallback: number) => z.coerce.number().int().positive().default(fallback);

/** Settings of an S3-compatible store. */
export const S3Env = z.object({
  S3_ENDPOINT: url(["http:", "https:"]).optional(),
  /** Where clients reach the store, for presigned download URLs; defaults to S3_ENDPOINT. */
  S3_PUBLIC_ENDPOINT: url(["http:", "https:"]).optional(),
  S3_BUCKET: z.string().min(3),
  S3_REGION: z.string().default("us-east-1"),
  S3_ACCESS_KEY_ID: z.string().min(1),
  S3_SECRET_ACCESS_KEY: z.string().min(1),
  S3_FORCE_PATH_STYLE: bool(true),
  /** "when_required" for stores that keep aws-chunked framing of streamed uploads (s3rver, some MinIO, R2). */
  S3_CHECKSUM: z.enum(["when_supported", "when_required"]).default("when_required"),
  /** Lifetime of presigned download URLs, in seconds. */
  S3_PRESIGN_SECONDS: z.coerce.number().int().min(1).max(604800).default(300),
  /** How many 8 MiB part buffers all uploads of a process share: their memory is capped at that. */
  S3_UPLOAD_BUFFERS: z.coerce.number().int().min(1).max(1024).default(12),
});
/** Settings of an S3-compatible store. */
export type S3Env = z.infer<typeof S3Env>;

const listen = (fallbackPort: number) => ({
  HOST: z.string().default("127.0.0.1"),
  PORT: port(fallbackPort),
});

/** Ranges of addresses reached although not public: CIDRs separated by commas (empty: none). */
const cidrList = () =>
  z.string().default("").transform((text, ctx) => {
    try {
      return parseCidrList(text);
    } catch (error) {
      ctx.addIssue({
        code: "custom",
        message: `must be CIDR ranges separated by commas: ${(error as Error).message}`,
      });
      return z.NEVER;
    }
  });

/** Who may call the public API, and its download links. */
export const AccessEnv = z.object({
  /** "required": every call needs an API key (Authorization: Bearer); "open": a call without one is let in. */
  AUTH: z.enum(["required", "open"]).default("required"),
  /** Signs download links (32+ characters); unset, a random one is made at start (links die with the process). */
  DOWNLOAD_LINK_SECRET: z.string().min(32).optional(),
  /** How long a download link works, in seconds. */
  DOWNLOAD_LINK_SECONDS: z.coerce.number().int().min(1).max(7 * 86_400).default(900),
});

/** The Gateway: the one public API. */
export const GatewayEnv = z.object({
  ...listen(8080),
  UPLOAD_URL: url(["http:", "https:"]),
  METADATA_URL: url(["http:", "https:"]),
  ...AccessEnv.shape,
});
/** The Gateway: the one public API. */
export type GatewayEnv = z.infer<typeof GatewayEnv>;

/** Limits on what an upload may be. */
export const UploadLimitsEnv = z.object({
  /** The largest accepted upload, in bytes (default 2 GiB). */
  MAX_UPLOAD_BYTES: bytes(2 * 1024 ** 3),
  /** A client must send UPLOAD_STALL_MIN_BYTES in every this many seconds of waiting for it, or gets 408. */
  UPLOAD_STALL_SECONDS: z.coerce.number().positive().default(30),
  UPLOAD_STALL_MIN_BYTES: bytes(16 * 1024),
});

/** Import from URL (upload/url_import.ts): what the fetching client may reach, and its time limits. */
export const ImportEnv = z.object({
  /**
   * Ranges imports may reach although they are not public, as comma-separated CIDRs ("10.20.0.0/16,fd00::/8"):
   * for tests and private deployments. Empty (the default): public addresses only.
   */
  IMPORT_ALLOW_CIDRS: cidrList(),
  /** The most one import may take, download included, in seconds. */
  IMPORT_TIMEOUT_SECONDS: z.coerce.number().positive().default(600),
  /** Resolving, connecting to and TLS with the remote host, in seconds. */
  IMPORT_CONNECT_TIMEOUT_SECONDS: z.coerce.number().positive().default(10),
  /** From the request sent to the first byte of the answer, in seconds. */
  IMPORT_FIRST_BYTE_SECONDS: z.coerce.number().positive().default(30),
  /** The longest the remote host may send nothing, mid-download, in seconds. */
  IMPORT_STALL_SECONDS: z.coerce.number().positive().default(30),
});
/** Import from URL settings. */
export type ImportEnv = z.infer<typeof ImportEnv>;

/** The reconciler, which publishes the task of a job recorded but never published (see upload/reconciler.ts). */
export const ReconcileEnv = z.object({
  /** Seconds between two passes. */
  RECONCILE_SECONDS: z.coerce.number().positive().default(30),
  /** How long a recorded job may wait for its task before the reconciler publishes it, in seconds. */
  RECONCILE_GRACE_SECONDS: z.coerce.number().positive().default(60),
});

/** The Upload service: stores videos and publishes tasks. */
/** How long a job's files are kept. */
export const RetentionEnv = z.object({
  /** A job's video and MP3 are removed this long after it was created (then its download answers 410). */
  FILES_TTL_SECONDS: z.coerce.number().int().min(1).default(7 * 86_400),
  /** How often the sweeper looks for expired jobs, in seconds. */
  SWEEP_SECONDS: z.coerce.number().positive().default(60),
});

/** Resumable (tus) and direct-to-S3 uploads at /v1/uploads/ (upload/tus.ts, upload/direct_upload.ts). */
export const ResumableUploadEnv = z.object({
  /** An unfinished upload is removed (and then answers 404) this long after its creation, in seconds. */
  UPLOAD_EXPIRY_SECONDS: z.coerce.number().int().min(60).default(86_400),
  /** How often the sweep of expired unfinished uploads runs, in seconds. */
  UPLOAD_SWEEP_SECONDS: z.coerce.number().positive().default(600),
  /** The part size tus uploads are stored in (at least 5 MiB): the memory of each PATCH in progress. */
  TUS_PART_BYTES: z.coerce.number().int().min(5 * 1024 * 1024).max(512 * 1024 * 1024).default(
    8 * 1024 * 1024,
  ),
  /** Lifetime of the presigned URLs of direct uploads, in seconds. */
  DIRECT_UPLOAD_URL_SECONDS: z.coerce.number().int().min(60).max(604_800).default(3600),
});

export const UploadEnv = z.object({
  ...listen(8081),
  METADATA_URL: url(["http:", "https:"]),
  RABBITMQ_URL: url(["amqp:", "amqps:"]),
  ...UploadLimitsEnv.shape,
  ...RetentionEnv.shape,
  ...ImportEnv.shape,
  ...ReconcileEnv.shape,
  ...S3Env.shape,
  ...ResumableUploadEnv.shape,
  /**
   * Test only: the service exits (code 70) after recording the job of a file of exactly this name and before
   * publishing its task, as a crash there would. Never set it outside tests.
   */
  UPLOAD_TEST_CRASH_FILENAME: z.string().optional(),
});
/** The Upload service: stores videos and publishes tasks. */
export type UploadEnv = z.infer<typeof UploadEnv>;

/** Webhooks (metadata/webhook_delivery.ts): how they are signed, and when a failed one is tried again. */
export const WebhookEnv = z.object({
  /**
   * The deployment's signing secret, `whsec_` and base64 (at least 16 bytes), as Standard Webhooks receivers take
   * it. Unset: one is made at each start (signatures then stop verifying after a restart).
   */
  WEBHOOK_SECRET: z.string().refine((value) => webhookSecretKey(value) !== null, {
    message: "must be whsec_ followed by at least 16 bytes in base64",
  }).optional(),
  /** Waits before the 2nd, 3rd... attempts of a webhook, in seconds; after the last, the delivery fails. */
  WEBHOOK_RETRY_DELAYS_SECONDS: z.lazy(() => secondsList("5,30,120,600,3600")),
  /**
   * Webhooks reach only public addresses, checked at connect time; these ranges are let through too (tests,
   * private deployments). Empty (the default): public addresses only.
   */
  WEBHOOK_ALLOW_CIDRS: cidrList(),
});
/** Webhook settings. */
export type WebhookEnv = z.infer<typeof WebhookEnv>;

/** The Metadata service: the one writer of job state. */
export const MetadataEnv = z.object({
  ...listen(8082),
  REDIS_URL: url(["redis:", "rediss:"]),
  RABBITMQ_URL: url(["amqp:", "amqps:"]),
  // The durable record of each job is kept in the bucket beside its files (jobs/{id}.json).
  ...S3Env.shape,
  ...WebhookEnv.shape,
});
/** The Metadata service: the one writer of job state. */
export type MetadataEnv = z.infer<typeof MetadataEnv>;

/** Limits and tools of a Convert worker. */
export const ConvertLimitsEnv = z.object({
  FFMPEG_PATH: z.string().default("ffmpeg"),
  FFPROBE_PATH: z.string().default("ffprobe"),
  /** How many conversions one worker runs at once. */
  CONVERT_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(1),
  /** The longest accepted input, in seconds (default 6 h). */
  MAX_DURATION_SECONDS: z.coerce.number().positive().default(6 * 3600),
  /** The most streams an input may have. */
  MAX_STREAMS: z.coerce.number().int().positive().default(16),
  /** Wall-clock cap of one ffmpeg run, in seconds; keep it under the broker's consumer timeout (30 min). */
  FFMPEG_TIMEOUT_SECONDS: z.coerce.number().positive().default(20 * 60),
  /** Address space of each ffmpeg/ffprobe run (its rlimit), in MiB. */
  FFMPEG_MAX_MEMORY_MB: z.coerce.number().int().min(256).default(2048),
  /** The largest file an ffmpeg run may write (its rlimit), in MiB. */
  FFMPEG_MAX_FILE_MB: z.coerce.number().int().min(1).default(2048),
  /** Open files of an ffmpeg run (its rlimit). */
  FFMPEG_MAX_OPEN_FILES: z.coerce.number().int().min(16).default(64),
});
/** Limits and tools of a Convert worker. */
export type ConvertLimitsEnv = z.infer<typeof ConvertLimitsEnv>;

/** A comma-separated list of waits in seconds ("1,2,5"), or "none". */
const secondsList = (fallback: string) =>
  z.string().default(fallback).refine(
    (value) => value.trim() === "none" || /^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$/.test(value),
    'must be seconds separated by commas (like "1,2,5"), or "none"',
  ).transform((value) => value.trim() === "none" ? [] : value.split(",").map(Number));

/** The share of the broker's consumer timeout that FFmpeg's cap and the retry waits may use together. */
export const BROKER_TIMEOUT_SHARE = 0.9;

/** Settings of a Convert worker in real mode (RabbitMQ), beyond its limits. */
export const ConvertWorkerEnv = z.object({
  /**
   * Waits between tries of a task after a passing failure (storage or the broker unreachable), in seconds; the
   * task stays in hand meanwhile. After the last one the job fails with service_unavailable.
   */
  CONVERT_RETRY_DELAYS_SECONDS: secondsList("1,2,5,10,30,60,60,60,60"),
  /**
   * On SIGTERM the worker takes no new task and lets the one in hand finish if it can within this many seconds;
   * otherwise it stops FFmpeg and hands the task back to the broker for another worker.
   */
  CONVERT_SHUTDOWN_GRACE_SECONDS: z.coerce.number().min(0).max(3600).default(25),
  /**
   * RabbitMQ's consumer_timeout, in seconds (its default is 30 minutes): the broker takes back a task held
   * longer and delivers it again. The worker refuses to start unless FFMPEG_TIMEOUT_SECONDS plus the waits of
   * CONVERT_RETRY_DELAYS_SECONDS fit in 90% of it, and it never holds a task longer than that 90%.
   */
  BROKER_CONSUMER_TIMEOUT_SECONDS: z.coerce.number().positive().default(1800),
  /**
   * TEST ONLY, unset in production: a worker that takes a task whose file has exactly this name exits at once
   * (code 70) after reporting it started, as a worker that crashes on a poison task would. Only the operator's
   * environment can turn it on; no request can.
   */
  CONVERT_TEST_CRASH_FILENAME: z.string().optional(),
});

/**
 * Why the worker's time limits do not fit the broker's consumer timeout (see BROKER_CONSUMER_TIMEOUT_SECONDS),
 * or null when they do.
 */
export function consumerTimeoutProblem(
  config: {
    FFMPEG_TIMEOUT_SECONDS: number;
    CONVERT_RETRY_DELAYS_SECONDS: number[];
    BROKER_CONSUMER_TIMEOUT_SECONDS: number;
  },
): string | null {
  const waits = config.CONVERT_RETRY_DELAYS_SECONDS.reduce((sum, s) => sum + s, 0);
  const total = config.FFMPEG_TIMEOUT_SECONDS + waits;
  const allowed = config.BROKER_CONSUMER_TIMEOUT_SECONDS * BROKER_TIMEOUT_SHARE;
  if (total <= allowed) return null;
  const share = `${BROKER_TIMEOUT_SHARE * 100}%`;
  const broker = config.BROKER_CONSUMER_TIMEOUT_SECONDS;
  return `FFMPEG_TIMEOUT_SECONDS (${config.FFMPEG_TIMEOUT_SECONDS} s) plus the waits of ` +
    `CONVERT_RETRY_DELAYS_SECONDS (${round(waits)} s) is ${round(total)} s, more than ${share} of ` +
    `BROKER_CONSUMER_TIMEOUT_SECONDS (${broker} s, so ${round(allowed)} s): RabbitMQ would take a long ` +
    `conversion back and run it twice. Lower them, or raise the broker's consumer_timeout and ` +
    `BROKER_CONSUMER_TIMEOUT_SECONDS with it`;
}

const round = (value: number) => Math.round(value * 1000) / 1000;

/** A Convert worker: runs FFmpeg on tasks. */
export const ConvertEnv = z.object({
  ...listen(8083),
  RABBITMQ_URL: url(["amqp:", "amqps:"]),
  /** The only folder the worker reads and writes: one subfolder per conversion, removed after. */
  WORK_DIR: z.string().min(1).default("/tmp/vmp3-convert"),
  ...ConvertLimitsEnv.shape,
  ...ConvertWorkerEnv.shape,
  ...S3Env.shape,
}).superRefine((config, ctx) => {
  // Zod runs this even when a variable failed its own check: then that failure is the one to report.
  if (ctx.issues.length > 0 || !Array.isArray(config.CONVERT_RETRY_DELAYS_SECONDS)) return;
  const problem = consumerTimeoutProblem(config);
  if (problem) ctx.addIssue({ code: "custom", message: problem, path: [] });
});
/** A Convert worker: runs FFmpeg on tasks. */
export type ConvertEnv = z.infer<typeof ConvertEnv>;

/** The embedded mode: all four services in one process, on local adapters. */
export const EmbeddedEnv = z.object({
  ...listen(8080),
  /** Where the embedded store keeps jobs, queues and files. */
  DATA_DIR: z.string().min(1).default(".data"),
  ...AccessEnv.shape,
  /** The embedded mode runs open unless told otherwise (it says so at start). */
  AUTH: z.enum(["required", "open"]).default("open"),
  ...RetentionEnv.shape,
  ...UploadLimitsEnv.shape,
  ...ImportEnv.shape,
  ...ReconcileEnv.shape,
  ...ConvertLimitsEnv.shape,
  ...WebhookEnv.shape,
});
/** The embedded mode: all four services in one process, on local adapters. */
export type EmbeddedEnv = z.infer<typeof EmbeddedEnv>;

/** A configuration that cannot be used, with every bad variable named. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Parses the variables `schema` names out of `env` (an object, or a getter such as `Deno.env.get`, so that only
 * those variables need --allow-env), ignoring others. Empty strings count as unset.
 * Throws a {@linkcode ConfigError} naming each bad variable.
 */
export function parseEnv<S extends z.ZodObject>(
  schema: S,
  env: Record<string, string | undefined> | ((name: string) => string | undefined),
): z.infer<S> {
  const read = typeof env === "function" ? env : (name: string) => env[name];
  const picked: Record<string, string> = {};
  for (const name of Object.keys(schema.shape)) {
    const value = read(name);
    if (value !== undefined && value !== "") picked[name] = value;
  }
  const result = schema.safeParse(picked);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    // A rule across several variables (no path) names them in its own message.
    if (issue.path.length === 0) return issue.message;
    const name = String(issue.path[0]);
    return picked[name] === undefined ? `"${name}" is required` : `"${name}" ${issue.message}`;
  });
  throw new ConfigError(`Invalid configuration: ${problems.join("; ")}`);
}
