/**
 * The sweeper: removes the files of jobs past their `expiresAt` (their video and MP3; an MP3 another job still
 * uses stays) and marks them expired, so that their download answers 410 expired. The job records stay. An
 * unfinished job is cancelled first, and the Convert workers are told, so that none goes on converting it.
 *
 * Files first, mark after: a pass that dies in between leaves the job unmarked, so the next pass finds it and does
 * it again (Metadata's expire is safe to repeat), and no file is left that no one will remove.
 */
import { AppError, type BlobStore, type Broadcast, type JobCancel, jobKeys } from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";
import { type Periodic, repeat } from "./periodic.ts";

/** What the sweeper needs. */
export interface SweeperDeps {
  blobs: BlobStore;
  metadata: MetadataClient;
  /** Tells every Convert worker a job was cancelled; absent, a conversion of an expired job runs to its end. */
  cancels?: Broadcast<JobCancel>;
  /** The most jobs handled in one pass. */
  batch?: number;
  now?: () => Date;
}

/** Creates a sweeper; `runOnce` does one pass (the ids of the jobs expired), `start` repeats it. */
export function createSweeper(deps: SweeperDeps) {
  const { blobs, metadata, cancels, batch = 100, now = () => new Date() } = deps;

  async function runOnce(): Promise<string[]> {
    const expired: string[] = [];
    const at = now();
    for (const id of await metadata.expiring(at, batch)) {
      const files = await metadata.expireJob(id, { before: at }).catch((error) => {
        // Deleted since it was listed (its files with it), or retried and given a later expiry: nothing to do.
        if (error instanceof AppError && (error.code === "not_found" || error.code === "conflict")) {
          return null;
        }
        throw error;
      });
      if (!files) continue;
      if (files.cancelled) {
        await cancels?.publish({ type: "job.cancel", version: 1, jobId: id, at: now().toISOString() })
          .catch((error) => console.error(`Job ${id}: could not tell the workers it was cancelled:`, error));
      }
      await blobs.delete(files.inputKey);
      if (files.outputKey) await blobs.delete(files.outputKey);
      // A conversion that ended just before the cancel may have stored its MP3: no one will download it.
      if (files.cancelled) await blobs.delete(jobKeys(id).outputKey);
      await metadata.markExpired(id);
      expired.push(id);
    }
    return expired;
  }

  return {
    runOnce,
    /** Runs a pass `intervalMs` after the end of the one before, until stopped. */
    start(intervalMs: number): Periodic {
      return repeat("Sweeper", intervalMs, runOnce);
    },
  };
}
