/** Metadata's consumer of job events: the only path by which Convert's reports reach job state. */
import type { JobEvent, Outcome, Queue, Subscription } from "@vmp3/shared";
import { type EventSink, recordEvent } from "./record_event.ts";

/** Settings of the event consumer. */
export interface EventConsumerOptions {
  /** How many events are in hand at once. */
  prefetch?: number;
  /**
   * Waits between tries while the store fails. An event is held (not requeued, so it never burns its delivery
   * limit on a store outage) until one try succeeds; after the last wait it goes back to the queue.
   */
  retryDelaysMs?: number[];
}

const DEFAULT_DELAYS = [100, 250, 500, 1000, 2000, 5000, ...Array(55).fill(5000)]; // about 5 minutes in all

/**
 * Records each event from `events` (see recordEvent); an event is acked only once it is stored.
 *
 * Events of different jobs are recorded side by side, up to `prefetch`; those of one job one after another, in
 * the order they came. `applyEvent` is forward-only, but a job.done and a job.failed of one job (two deliveries of
 * its task) would otherwise be applied in whichever order their store calls end, and the first wins.
 */
export function startEventConsumer(
  events: Queue<JobEvent>,
  sink: EventSink,
  options: EventConsumerOptions = {},
): Promise<Subscription> {
  const delays = options.retryDelaysMs ?? DEFAULT_DELAYS;
  /** The last event of each job in hand: the next one of that job waits for it. */
  const inHand = new Map<string, Promise<unknown>>();
  return events.consume(async (event) => {
    const before = inHand.get(event.jobId);
    const mine = (async () => {
      await before?.catch(() => {});
      return await record(event);
    })();
    inHand.set(event.jobId, mine);
    try {
      return await mine;
    } finally {
      if (inHand.get(event.jobId) === mine) inHand.delete(event.jobId);
    }
  }, { prefetch: options.prefetch ?? 16 });

  async function record(event: JobEvent): Promise<Outcome> {
    for (let attempt = 0;; attempt++) {
      try {
        const job = await recordEvent(sink, event);
        if (!job) console.error(`Dropping ${event.type} for unknown job ${event.jobId}`);
        return "ack";
      } catch (error) {
        if (attempt >= delays.length) return "retry";
        if (attempt === 0) {
          console.error(`Storing ${event.type} of job ${event.jobId} failed; retrying:`, error);
        }
        await new Promise((resolve) => setTimeout(resolve, delays[attempt]));
      }
    }
  }
}
