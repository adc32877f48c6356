/**
 * @module
 * A {@linkcode UsageStore} on Deno KV, for the embedded mode. Every change is an atomic operation checked against
 * the versionstamp it read, tried again when another caller changed the entry in between, so concurrent callers
 * never pass a limit together.
 *
 * Keys: ["rate", subject] the subject's rate state `{ at, debt }` (ms; the GCRA of adapters/usage_rules.ts),
 * expiring when the debt is paid; ["bytes", day, subject] the day's byte total, expiring 2 days after its last
 * addition; ["reserve", name] `{ value, expiresAt }`; ["slots", subject, holder] when that slot ends (ms), and
 * ["slot_guard", subject], rewritten with every change of the subject's slots. KV deletes expired entries only eventually, so the code
 * never relies on expiry: a paid debt reads as 0, and a reservation or slot past its end as free.
 */
import type { UsageStore } from "@vmp3/shared";
import { BYTES_TTL_SECONDS, checkBytes, checkRate, checkSlots, checkTtl, gcraStep } from "./usage_rules.ts";

/** The most ended slots one claim deletes (KV's atomic operations are bounded). */
const MAX_SWEPT_SLOTS = 500;

interface RateState {
  /** When the debt was written, ms since the epoch. */
  at: number;
  /** The debt then, ms. */
  debt: number;
}

interface Reservation {
  value: string;
  /** ms since the epoch. */
  expiresAt: number;
}

function isRateState(value: unknown): value is RateState {
  const state = value as RateState | null;
  return typeof state?.at === "number" && typeof state.debt === "number";
}

function isReservation(value: unknown): value is Reservation {
  const held = value as Reservation | null;
  return typeof held?.value === "string" && typeof held.expiresAt === "number";
}

/** Creates a {@linkcode UsageStore} in `kv`; `now` (default `Date.now`) is its clock, in ms. */
export function createKvUsageStore(kv: Deno.Kv, options: { now?: () => number } = {}): UsageStore {
  const now = options.now ?? Date.now;
  return {
    async hit(subject, limit, windowSeconds) {
      checkRate(limit, windowSeconds);
      const key = ["rate", subject];
      for (;;) {
        const entry = await kv.get<unknown>(key);
        const at = now();
        const state = isRateState(entry.value) ? entry.value : null;
        const owed = state ? Math.max(0, state.debt - (at - state.at)) : 0;
        const step = gcraStep(owed, limit, windowSeconds * 1000);
        if (step.debt === null) return step.decision; // refused: nothing to write
        const result = await kv.atomic()
          .check(entry)
          .set(key, { at, debt: step.debt } satisfies RateState, { expireIn: Math.ceil(step.debt) })
          .commit();
        if (result.ok) return step.decision;
      }
    },
    async addBytes(subject, day, bytes, limit) {
      checkBytes(day, bytes, limit);
      const key = ["bytes", day, subject];
      for (;;) {
        const entry = await kv.get<unknown>(key);
        const total = typeof entry.value === "number" ? entry.value : 0;
        if (total + bytes > limit) return null;
        const result = await kv.atomic()
          .check(entry)
          .set(key, total + bytes, { expireIn: BYTES_TTL_SECONDS * 1000 })
          .commit();
        if (result.ok) return total + bytes;
      }
    },
    async reserve(name, value, ttlSeconds) {
      checkTtl(ttlSeconds);
      const key = ["reserve", name];
      for (;;) {
        const entry = await kv.get<unknown>(key);
        const at = now();
        const current = isReservation(entry.value) && entry.value.expiresAt > at ? entry.value.value : null;
        if (current !== null && current !== value) return current;
        const held: Reservation = { value, expiresAt: at + ttlSeconds * 1000 };
        const result = await kv.atomic()
          .check(entry)
          .set(key, held, { expireIn: ttlSeconds * 1000 })
          .commit();
        if (result.ok) return value;
      }
    },
    async unreserve(name, value) {
      const key = ["reserve", name];
      for (;;) {
        const entry = await kv.get<unknown>(key);
        if (!isReservation(entry.value) || entry.value.value !== value) return;
        if ((await kv.atomic().check(entry).delete(key).commit()).ok) return;
      }
    },
    async claimSlot(subject, holder, limit, ttlSeconds) {
      checkSlots(limit, ttlSeconds);
      const guardKey = ["slot_guard", subject];
      for (;;) {
        // Every change of the subject's slots rewrites its guard in the same atomic operation: checked below, it
        // makes the listing and the write one step.
        const guard = await kv.get(guardKey);
        const at = now();
        const live: string[] = [];
        const ended: Deno.KvKey[] = [];
        for await (const entry of kv.list<unknown>({ prefix: ["slots", subject] })) {
          if (typeof entry.value === "number" && entry.value > at) live.push(String(entry.key[2]));
          else if (ended.length < MAX_SWEPT_SLOTS) ended.push(entry.key);
        }
        const holds = live.includes(holder);
        if (!holds && live.length >= limit) return null;
        const op = kv.atomic().check(guard)
          .set(["slots", subject, holder], at + ttlSeconds * 1000, { expireIn: ttlSeconds * 1000 })
          .set(guardKey, at);
        for (const key of ended) op.delete(key);
        if ((await op.commit()).ok) return holds ? live : [...live, holder];
      }
    },
    async releaseSlot(subject, holder) {
      await kv.atomic().delete(["slots", subject, holder]).set(["slot_guard", subject], now()).commit();
    },
  };
}
