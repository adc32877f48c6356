/**
 * @module
 * What every UsageStore adapter shares: the checks of its arguments, and its rate rule.
 *
 * The rate rule is the generic cell rate algorithm (GCRA), a token bucket kept as one number per subject. A
 * subject may make `limit` requests at once; each one comes back `window / limit` later, and the whole limit is
 * back `window` after the last request. So the rate over time is `limit` per `window` and a burst is at most
 * `limit` (a subject that bursts and then keeps to the rate can pass up to `2 * limit - 1` in one span of
 * `window`, as across the edge of a fixed window), with O(1) state per subject, updated atomically, and no
 * cliff at window edges.
 *
 * The state is the subject's *debt*: how far ahead of now its allowance is spent (0 for a fresh subject, at most
 * `window`). A request adds `window / limit` to it and is allowed while the debt stays within `window`; time pays
 * it back. Stores keep it as (when it was written, the debt then), so the arithmetic is on small numbers and never
 * drifts. The Redis adapter runs the same rule in Lua (adapters/redis_usage_store.ts).
 */
import type { RateDecision } from "@vmp3/shared";

/** Slack, as a fraction of one request's interval, for floating-point error in sums of intervals. */
export const GCRA_SLACK = 1e-6;

/** The outcome of one request: the decision, and the debt to store (null when refused: nothing changes). */
export interface GcraStep {
  decision: RateDecision;
  debt: number | null;
}

/**
 * Counts one request of a subject that owes `debt` (ms, already reduced by the time since it was written), with
 * `limit` requests per `windowMs`. When allowed, `resetSeconds` is when the whole limit is back; when refused,
 * when the next request will be allowed (what Retry-After should say).
 */
export function gcraStep(debt: number, limit: number, windowMs: number): GcraStep {
  const interval = windowMs / limit;
  const next = Math.max(0, debt) + interval;
  if (next > windowMs + interval * GCRA_SLACK) {
    return {
      decision: { allowed: false, limit, remaining: 0, resetSeconds: wholeSeconds(next - windowMs) },
      debt: null,
    };
  }
  const remaining = Math.max(0, Math.floor((windowMs - next) / interval + GCRA_SLACK));
  return { decision: { allowed: true, limit, remaining, resetSeconds: wholeSeconds(next) }, debt: next };
}

/** `ms` as whole seconds, rounded up, at least 1. */
function wholeSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000 - GCRA_SLACK));
}

/** Throws a RangeError unless `limit` is a positive whole number and `windowSeconds` a positive finite number. */
export function checkRate(limit: number, windowSeconds: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`A rate limit must be a whole number of at least 1 (got ${limit})`);
  }
  if (!Number.isFinite(windowSeconds) || windowSeconds <= 0 || windowSeconds > 366 * 86400) {
    throw new RangeError(
      `A rate window must be more than 0 seconds and at most a year (got ${windowSeconds})`,
    );
  }
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** Throws a RangeError unless `day` is YYYY-MM-DD and `bytes` and `limit` are whole numbers of at least 0. */
export function checkBytes(day: string, bytes: number, limit: number): void {
  if (!DAY.test(day)) throw new RangeError(`A day must be YYYY-MM-DD (got ${JSON.stringify(day)})`);
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`A byte count must be a whole number of at least 0 (got ${bytes})`);
  }
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(`A byte limit must be a whole number of at least 0 (got ${limit})`);
  }
}

/** Throws a RangeError unless `ttlSeconds` is a whole number of at least 1. */
export function checkTtl(ttlSeconds: number): void {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError(
      `A reservation's time to live must be a whole number of seconds, at least 1 (got ${ttlSeconds})`,
    );
  }
}

/** Throws a RangeError unless `limit` is a whole number of at least 1 and `ttlSeconds` one of at least 1. */
export function checkSlots(limit: number, ttlSeconds: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`A slot limit must be a whole number of at least 1 (got ${limit})`);
  }
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError(
      `A slot's time to live must be a whole number of seconds, at least 1 (got ${ttlSeconds})`,
    );
  }
}

/** How long a day's byte total is kept: past the day itself, for late readers in other time zones. */
export const BYTES_TTL_SECONDS = 2 * 86400;
