/** Metadata's consumer of job events: the only path by which Convert's reports reach job state. */
import { applyEvent, type JobEvent, type JobStore, type Queue, type Subscription } from "@vmp3/shared";

/** Applies each event from `events` to `store`, forward only; an event is acked only once it is stored. */
export function startEventConsumer(
  events: Queue<JobEvent>,
  store: JobStore,
  options: { prefetch?: number } = {},
): Promise<Subscription> {
  return events.consume(async (event) => {
    const job = await store.update(event.jobId, (job) => applyEvent(job, event));
    if (!job) console.error(`Dropping ${event.type} for unknown job ${event.jobId}`);
    return "ack";
  }, { prefetch: options.prefetch ?? 16 });
}
