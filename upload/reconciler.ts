/**
 * The reconciler: finds jobs that were recorded but whose task never reached the broker (the Upload service died
 * between the two, or the "published" mark was lost) and publishes their task. Tasks are idempotent (the output
 * key is the job's), so publishing one twice costs a conversion, never a wrong result.
 */
import {
  type BlobStore,
  type ConversionRequested,
  jobFailed,
  jobKeys,
  parseOptions,
  type Queue,
} from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";
import { type Periodic, repeat } from "./periodic.ts";
import { publishTask } from "./publish_task.ts";

/** What the reconciler needs. */
export interface ReconcilerDeps {
  blobs: BlobStore;
  tasks: Queue<ConversionRequested>;
  metadata: MetadataClient;
  /** A job is only taken once it has waited this long for its task, in ms (an upload in progress is not a crash). */
  graceMs?: number;
  /** The most jobs handled in one pass. */
  batch?: number;
  now?: () => Date;
}

/** What one pass did. */
export interface ReconcileResult {
  /** Jobs whose task was published. */
  published: string[];
  /** Jobs failed because their upload is gone. */
  failed: string[];
}

/** Creates a reconciler; `runOnce` does one pass, `start` repeats it every `intervalMs` until stopped. */
export function createReconciler(deps: ReconcilerDeps) {
  const { blobs, tasks, metadata, graceMs = 60_000, batch = 100, now = () => new Date() } = deps;

  async function runOnce(): Promise<ReconcileResult> {
    const result: ReconcileResult = { published: [], failed: [] };
    const jobs = await metadata.unpublished(new Date(now().getTime() - graceMs), batch);
    for (const job of jobs) {
      const filename = String((job.input as { filename?: unknown } | undefined)?.filename ?? "upload");
      if (!(await blobs.head(jobKeys(job.id).inputKey))) {
        await metadata.postEvent(
          jobFailed(job.id, {
            code: "internal",
            message: "The uploaded video was lost before its conversion started",
          }, now()),
        );
        result.failed.push(job.id);
        continue;
      }
      const options = parseOptions((job.options ?? {}) as Record<string, unknown>);
      await publishTask({ tasks, metadata }, { id: job.id, filename, options }, now());
      console.error(`Reconciler: published the task of job ${job.id}, which had none`);
      result.published.push(job.id);
    }
    return result;
  }

  /** Runs a pass `intervalMs` after the end of the one before, until stopped. */
  function start(intervalMs: number): Periodic {
    return repeat("Reconciler", intervalMs, runOnce);
  }

  return { runOnce, start };
}
