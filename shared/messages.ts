/**
 * Every message that crosses the broker, each defined once: a versioned zod schema, its type, and its queue.
 * Consumers parse with these schemas at their edge.
 */
import { z } from "zod";
import { JobOutput } from "./job.ts";
import { ConversionOptions } from "./options.ts";

/** The queue conversion tasks travel on, from Upload to Convert. */
export const TASK_QUEUE = "vmp3.tasks.v1";
/** The queue job events travel on, from Convert to Metadata. */
export const EVENT_QUEUE = "vmp3.events.v1";

/** Asks a Convert worker to turn one stored video into an MP3. */
export const ConversionRequested = z.object({
  type: z.literal("conversion.requested"),
  version: z.literal(1),
  jobId: z.uuid(),
  inputKey: z.string().min(1),
  outputKey: z.string().min(1),
  filename: z.string(),
  options: ConversionOptions,
  requestedAt: z.iso.datetime(),
});
/** Asks a Convert worker to turn one stored video into an MP3. */
export type ConversionRequested = z.infer<typeof ConversionRequested>;

const eventBase = { version: z.literal(1), jobId: z.uuid(), at: z.iso.datetime() };

/** What happened to a job: as Convert reports it to Metadata, or as a client asked (cancel, retry). */
export const JobEvent = z.discriminatedUnion("type", [
  // duration: absent where the input does not state it (a WebM recorded as a stream).
  z.object({ type: z.literal("job.started"), ...eventBase, duration: z.number().nonnegative().optional() }),
  z.object({
    type: z.literal("job.progress"),
    ...eventBase,
    progress: z.number().min(0).max(1),
    /** Conversion speed as a multiple of real time. */
    speed: z.number().nonnegative().optional(),
    /** Seconds until the conversion is expected to end. */
    eta: z.number().nonnegative().optional(),
  }),
  z.object({ type: z.literal("job.done"), ...eventBase, output: JobOutput }),
  z.object({
    type: z.literal("job.failed"),
    ...eventBase,
    error: z.object({ code: z.string(), message: z.string() }),
  }),
  // Not from Convert: a client's DELETE of an unfinished job (Metadata records it; workers hear of it by broadcast).
  z.object({ type: z.literal("job.cancelled"), ...eventBase }),
  // Not from Convert: a client's retry of a failed job, which is queued again.
  z.object({ type: z.literal("job.retried"), ...eventBase }),
]);
/** What happened to a job, as Convert reports it to Metadata. */
export type JobEvent = z.infer<typeof JobEvent>;

/** The task that asks for job `jobId`'s conversion. */
export function conversionTask(
  jobId: string,
  filename: string,
  options: ConversionOptions,
  now: Date,
): ConversionRequested {
  return {
    type: "conversion.requested",
    version: 1,
    jobId,
    ...jobKeys(jobId),
    filename,
    options,
    requestedAt: now.toISOString(),
  };
}

/** The deterministic storage keys of a job's files: a redelivered task overwrites, never duplicates. */
export function jobKeys(jobId: string): { inputKey: string; outputKey: string } {
  return { inputKey: `inputs/${jobId}`, outputKey: `outputs/${jobId}.mp3` };
}

/** Where a task ends after its deliveries ran out (its worker died each time): Metadata fails its job. */
export const DEAD_TASK_QUEUE = `${TASK_QUEUE}.dead`;

/** The fanout exchange cancel notices travel on, to every Convert worker (see {@linkcode JobCancel}). */
export const CANCEL_EXCHANGE = "vmp3.cancel.v1";

/**
 * Tells every Convert worker that job `jobId` was cancelled: one converting it stops, removes what it wrote and
 * acks the task; one that gets its task later skips it. Published only once the job is recorded as cancelled.
 */
export const JobCancel = z.object({
  type: z.literal("job.cancel"),
  version: z.literal(1),
  jobId: z.uuid(),
  at: z.iso.datetime(),
});
/** Tells every Convert worker that job `jobId` was cancelled. */
export type JobCancel = z.infer<typeof JobCancel>;

/** The queue webhook deliveries wait on inside Metadata (see metadata/webhook_delivery.ts). */
export const WEBHOOK_QUEUE = "vmp3.webhooks.v1";

/**
 * One attempt, due at `notBefore`, to POST one signed webhook to one URL. A failed attempt is acked and published
 * again with the next attempt's number and time; the secret is not in the message: it is looked up when sending.
 */
export const WebhookDelivery = z.object({
  type: z.literal("webhook.delivery"),
  version: z.literal(1),
  /** The webhook-id header, the same on every attempt. */
  id: z.string().min(1).max(100),
  jobId: z.uuid(),
  /** job.created, job.progress, job.done, job.failed or job.cancelled. */
  event: z.string(),
  url: z.url({ protocol: /^https?$/ }),
  /** The exact JSON body, so that every attempt sends (and signs) the same bytes. */
  body: z.string(),
  /** Which attempt this is, from 1. */
  attempt: z.number().int().min(1),
  notBefore: z.iso.datetime().optional(),
});
/** One attempt to POST one signed webhook to one URL. */
export type WebhookDelivery = z.infer<typeof WebhookDelivery>;

/** The event that fails job `jobId` with `error` (as Upload records it when a job cannot go on). */
export function jobFailed(jobId: string, error: { code: string; message: string }, now: Date): JobEvent {
  return {
    type: "job.failed",
    version: 1,
    jobId,
    at: now.toISOString(),
    error: { code: error.code, message: error.message },
  };
}
