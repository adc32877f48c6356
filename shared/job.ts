/** A conversion job: its record, its states, and the one rule for moving between them. */
import { z } from "zod";
import type { JobEvent } from "./messages.ts";

/** Where a job is in its life. Moves only forward: queued -> converting -> done | failed. */
export const JobStatus = z.enum(["queued", "converting", "done", "failed"]);
/** Where a job is in its life. */
export type JobStatus = z.infer<typeof JobStatus>;

const RANK: Record<JobStatus, number> = { queued: 0, converting: 1, done: 2, failed: 2 };

/** Whether a job in `status` will never change again. */
export function isFinal(status: JobStatus): boolean {
  return RANK[status] === 2;
}

/** Facts about the MP3 a job produced. */
export const JobOutput = z.object({
  key: z.string(),
  size: z.number().int().nonnegative(),
  duration: z.number().nonnegative(),
  bitrate: z.number().int().nonnegative(),
});
/** Facts about the MP3 a job produced. */
export type JobOutput = z.infer<typeof JobOutput>;

/** A job's id: a UUID the Upload service makes. */
export const JobId = z.uuid();

/** A job as stored by Metadata and shown by the Gateway. */
export const Job = z.object({
  id: JobId,
  status: JobStatus,
  progress: z.number().min(0).max(1),
  input: z.object({
    filename: z.string(),
    size: z.number().int().nonnegative(),
    duration: z.number().nonnegative().optional(),
  }),
  output: JobOutput.optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
/** A job as stored by Metadata and shown by the Gateway. */
export type Job = z.infer<typeof Job>;

/** A new job, as the Upload service asks Metadata to record it. */
export const NewJob = Job.pick({ id: true, input: true });
/** A new job, as the Upload service asks Metadata to record it. */
export type NewJob = z.infer<typeof NewJob>;

/** The record of a job just accepted. */
export function createJob(init: NewJob, now: Date): Job {
  const at = now.toISOString();
  return { ...init, status: "queued", progress: 0, createdAt: at, updatedAt: at };
}

/**
 * Applies an event to a job, forward only: a late or repeated event never moves a job back, and a final job
 * never changes. Returns the same object when the event changes nothing.
 */
export function applyEvent(job: Job, event: JobEvent): Job {
  if (event.jobId !== job.id || isFinal(job.status)) return job;
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
      return { ...job, status: "converting", progress: Math.min(event.progress, 1), updatedAt };
    case "job.done":
      return { ...job, status: "done", progress: 1, output: event.output, error: undefined, updatedAt };
    case "job.failed":
      return { ...job, status: "failed", error: event.error, updatedAt };
    default: {
      const never: never = event;
      throw new Error(`Unknown job event ${JSON.stringify(never)}`);
    }
  }
}

/** The job as the public API shows it (the storage key of the output is internal). */
export function publicJob(job: Job): Omit<Job, "output"> & { output?: Omit<JobOutput, "key"> } {
  const { output, ...rest } = job;
  if (!output) return rest;
  const { key: _key, ...shown } = output;
  return { ...rest, output: shown };
}
