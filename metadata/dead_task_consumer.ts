/**
 * Metadata's consumer of dead-lettered tasks: a task whose deliveries ran out (its worker died each time, say
 * killed for memory) would otherwise leave its job converting forever. Its job is failed, with a clear code.
 */
import {
  applyEvent,
  type ConversionRequested,
  type JobStore,
  type Queue,
  type Subscription,
} from "@vmp3/shared";

/** Fails the job of each task that ends in `deadTasks`; acked once the failure is stored. */
export function startDeadTaskConsumer(
  deadTasks: Queue<ConversionRequested>,
  store: JobStore,
  options: { now?: () => Date } = {},
): Promise<Subscription> {
  const now = options.now ?? (() => new Date());
  return deadTasks.consume(async (task) => {
    const job = await store.update(task.jobId, (job) =>
      applyEvent(job, {
        type: "job.failed",
        version: 1,
        jobId: task.jobId,
        at: now().toISOString(),
        error: {
          code: "conversion_failed",
          message: `Cannot convert "${task.filename}": the conversion stopped every time it was tried`,
        },
      }));
    if (!job) console.error(`A dead task names unknown job ${task.jobId}`);
    return "ack";
  });
}
