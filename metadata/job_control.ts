/**
 * Metadata's routes for what a client does to its jobs beyond reading one: list them, cancel, retry, delete, and
 * (for the Upload service's sweeper) expire them. Every route is scoped to an owner by the `x-vmp3-owner` header
 * (see `ownerScope`), so a job of another key is 404, as if it did not exist.
 */
import { Hono } from "hono";
import {
  AppError,
  applyEvent,
  type Job,
  type JobEvent,
  jobKeys,
  JobStatus,
  type JobStore,
  type OutputCache,
  publicJob,
} from "@vmp3/shared";
import { type ChangeSink, recordChange, recordEvent } from "./record_event.ts";
import { mustGetScoped, ownerScope, storeCall } from "./scope.ts";

/** What the job control routes need. */
export interface JobControlDeps extends ChangeSink {
  store: JobStore;
  cache: OutputCache;
  /** Called with each event recorded here (cancel, retry), after it is stored. */
  onRecorded?: (job: Job, event: JobEvent) => void | Promise<void>;
  now?: () => Date;
}

/** Which files of a job the caller should now remove from storage. */
export interface FilesToRemove {
  inputKey: string;
  /** The MP3, when no other job uses it (a cached job shares the MP3 of the job that made it). */
  outputKey: string | null;
}

/** Creates the job control routes. */
export function createJobControlRoutes(deps: JobControlDeps): Hono {
  const { store, cache, now = () => new Date() } = deps;
  const app = new Hono();

  const record = async (id: string, type: "job.cancelled" | "job.retried"): Promise<Job> => {
    const event: JobEvent = { type, version: 1, jobId: id, at: now().toISOString() };
    const job = await storeCall(recordEvent({ ...deps, store, cache }, event));
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    await deps.onRecorded?.(job, event);
    return job;
  };

  /** Stops counting the job as a user of its MP3; the files the caller may remove. */
  const letGo = async (job: Job): Promise<FilesToRemove> => {
    const { inputKey } = jobKeys(job.id);
    if (!job.output) return { inputKey, outputKey: null };
    const unused = await storeCall(cache.release(job.output.key, job.id));
    // A job made without a cache key is counted nowhere: its MP3 is its own.
    const own = job.output.key === jobKeys(job.id).outputKey;
    return { inputKey, outputKey: unused || (own && !job.cacheKey) ? job.output.key : null };
  };

  app.get("/jobs", async (c) => {
    const scope = ownerScope(c);
    if (!scope) throw new AppError("invalid_request", "Listing jobs needs an owner scope");
    const status = c.req.query("status");
    const parsedStatus = status === undefined ? undefined : JobStatus.safeParse(status);
    if (parsedStatus && !parsedStatus.success) {
      throw new AppError("invalid_request", `"status" must be one of ${JobStatus.options.join(", ")}`);
    }
    const limitText = c.req.query("limit") ?? "20";
    const limit = /^\d{1,3}$/.test(limitText) ? Number(limitText) : NaN;
    if (!(limit >= 1 && limit <= 100)) throw new AppError("invalid_request", '"limit" must be 1 to 100');
    const page = await storeCall(store.list({
      owner: scope.owner,
      status: parsedStatus?.data,
      cursor: c.req.query("cursor"),
      limit,
    }));
    return c.json({ jobs: page.jobs.map(publicJob), next: page.next });
  });

  app.post("/jobs/:id/cancel", async (c) => {
    const job = await mustGetScoped(store, c.req.param("id"), ownerScope(c));
    return c.json(publicJob(await record(job.id, "job.cancelled")));
  });

  app.post("/jobs/:id/retry", async (c) => {
    const job = await mustGetScoped(store, c.req.param("id"), ownerScope(c));
    if (job.expiredAt) throw new AppError("expired", `Job ${job.id} expired; its video is gone`);
    if (job.status !== "failed") {
      throw new AppError("conflict", `Job ${job.id} is ${job.status}; only a failed job can be retried`);
    }
    // A retried job keeps its files at least until `keepUntil` (the caller's choice, see upload/job_control.ts), so
    // that it does not expire before it is converted again and downloaded.
    const body = await c.req.json().catch(() => ({}));
    const keepUntil = typeof body?.keepUntil === "string" ? Date.parse(body.keepUntil) : NaN;
    // Only the call whose event moved the job from failed to queued retries it: of retries sent at once, the
    // others find it queued already (409), so its task is published once. The store puts it back in the outbox,
    // so that a crash before its task is published leaves it to the reconciler (upload/reconciler.ts).
    const event: JobEvent = { type: "job.retried", version: 1, jobId: job.id, at: now().toISOString() };
    let before: Job | null = null;
    const retried = await storeCall(store.update(job.id, (current) => {
      const next = applyEvent(current, event);
      before = next === current ? null : current;
      if (next === current || next.expiresAt === undefined || !(keepUntil > Date.parse(next.expiresAt))) {
        return next;
      }
      return { ...next, expiresAt: new Date(keepUntil).toISOString() };
    }));
    if (!retried) throw new AppError("not_found", `There is no job ${JSON.stringify(job.id)}`);
    if (!before) {
      if (retried.expiredAt) throw new AppError("expired", `Job ${job.id} expired; its video is gone`);
      throw new AppError("conflict", `Job ${job.id} is ${retried.status}; only a failed job can be retried`);
    }
    await recordChange(deps, before, retried);
    await deps.onRecorded?.(retried, event);
    return c.json(publicJob(retried));
  });

  // Deletes a finished (done, failed, cancelled) job: its record, and its claim on a shared MP3. Answers which
  // files the caller (the Upload service, which holds the store of files) should remove.
  app.delete("/jobs/:id", async (c) => {
    const job = await mustGetScoped(store, c.req.param("id"), ownerScope(c));
    if (job.status === "queued" || job.status === "converting") {
      throw new AppError("conflict", `Job ${job.id} is ${job.status}; cancel it first`);
    }
    const files = await letGo(job);
    await storeCall(store.remove(job.id));
    return c.json(files);
  });

  // For the Upload service's sweeper: jobs whose files are due for removal.
  app.get("/expiring", async (c) => {
    const before = new Date(c.req.query("before") ?? "");
    const limit = Number(c.req.query("limit") ?? 100);
    if (Number.isNaN(before.getTime()) || !Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new AppError("invalid_request", 'Give "before" (an ISO time) and "limit" (1 to 1000)');
    }
    return c.json({ ids: await storeCall(store.expiring(before, limit)) });
  });

  // Begins a job's expiry, for the sweeper: cancels it if unfinished (its files are going whatever it was doing),
  // lets go of its MP3, and answers which files to remove and whether the job is cancelled (the workers are then
  // told). The job is marked expired only after (POST /jobs/:id/expired), once its files are gone: a sweeper that
  // dies in between finds the job again and does it again, which is harmless (letting go of an MP3 twice is
  // letting go of it once). `before` (the sweeper's now): a job whose expiry moved past it since it was listed
  // (retried) is a conflict, and left alone.
  app.post("/jobs/:id/expire", async (c) => {
    let job = await mustGetScoped(store, c.req.param("id"), null);
    const body = await c.req.json().catch(() => ({}));
    const before = typeof body?.before === "string" ? Date.parse(body.before) : NaN;
    if (!job.expiredAt && job.expiresAt !== undefined && before <= Date.parse(job.expiresAt)) {
      throw new AppError("conflict", `Job ${job.id} expires at ${job.expiresAt}, not yet`);
    }
    if (job.status === "queued" || job.status === "converting") job = await record(job.id, "job.cancelled");
    return c.json({ ...(await letGo(job)), cancelled: job.status === "cancelled" });
  });

  // Marks a job expired, once its files are removed: its download answers 410 from now on.
  app.post("/jobs/:id/expired", async (c) => {
    const job = await mustGetScoped(store, c.req.param("id"), null);
    const at = now().toISOString();
    const expired = await storeCall(
      store.update(
        job.id,
        (current) => current.expiredAt ? current : { ...current, expiredAt: at, updatedAt: at },
      ),
    );
    if (!expired) throw new AppError("not_found", `There is no job ${JSON.stringify(job.id)}`);
    return c.body(null, 204);
  });

  return app;
}
