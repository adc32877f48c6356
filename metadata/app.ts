/** The Metadata service's HTTP API: create jobs, read them, apply events, and watch them change. */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import {
  AppError,
  createJob,
  type Job,
  JobEvent,
  type JobEventLog,
  type JobStore,
  type KeyStore,
  NewJob,
  onError,
  onNotFound,
  type OutputCache,
  publicJob,
  type UsageStore,
} from "@vmp3/shared";
import { recordChange, recordEvent } from "./record_event.ts";
import { streamJobEvents } from "./job_event_stream.ts";
import type { WebhookPublisher } from "./webhook_delivery.ts";
import { createJobControlRoutes } from "./job_control.ts";
import { createAccessRoutes } from "./access.ts";
import { mustGetScoped, ownerScope } from "./scope.ts";

/** What the Metadata app needs. */
export interface MetadataAppDeps {
  store: JobStore;
  /** Outputs by content, so that a job asking for an existing output is done at once. */
  cache: OutputCache;
  /** API keys and their usage counters; without them, /auth and /owners/:id/admit are not served. */
  access?: { keys: KeyStore; usage: UsageStore };
  /** Every change of each job, in order: what the SSE route streams (see job_event_stream.ts). */
  log: JobEventLog;
  /** Queues the webhooks of each change (see webhook_delivery.ts); absent: no webhooks. */
  webhooks?: WebhookPublisher;
  /** How long an event stream waits for a change before a keep-alive comment, in ms (default 15 000). */
  keepAliveMs?: number;
  now?: () => Date;
}

/** Runs a store call, turning its failure into service_unavailable (503). */
function guard<T>(call: Promise<T>): Promise<T> {
  return call.catch((cause) => {
    throw new AppError("service_unavailable", "The job store cannot be reached; try again shortly", {
      cause,
    });
  });
}

async function mustGet(store: JobStore, id: string): Promise<Job> {
  const job = await guard(store.get(id));
  if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
  return job;
}

/** Creates the Metadata HTTP app over `store`. */
export function createMetadataApp(deps: MetadataAppDeps): Hono {
  const { store, cache, log, webhooks, keepAliveMs = 15_000, now = () => new Date() } = deps;
  const app = new Hono();
  app.onError(onError);
  app.notFound(onNotFound);

  app.get("/healthz", (c) => c.json({ ok: true }));

  app.post("/jobs", async (c) => {
    const parsed = NewJob.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) {
      throw new AppError("invalid_request", `Invalid job: ${parsed.error.issues[0].message}`);
    }
    const init = parsed.data;
    const cached = init.cacheKey ? await guard(cache.claim(init.cacheKey, init.id)) : null;
    const job = createJob(init, now(), cached ?? undefined);
    const inserted = await guard(store.insert(job)).catch(async (error) => {
      if (cached) await cache.release(cached.key, job.id).catch(() => {}); // this job will not use it after all
      throw error;
    });
    if (inserted) {
      await recordChange({ log, webhooks }, null, job);
      return c.json(publicJob(job), 201);
    }
    // A repeated request: the job exists. Its claim on the cached MP3 is the same user (the same id); only a job
    // that does not use that MP3 lets go of it.
    const existing = await mustGet(store, job.id);
    if (cached && existing.output?.key !== cached.key) await guard(cache.release(cached.key, job.id));
    return c.json(publicJob(existing), 200);
  });

  app.get("/jobs/:id", async (c) => {
    return c.json(publicJob(await mustGetScoped(store, c.req.param("id"), ownerScope(c))));
  });

  app.route("/", createJobControlRoutes({ store, cache, log, webhooks, now }));
  if (deps.access) app.route("/", createAccessRoutes({ ...deps.access, store, now }));

  // Internal, for the Upload service's reconciler: jobs recorded but whose task is not known to be published.
  app.get("/outbox", async (c) => {
    const before = new Date(c.req.query("before") ?? "");
    const limit = Number(c.req.query("limit") ?? 100);
    if (Number.isNaN(before.getTime()) || !Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new AppError("invalid_request", 'Give "before" (an ISO time) and "limit" (1 to 1000)');
    }
    const ids = await guard(store.unpublished(before, limit));
    const jobs = await Promise.all(ids.map((id) => guard(store.get(id))));
    return c.json({ jobs: jobs.filter((job) => job !== null).map(publicJob) });
  });

  app.post("/jobs/:id/published", async (c) => {
    await guard(store.markPublished(c.req.param("id")));
    return c.body(null, 204);
  });

  // Internal: where a job's MP3 is stored (a cached job shares another job's file), for the Upload service.
  app.get("/jobs/:id/output", async (c) => {
    const job = await mustGet(store, c.req.param("id"));
    if (job.status !== "done" || !job.output) throw new AppError("not_ready", `Job ${job.id} has no MP3`);
    return c.json({ key: job.output.key });
  });

  app.post("/jobs/:id/events", async (c) => {
    const parsed = JobEvent.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success || parsed.data.jobId !== c.req.param("id")) {
      throw new AppError("invalid_request", "The body is not a job event for this job");
    }
    const job = await guard(recordEvent({ store, cache, log, webhooks }, parsed.data));
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(parsed.data.jobId)}`);
    return c.json(publicJob(job));
  });

  // Server-Sent Events of the job's changes; Last-Event-ID (or ?lastEventId=) resumes after that entry.
  app.get("/jobs/:id/events", async (c) => {
    const id = c.req.param("id");
    await mustGetScoped(store, id, ownerScope(c));
    const lastEventId = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    return streamSSE(c, (stream) => streamJobEvents(stream, { store, log, keepAliveMs }, id, lastEventId));
  });

  return app;
}
