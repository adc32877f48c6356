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
  sameDigest,
  sha256Hex,
  type UsageStore,
} from "@vmp3/shared";
import { storeCall } from "./scope.ts";

/** What the access routes need. */
export interface AccessDeps {
  keys: KeyStore;
  usage: UsageStore;
  store: JobStore;
  now?: () => Date;
}

/** A key as the Gateway learns it: never its secret or hash. */
export type KeyInfo = Pick<ApiKey, "id" | "name" | "limits">;

const AdmitBody = z.object({ bytes: z.number().int().nonnegative() });
const Reservation = z.object({
  name: z.string().min(1).max(1000),
  value: z.string().min(1).max(200),
  ttlSeconds: z.number().int().min(1).max(30 * 86_400).optional(),
});

/** Jobs of `owner` still running, counted up to `limit` (a job past the limit does not change the answer). */
async function activeJobs(store: JobStore, owner: string, limit: number): Promise<number> {
  let count = 0;
  for (const status of ["queued", "converting"] as const) {
    let cursor: string | undefined;
    do {
      const page = await store.list({ owner, status, cursor, limit: Math.min(100, limit - count) });
      count += page.jobs.length;
      cursor = page.next ?? undefined;
    } while (cursor && count < limit);
    if (count >= limit) break;
  }
  return count;
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

  // The caller's token -> its key and its rate decision. An unknown, malformed or wrong token is 401.
  app.post("/auth", async (c) => {
    const body = await c.req.json().catch(() => null);
    const parsed = typeof body?.token === "string" ? parseKeyToken(body.token) : null;
    if (!parsed) throw new AppError("unauthorized", "The API key is not valid");
    const key = await mustGetKey(parsed.id);
    if (!sameDigest(await sha256Hex(parsed.secret), key.secretSha256)) {
      throw new AppError("unauthorized", "The API key is not valid");
    }
    const rate = await storeCall(usage.hit(`rate:${key.id}`, key.limits.requestsPerMinute, 60));
    const info: KeyInfo = { id: key.id, name: key.name, limits: key.limits };
    return c.json({ key: info, rate });
  });

  // Before a job of `id` is recorded: refuses it past the key's jobs-at-once, or past its bytes of the day (the
  // bytes are counted when it is admitted).
  app.post("/owners/:id/admit", async (c) => {
    const key = await mustGetKey(c.req.param("id"));
    const parsed = AdmitBody.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) throw new AppError("invalid_request", 'Give "bytes", a whole number');
    const { concurrentJobs, bytesPerDay } = key.limits;
    if (await storeCall(activeJobs(store, key.id, concurrentJobs)) >= concurrentJobs) {
      throw new AppError(
        "quota_exceeded",
        `This key may have ${concurrentJobs} jobs queued or converting at once; wait for one to finish`,
      );
    }
    const day = now().toISOString().slice(0, 10);
    const total = await storeCall(usage.addBytes(`bytes:${key.id}`, day, parsed.data.bytes, bytesPerDay));
    if (total === null) {
      throw new AppError(
        "quota_exceeded",
        `This upload would pass this key's ${bytesPerDay} bytes for today (UTC); try again tomorrow`,
      );
    }
    return c.json({ bytesToday: total });
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
