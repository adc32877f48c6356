/**
 * What a client does to a job after creating it, on the Upload service because it holds the files and the queue:
 * cancel an unfinished job (workers hear of it by broadcast and stop its FFmpeg), delete a finished one with its
 * files, and retry a failed one. Each call is scoped to its caller by the `x-vmp3-owner` header the Gateway sets.
 */
import { Hono } from "hono";
import {
  AppError,
  type BlobStore,
  type Broadcast,
  type ConversionRequested,
  type JobCancel,
  jobFailed,
  jobKeys,
  parseOptions,
  type Queue,
} from "@vmp3/shared";
import { publishTask } from "./publish_task.ts";
import { type MetadataClient, OWNER_HEADER, type Scope } from "@vmp3/metadata";
import { DEFAULT_FILES_TTL_MS } from "./accept.ts";

/** What the job control routes need. */
export interface JobControlDeps {
  blobs: BlobStore;
  tasks: Queue<ConversionRequested>;
  metadata: MetadataClient;
  /** Tells every Convert worker a job was cancelled; absent, a running conversion ends on its own (ignored). */
  cancels?: Broadcast<JobCancel>;
  /** How long a job's files are kept from its creation, in ms (a retry keeps them a while longer, see below). */
  filesTtlMs?: number;
  now?: () => Date;
}

/**
 * How long a retried job's files are kept at least, from the retry, in ms: a day (or the files' own lifetime, if
 * shorter), so that a job retried just before its expiry is converted again and can be downloaded. A job that
 * expires later keeps its expiry.
 */
export const RETRY_KEEP_MS = 86_400_000;

function scopeOf(header: string | undefined): Scope {
  return header ? { owner: header } : {};
}

/** Creates the job control routes. */
export function createJobControlRoutes(deps: JobControlDeps): Hono {
  const { blobs, tasks, metadata, cancels, filesTtlMs = DEFAULT_FILES_TTL_MS, now = () => new Date() } = deps;
  const app = new Hono();
  const removeQuietly = (key: string) =>
    blobs.delete(key).catch((error) => console.error(`Could not remove ${key}:`, error));

  app.delete("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const scope = scopeOf(c.req.header(OWNER_HEADER));
    const job = await metadata.getJob(id, scope);
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    if (job.status === "queued" || job.status === "converting") {
      // Recorded first, so that a worker told to stop never reports the job done after all.
      const cancelled = await metadata.cancelJob(id, scope);
      if (cancelled.status === "cancelled") {
        await cancels?.publish({ type: "job.cancel", version: 1, jobId: id, at: now().toISOString() })
          .catch((error) => console.error(`Job ${id}: could not tell the workers it was cancelled:`, error));
        const { inputKey, outputKey } = jobKeys(id);
        await removeQuietly(inputKey);
        // A conversion that ended just before the cancel may have stored its MP3: no one will download it.
        await removeQuietly(outputKey);
        return c.json(cancelled);
      }
      // It finished just before the cancel (done or failed): its MP3 may be in the content cache already, so it
      // is deleted as a finished job, through Metadata, which says whether another job uses that MP3.
    }
    const files = await metadata.deleteJob(id, scope);
    await removeQuietly(files.inputKey);
    if (files.outputKey) await removeQuietly(files.outputKey);
    return c.body(null, 204);
  });

  app.post("/jobs/:id/retry", async (c) => {
    const id = c.req.param("id");
    const scope = scopeOf(c.req.header(OWNER_HEADER));
    const job = await metadata.getJob(id, scope);
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    // An expired job's video is gone on purpose: 410, as its download, not the 409 of a lost video.
    if (job.expiredAt) throw new AppError("expired", `Job ${id} expired; its video is gone`);
    if (job.status === "failed" && !(await blobs.head(jobKeys(id).inputKey))) {
      throw new AppError("conflict", `Job ${id} cannot be retried: its video is no longer stored`);
    }
    // Queued again, it counts against its key's jobs at once like a new one (its bytes were counted already),
    // holding an admission slot until it is queued in the store.
    const owner = job.status === "failed" ? scope.owner : undefined;
    if (owner) await metadata.admit(owner, 0, id);
    let retried;
    try {
      const keepUntil = new Date(now().getTime() + Math.min(filesTtlMs, RETRY_KEEP_MS)).toISOString();
      retried = await metadata.retryJob(id, scope, { keepUntil });
    } finally {
      if (owner) {
        await metadata.admitted(owner, id).catch((e) =>
          console.error(`Job ${id}: could not free its admission slot (it ends by itself):`, e)
        );
      }
    }
    const filename = String((retried.input as { filename?: string }).filename ?? "video");
    const options = parseOptions((retried.options ?? {}) as Record<string, unknown>);
    try {
      await publishTask({ tasks, metadata }, { id, filename, options }, now());
    } catch (cause) {
      const failure = new AppError(
        "service_unavailable",
        "The conversion queue cannot be reached; the job was not retried, try again",
        { cause },
      );
      await metadata.postEvent(jobFailed(id, failure, now()))
        .catch((e) => console.error(`Could not mark job ${id} failed again:`, e));
      throw failure;
    }
    return c.json(retried, 202);
  });

  return app;
}
