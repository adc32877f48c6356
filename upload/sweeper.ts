/**
 * The sweeper: removes the files of jobs past their `expiresAt` (their video and MP3; an MP3 another job still
 * uses stays) and marks them expired, so that their download answers 410 expired. The job records stay.
 */
import { AppError, type BlobStore } from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";
import { type Periodic, repeat } from "./periodic.ts";

/** What the sweeper needs. */
export interface SweeperDeps {
  blobs: BlobStore;
  metadata: MetadataClient;
  /** The most jobs handled in one pass. */
  batch?: number;
  now?: () => Date;
}

/** Creates a sweeper; `runOnce` does one pass (the ids of the jobs expired), `start` repeats it. */
export function createSweeper(deps: SweeperDeps) {
  const { blobs, metadata, batch = 100, now = () => new Date() } = deps;

  async function runOnce(): Promise<string[]> {
    const expired: string[] = [];
    for (const id of await metadata.expiring(now(), batch)) {
      // Marked first: a job seen expired never serves a file that is about to go, and a pass that dies here
      // leaves only files that no job points to.
      const files = await metadata.expireJob(id).catch((error) => {
        // Deleted since it was listed (its files with it): nothing left to expire; the pass goes on.
        if (error instanceof AppError && error.code === "not_found") return null;
        throw error;
      });
      if (!files) continue;
      await blobs.delete(files.inputKey);
      if (files.outputKey) await blobs.delete(files.outputKey);
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
