/** The one way a job event is stored: applied to the job, and a finished conversion offered to the cache. */
import { applyEvent, type Job, type JobEvent, type JobStore, type OutputCache } from "@vmp3/shared";

/** Where events are recorded. */
export interface EventSink {
  store: JobStore;
  cache: OutputCache;
}

/**
 * Applies `event` to its job, forward only. When a job that asked for a cacheable output is done, its output is
 * remembered (again, harmlessly, on a repeated event). Returns the job, or null if there is none.
 */
export async function recordEvent({ store, cache }: EventSink, event: JobEvent): Promise<Job | null> {
  const job = await store.update(event.jobId, (job) => applyEvent(job, event));
  if (
    job && event.type === "job.done" && job.status === "done" && job.cacheKey && !job.cached && job.output
  ) {
    await cache.remember(job.cacheKey, job.output, job.id);
  }
  return job;
}
