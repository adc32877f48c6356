/**
 * Publishing a job's conversion task, the one way: the task goes to the broker (confirmed), then the job leaves
 * the outbox. Should marking it fail, the reconciler publishes the task again, and the worker's deterministic
 * output key makes the second conversion harmless.
 */
import { type ConversionOptions, type ConversionRequested, conversionTask, type Queue } from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";

/** Publishes the task of job `id` and takes the job out of the outbox. */
export async function publishTask(
  deps: { tasks: Queue<ConversionRequested>; metadata: MetadataClient },
  job: { id: string; filename: string; options: ConversionOptions },
  now: Date,
): Promise<void> {
  await deps.tasks.publish(conversionTask(job.id, job.filename, job.options, now));
  await deps.metadata.markPublished(job.id).catch((e) =>
    console.error(`Job ${job.id}: could not mark it published (the reconciler will publish it again):`, e)
  );
}
