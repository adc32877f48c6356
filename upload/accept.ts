/**
 * Turns a video already stored at its job's input key into a job: records it through Metadata (where an identical
 * earlier output may finish it at once), publishes its conversion task, and takes it out of the outbox. Every way
 * in (a form upload, a tus upload, a direct-to-S3 upload, a URL import) ends here, so a job is accepted one way.
 */
import {
  AppError,
  type BlobStore,
  cacheKey,
  type ConversionOptions,
  type ConversionRequested,
  jobFailed,
  jobKeys,
  type NewJob,
  type Queue,
} from "@vmp3/shared";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";
import { publishTask } from "./publish_task.ts";

/** A stored video about to become a job. */
export interface StoredInput {
  /** The job's id; the video is at `jobKeys(id).inputKey`. */
  id: string;
  filename: string;
  size: number;
  /** Hex sha256 of the bytes, where they were hashed on the way in (no hash: no content-cache lookup). */
  sha256?: string;
  options: ConversionOptions;
  /** Fields of the new job beyond its input and options (its owner, say). */
  extra?: Omit<NewJob, "id" | "input" | "options" | "cacheKey">;
}

/** What accepting a job needs. */
export interface AcceptDeps {
  blobs: BlobStore;
  tasks: Queue<ConversionRequested>;
  metadata: MetadataClient;
  /** Called after the job is recorded and before its task is published (tests use it to crash right there). */
  beforePublish?: (job: { id: string; filename: string }) => void;
  /** How long a job's files are kept from its creation, in ms (then removed, see upload/sweeper.ts). */
  filesTtlMs?: number;
  now?: () => Date;
}

/** How long a job's files are kept unless configured: 7 days. */
export const DEFAULT_FILES_TTL_MS = 7 * 24 * 3600 * 1000;

/** Accepts stored videos as jobs. */
export type Accept = (stored: StoredInput) => Promise<PublicJob>;

/**
 * Makes the function that accepts a stored video as a job. On any failure the stored video is removed, and a job
 * already recorded is failed with the reason, so nothing is left half accepted.
 */
export function createAccept(deps: AcceptDeps): Accept {
  const { blobs, tasks, metadata, filesTtlMs = DEFAULT_FILES_TTL_MS, now = () => new Date() } = deps;
  const removeInput = (id: string) =>
    blobs.delete(jobKeys(id).inputKey).catch((e) => console.error(`Could not remove input of job ${id}:`, e));

  return async (stored) => {
    const { id, filename, size, sha256, options } = stored;
    let recorded = false;
    try {
      if (size === 0) {
        throw new AppError("unsupported_input", `Cannot convert "${filename}": the file is empty`);
      }
      const owner = stored.extra?.owner;
      // The key's quotas (jobs at once, bytes a day); a caller without a key has none. The job holds an admission
      // slot from here until it is recorded (or is not), so that uploads at once count each other.
      if (owner !== undefined) await metadata.admit(owner, size, id);
      let job: PublicJob;
      try {
        job = await metadata.createJob({
          ...stored.extra,
          id,
          input: sha256 === undefined ? { filename, size } : { filename, size, sha256 },
          options,
          cacheKey: sha256 === undefined ? undefined : await cacheKey(sha256, options, owner),
          expiresAt: new Date(now().getTime() + filesTtlMs).toISOString(),
        });
      } finally {
        // Only after the job is in the store, where the next admissions count it (or after it failed to be).
        if (owner !== undefined) {
          await metadata.admitted(owner, id).catch((e) =>
            console.error(`Job ${id}: could not free its admission slot (it ends by itself):`, e)
          );
        }
      }
      recorded = true;
      if (job.status === "done") {
        // The same bytes were converted with the same options before: the job is done already, from that MP3.
        await removeInput(id);
        return job;
      }
      deps.beforePublish?.({ id, filename });
      await publishTask({ tasks, metadata }, { id, filename, options }, now());
      return job;
    } catch (error) {
      await removeInput(id);
      if (!recorded) throw error;
      const failure = error instanceof AppError ? error : new AppError(
        "service_unavailable",
        "The conversion queue cannot be reached; the job was not started, please upload again",
        { cause: error },
      );
      await metadata.postEvent(jobFailed(id, failure, now()))
        .catch((e) => console.error(`Could not mark job ${id} failed:`, e));
      throw failure;
    }
  };
}
