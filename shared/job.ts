/** A conversion job: its record, its states, and the one rule for moving between them. */
import { z } from "zod";
import type { JobEvent } from "./messages.ts";
import { ConversionOptions } from "./options.ts";

/**
 * Where a job is in its life. Moves only forward: queued -> converting -> done | failed | cancelled (a client's
 * DELETE of an unfinished job). A failed job may be retried, which starts it again as queued.
 */
export const JobStatus = z.enum(["queued", "converting", "done", "failed", "cancelled"]);
/** Where a job is in its life. */
export type JobStatus = z.infer<typeof JobStatus>;

const RANK: Record<JobStatus, number> = { queued: 0, converting: 1, done: 2, failed: 2, cancelled: 2 };

/** Whether a job in `status` will never change again. */
export function isFinal(status: JobStatus): boolean {
  return RANK[status] === 2;
}

/** Facts about the MP3 a job produced. */
export const JobOutput = z.object({
  /** Where the MP3 is stored; internal, never shown. A cached job shares the key of the job that made it. */
  key: z.string(),
  codec: z.literal("mp3"),
  size: z.number().int().nonnegative(),
  /** Seconds. */
  duration: z.number().nonnegative(),
  /** Average bitrate of the audio, in bit/s. */
  bitrate: z.number().int().nonnegative(),
  /** LAME VBR quality (0-9), where the MP3 was encoded with variable bitrate. */
  quality: z.number().int().min(0).max(9).optional(),
  sampleRate: z.number().int().positive(),
  channels: z.number().int().positive(),
  /** Hex sha256 of the MP3 file. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** "copy": the source's MP3 audio was copied as it was; "encode": it was encoded. */
  method: z.enum(["copy", "encode"]),
});
/** Facts about the MP3 a job produced. */
export type JobOutput = z.infer<typeof JobOutput>;

/** A job's id: a UUID the Upload service makes. */
export const JobId = z.uuid();

/** One webhook delivery of a job (one event to one URL), as the job shows it. */
export const WebhookDeliveryRecord = z.object({
  /** The webhook-id header: the same on every attempt, so the receiver can drop repeats. */
  id: z.string(),
  /** job.created, job.progress, job.done, job.failed or job.cancelled. */
  event: z.string(),
  url: z.string(),
  /** Attempts made so far. */
  attempts: z.number().int().nonnegative(),
  status: z.enum(["pending", "delivered", "failed"]),
  lastStatusCode: z.number().int().optional(),
  lastError: z.string().optional(),
  /** When the next attempt is due, while pending after a failed one. */
  nextAttemptAt: z.iso.datetime().optional(),
  updatedAt: z.iso.datetime(),
});
/** One webhook delivery of a job (one event to one URL), as the job shows it. */
export type WebhookDeliveryRecord = z.infer<typeof WebhookDeliveryRecord>;

/** A job as stored by Metadata and shown by the Gateway. */
export const Job = z.object({
  id: JobId,
  status: JobStatus,
  progress: z.number().min(0).max(1),
  input: z.object({
    filename: z.string(),
    size: z.number().int().nonnegative(),
    duration: z.number().nonnegative().optional(),
    /** Hex sha256 of the uploaded bytes, computed while they streamed in. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  }),
  /**
   * The id of the API key that made the job; only that key sees it. Absent for jobs made where the API runs open
   * (embedded dev mode without keys).
   */
  owner: z.string().optional(),
  /** Where job.created/progress/done/failed are also POSTed, signed (Standard Webhooks). */
  webhookUrl: z.url({ protocol: /^https?$/ }).optional(),
  /** The batch the job was uploaded in, several files in one request. */
  batchId: z.uuid().optional(),
  /** When the job's files (its video and MP3) are removed; after that its download answers 410 expired. */
  expiresAt: z.iso.datetime().optional(),
  /** When the job's files were removed because it expired. */
  expiredAt: z.iso.datetime().optional(),
  /** The job's webhook deliveries, the last 20 (see metadata/webhook_delivery.ts); never holds a secret. */
  webhooks: z.object({ deliveries: z.array(WebhookDeliveryRecord) }).optional(),
  /** The options the job was asked with (absent ones take their defaults). */
  options: ConversionOptions.optional(),
  /** Conversion speed as a multiple of real time, while converting. */
  speed: z.number().nonnegative().optional(),
  /** Seconds until the conversion is expected to end, while converting. */
  eta: z.number().nonnegative().optional(),
  /** The content-cache key of the output this job asks for (internal, never shown). */
  cacheKey: z.string().optional(),
  /** True when the job was done at once from an earlier job's identical output (same bytes, same options). */
  cached: z.boolean().optional(),
  output: JobOutput.optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  /** How many times a client retried the job after it failed. */
  retries: z.number().int().positive().optional(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
/** A job as stored by Metadata and shown by the Gateway. */
export type Job = z.infer<typeof Job>;

/** A new job, as the Upload service asks Metadata to record it. */
export const NewJob = Job.pick({
  id: true,
  input: true,
  options: true,
  cacheKey: true,
  owner: true,
  webhookUrl: true,
  batchId: true,
  expiresAt: true,
});
/** A new job, as the Upload service asks Metadata to record it. */
export type NewJob = z.infer<typeof NewJob>;

/**
 * The record of a job just accepted: queued, or already done when an identical earlier output (`cached`) is
 * reused.
 */
export function createJob(init: NewJob, now: Date, cached?: JobOutput): Job {
  const at = now.toISOString();
  if (cached) {
    return {
      ...init,
      status: "done",
      progress: 1,
      cached: true,
      output: cached,
      createdAt: at,
      updatedAt: at,
    };
  }
  return { ...init, status: "queued", progress: 0, createdAt: at, updatedAt: at };
}

/**
 * Applies an event to a job, forward only: a late or repeated event never moves a job back, and a final job
 * never changes. Returns the same object when the event changes nothing.
 */
export function applyEvent(job: Job, event: JobEvent): Job {
  if (event.jobId !== job.id) return job;
  if (event.type === "job.retried") {
    // The one way back: a failed job starts again, as new (its output-cache key stays).
    if (job.status !== "failed" || job.expiredAt) return job;
    const { error: _error, ...rest } = withoutProgressDetail(job);
    return { ...rest, status: "queued", progress: 0, retries: (job.retries ?? 0) + 1, updatedAt: event.at };
  }
  if (isFinal(job.status)) return job;
  const updatedAt = event.at;
  switch (event.type) {
    case "job.started":
      // Events may be applied out of order: a progress that came first has already moved the job on, but the
      // duration only this event carries is still wanted.
      if (job.status !== "queued" && job.input.duration !== undefined) return job;
      return {
        ...job,
        status: "converting",
        input: { ...job.input, duration: event.duration },
        updatedAt: job.status === "queued" ? updatedAt : job.updatedAt,
      };
    case "job.progress":
      if (event.progress <= job.progress) return job;
      return {
        ...job,
        status: "converting",
        progress: Math.min(event.progress, 1),
        speed: event.speed,
        eta: event.eta,
        updatedAt,
      };
    case "job.done":
      return { ...withoutProgressDetail(job), status: "done", progress: 1, output: event.output, updatedAt };
    case "job.failed":
      return { ...withoutProgressDetail(job), status: "failed", error: event.error, updatedAt };
    case "job.cancelled":
      return { ...withoutProgressDetail(job), status: "cancelled", updatedAt };
    default: {
      const never: never = event;
      throw new Error(`Unknown job event ${JSON.stringify(never)}`);
    }
  }
}

function withoutProgressDetail(job: Job): Job {
  const { speed: _speed, eta: _eta, ...rest } = job;
  return rest;
}

/** The job as the public API shows it (the output's storage key, the cache key and the owner are internal). */
export function publicJob(
  job: Job,
): Omit<Job, "output" | "cacheKey" | "owner"> & { output?: Omit<JobOutput, "key"> } {
  const { output, cacheKey: _cacheKey, owner: _owner, ...rest } = job;
  if (!output) return rest;
  const { key: _key, ...shown } = output;
  return { ...rest, output: shown };
}
