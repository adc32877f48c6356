/**
 * Metadata's consumer of dead-lettered tasks: a task whose deliveries ran out (its worker died each time, say
 * killed for memory) would otherwise leave its job converting forever. Its job is failed, with a clear code.
 */
import type { ConversionRequested, Queue, Subscription } from "@vmp3/shared";
import { type EventSink, recordEvent } from "./record_event.ts";

/** Fails the job of each task that ends in `deadTasks`; acked once the failure is stored. */
export function startDeadTaskConsumer(
  deadTasks: Queue<ConversionRequested>,
  sink: EventSink,
  options: { now?: () => Date } = {},
): Promise<Subscription> {
  const now = options.now ?? (() => new Date());
  return deadTasks.consume(async (task) => {
    // Recorded like any event: its SSE clients and webhooks hear of the failure.
    const job = await recordEvent(sink, {
      type: "job.failed",
      version: 1,
      jobId: task.jobId,
      at: now().toISOString(),
      error: {
        code: "conversion_failed",
        message: `Cannot convert "${task.filename}": the conversion stopped every time it was tried`,
      },
    });
    if (!job) console.error(`A dead task names unknown job ${task.jobId}`);
    return "ack";
  });
}
