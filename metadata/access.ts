/**
 * Metadata's routes for API keys: checking a caller's token and counting its request against its rate limit (one
 * call per public request, from the Gateway), and admitting a new job against its key's quotas (from Upload).
 */
import { Hono } from "hono";
import { z } from "zod";
import {
  type ApiKey,
  AppError,
  type JobStore,
  type KeyStore,
  parseKeyToken,
  publicJob,
  type RateDecision,
  sameDigest,
  sha256Hex,
  type UsageStore,
} from "@vmp3/shared";
import { mustGetScoped, storeCall } from "./scope.ts";

/** What the access routes need. */
export interface AccessDeps {
  keys: KeyStore;
  usage: UsageStore;
  store: JobStore;
  now?: () => Date;
}

/** A key as the Gateway learns it: never its secret or hash. */
export type KeyInfo = Pick<ApiKey, "id" | "name" | "limits">;

const AdmitBody = z.object({
  bytes: z.number().int().nonnegative(),
  /** The job being admitted: it takes an admission slot (see the route). Absent: the count alone decides. */
  jobId: z.string().min(1).max(200).optional(),
  /** Only ask, before the upload is read: nothing is counted or held (see the route). */
  check: z.boolean().optional(),
});
const AdmittedBody = z.object({ jobId: z.string().min(1).max(200) });

/**
 * How long a job's admission slot lasts at most, in seconds: it is freed as soon as the job is recorded (or will
 * not be), so this only ends the slot of an Upload process that died in between.
 */
export const ADMISSION_SLOT_SECONDS = 300;

const Reservation = z.object({
  name: z.string().min(1).max(1000),
  value: z.string().min(1).max(200),
  ttlSeconds: z.number().int().min(1).max(30 * 86_400).optional(),
});

/** Ids of the jobs of `owner` still running, up to `limit` of them. */
async function activeJobs(store: JobStore, owner: string, limit: number): Promise<string[]> {
  const ids: string[] = [];
  for (const status of ["queued", "converting"] as const) {
    let cursor: string | undefined;
    do {
      const page = await store.list({ owner, status, cursor, limit: Math.min(100, limit - ids.length) });
      ids.push(...page.jobs.map((job) => job.id));
      cursor = page.next ?? undefined;
    } while (cursor && ids.length < limit);
    if (ids.length >= limit) break;
  }
  return ids;
}

/** Creates the access routes. */
export function createAccessRoutes(deps: AccessDeps): Hono {
  const { keys, usage, store, now = () => new Date() } = deps;
  const app = new Hono();

  const mustGetKey = async (id: string): Promise<ApiKey> => {
    const key = await storeCall(keys.get(id));
    if (!key) throw new AppError("unauthorized", "The API key is not valid");
    return key;
  };

  /** The key of a caller's token, with the rate decision of this request (counted now); else unauthorized. */
  const checkToken = async (token: unknown): Promise<{ key: KeyInfo; rate: RateDecision }> => {
    const parsed = typeof token === "string" ? parseKeyToken(token) : null;
    if (!parsed) throw new AppError("unauthorized", "The API key is not valid");
    const key = await mustGetKey(parsed.id);
    if (!sameDigest(await sha256Hex(parsed.secret), key.secretSha256)) {
      throw new AppError("unauthorized", "The API key is not valid");
    }
    const rate = await storeCall(usage.hit(`rate:${key.id}`, key.limits.requestsPerMinute, 60));
    return { key: { id: key.id, name: key.name, limits: key.limits }, rate };
  };

  // The caller's token -> its key and its rate decision. An unknown, malformed or wrong token is 401.
  app.post("/auth", async (c) => {
    const body = await c.req.json().catch(() => null);
    return c.json(await checkToken(body?.token));
  });

  // /auth and GET /jobs/:id in one call, for the Gateway's status reads: the job is read (in the key's scope) only
  // when the request is allowed; `job` is null when there is none in that scope, or when the rate refused it.
  app.post("/auth/jobs/:id", async (c) => {
    const body = await c.req.json().catch(() => null);
    const { key, rate } = await checkToken(body?.token);
    const job = rate.allowed
      ? await mustGetScoped(store, c.req.param("id"), { owner: key.id }).then(publicJob, (error) => {
        if (error instanceof AppError && error.code === "not_found") return null;
        throw error;
      })
      : null;
    return c.json({ key, rate, job });
  });

  // Before a job of key `id` is recorded: refuses it past the key's jobs-at-once, or past its bytes of the day (the
  // bytes are counted when it is admitted).
  //
  // Jobs at once are the key's queued and converting jobs in the store, and the jobs admitted but not recorded
  // yet: those hold an admission slot (UsageStore.claimSlot) from before the count until after they are recorded
  // (POST /owners/:id/admitted). A job is thus always in the slots or in the store, or in both, while it runs:
  // of two admissions at once, the later claim sees the earlier in the slots or, once it let go of its slot, in
  // the store, and counts it. Slots are taken at most `concurrentJobs` at a time, and end after
  // ADMISSION_SLOT_SECONDS if the Upload process dies before letting go.
  //
  // With `check`, only asks: whether the key has a job to spare now, and the bytes left today for `bytes`, so that
  // an over-quota upload is refused before it is read; the exact admission comes after it is stored.
  app.post("/owners/:id/admit", async (c) => {
    const key = await mustGetKey(c.req.param("id"));
    const parsed = AdmitBody.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) throw new AppError("invalid_request", 'Give "bytes", a whole number');
    const { bytes, jobId, check } = parsed.data;
    const { concurrentJobs, bytesPerDay } = key.limits;
    const slots = `jobs:${key.id}`;
    const tooMany = () =>
      new AppError(
        "quota_exceeded",
        `This key may have ${concurrentJobs} jobs queued or converting at once; wait for one to finish`,
      );
    const tooLarge = () =>
      new AppError(
        "quota_exceeded",
        `This upload would pass this key's ${bytesPerDay} bytes for today (UTC); try again tomorrow`,
      );
    const day = now().toISOString().slice(0, 10);

    if (check) {
      if ((await storeCall(activeJobs(store, key.id, concurrentJobs))).length >= concurrentJobs) {
        throw tooMany();
      }
      const today = await storeCall(usage.addBytes(`bytes:${key.id}`, day, 0, bytesPerDay));
      if (today === null || today + bytes > bytesPerDay) throw tooLarge();
      return c.json({ bytesToday: today });
    }

    const release = () =>
      jobId === undefined ? Promise.resolve() : storeCall(usage.releaseSlot(slots, jobId)).catch((error) => {
        console.error(`Could not free the admission slot of job ${jobId}:`, error);
      });
    let admitting: string[] = [];
    if (jobId !== undefined) {
      const holders = await storeCall(usage.claimSlot(slots, jobId, concurrentJobs, ADMISSION_SLOT_SECONDS));
      if (holders === null) throw tooMany();
      admitting = holders;
    }
    try {
      // Read after the claim: a job that let go of its slot before the claim is in the store by now.
      const running = await storeCall(activeJobs(store, key.id, concurrentJobs + 1));
      const counted = new Set([...running, ...admitting]);
      if (jobId === undefined ? counted.size >= concurrentJobs : counted.size > concurrentJobs) {
        throw tooMany();
      }
      const total = await storeCall(usage.addBytes(`bytes:${key.id}`, day, bytes, bytesPerDay));
      if (total === null) throw tooLarge();
      return c.json({ bytesToday: total });
    } catch (error) {
      await release();
      throw error;
    }
  });

  // The job admitted as `jobId` is recorded, or will never be: its admission slot is freed.
  app.post("/owners/:id/admitted", async (c) => {
    const parsed = AdmittedBody.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) throw new AppError("invalid_request", 'Give "jobId"');
    await storeCall(usage.releaseSlot(`jobs:${c.req.param("id")}`, parsed.data.jobId));
    return c.body(null, 204);
  });

  // Idempotency keys: the first request to reserve a name holds it (for its job id) until the reservation ends.
  app.post("/reservations", async (c) => {
    const parsed = Reservation.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) throw new AppError("invalid_request", "Give name, value and ttlSeconds");
    const { name, value, ttlSeconds } = parsed.data;
    return c.json({ holder: await storeCall(usage.reserve(name, value, ttlSeconds ?? 86_400)) });
  });

  app.post("/reservations/release", async (c) => {
    const parsed = Reservation.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) throw new AppError("invalid_request", "Give name and value");
    await storeCall(usage.unreserve(parsed.data.name, parsed.data.value));
    return c.body(null, 204);
  });

  return app;
}
