/**
 * The one way a job event is stored: applied to the job, a finished conversion offered to the cache, and every
 * change pushed: an entry in the job's event log (what SSE clients read) and its webhooks queued.
 */
import {
  applyEvent,
  isFinal,
  type Job,
  type JobEvent,
  type JobEventLog,
  type JobStore,
  type OutputCache,
  publicJob,
} from "@vmp3/shared";
import type { WebhookPublisher } from "./webhook_delivery.ts";

/** Where the changes of jobs are pushed. */
export interface ChangeSink {
  /**
   * Every change of a job, in order, for SSE clients. Absent only for callers not wired to it yet: their changes
   * reach SSE clients by the stream's store check at each keep-alive.
   */
  log?: JobEventLog;
  /** Queues the webhooks of a change; absent: no webhooks. */
  webhooks?: WebhookPublisher;
}

/** Where events are recorded. */
export interface EventSink extends ChangeSink {
  store: JobStore;
  cache: OutputCache;
}

/** What a change did to a job, as its log entry names it: "job.created", "job.progress", "job.done"... */
export function changeType(before: Job | null, after: Job): string {
  if (!before) return "job.created";
  if (after.status !== before.status) {
    return after.status === "converting" ? "job.started" : `job.${after.status}`;
  }
  return after.status === "converting" ? "job.progress" : "job.changed";
}

/**
 * Pushes one change of a job (`before` null: it was just created): appends it to the job's event log and queues
 * its webhooks. Never throws: the change is stored already, and a failure here is logged, not undone.
 */
export async function recordChange(sink: ChangeSink, before: Job | null, after: Job): Promise<void> {
  try {
    const entry = { type: changeType(before, after), job: publicJob(after) };
    await sink.log?.append(after.id, entry, { final: isFinal(after.status) });
  } catch (error) {
    console.error(
      `Logging a change of job ${after.id} failed; SSE clients see it on their next check:`,
      error,
    );
  }
  await sink.webhooks?.publish(before, after).catch((error: unknown) => {
    console.error(`Queueing the webhooks of job ${after.id} failed:`, error);
  });
}

/**
 * Applies `event` to its job, forward only. When a job that asked for a cacheable output is done, its output is
 * remembered (again, harmlessly, on a repeated event). A change is pushed (see recordChange); an event that
 * changes nothing pushes nothing. Returns the job, or null if there is none.
 */
export async function recordEvent(sink: EventSink, event: JobEvent): Promise<Job | null> {
  const { store, cache } = sink;
  // The change may run more than once (compare-and-set retries): the last run is the one stored.
  let before: Job | null = null;
  const job = await store.update(event.jobId, (job) => {
    const next = applyEvent(job, event);
    before = next === job ? null : job;
    return next;
  });
  if (
    job && event.type === "job.done" && job.status === "done" && job.cacheKey && !job.cached && job.output
  ) {
    await cache.remember(job.cacheKey, job.output, job.id);
  }
  if (job && before) await recordChange(sink, before, job);
  return job;
}
