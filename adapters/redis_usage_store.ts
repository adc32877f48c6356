/**
 * @module
 * A {@linkcode UsageStore} on Redis, shared by every instance of a service. Each operation is one Lua script
 * (sent by EVALSHA, see adapters/redis_script.ts), so concurrent callers never pass a limit together.
 *
 * Keys (under the prefix): `rate:<subject>` the subject's rate state, "<µs when written> <debt in µs>" (the GCRA
 * of adapters/usage_rules.ts, on the Redis server's clock, so instances with skewed clocks agree), expiring when
 * the debt is paid; `bytes:<day>:<subject>` the day's byte total, expiring 2 days after its last addition;
 * `reserve:<name>` the value holding a reservation, expiring with it; `slots:<subject>` a sorted set of the
 * holders of the subject's slots, each scored with when its slot ends (ms, server clock), the key expiring with
 * its last slot.
 */
import type { Redis } from "ioredis";
import type { RateDecision, UsageStore } from "@vmp3/shared";
import { whenConnected } from "./redis_job_store.ts";
import { redisScript } from "./redis_script.ts";
import { BYTES_TTL_SECONDS, checkBytes, checkRate, checkSlots, checkTtl, GCRA_SLACK } from "./usage_rules.ts";

/**
 * KEYS: the subject's rate state. ARGV: limit, window in µs, slack. Returns {allowed 1|0, remaining,
 * resetSeconds}, as `gcraStep` in adapters/usage_rules.ts does.
 */
const HIT = redisScript(`
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])
local interval = window / limit
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local debt = 0
local state = redis.call("GET", KEYS[1])
if state then
  local at, owed = string.match(state, "^(%S+) (%S+)$")
  at, owed = tonumber(at), tonumber(owed)
  if at and owed then debt = math.max(0, owed - (now - at)) end
end
local nextDebt = debt + interval
if nextDebt > window + interval * slack then
  return {0, 0, math.max(1, math.ceil((nextDebt - window) / 1000000 - slack))}
end
redis.call("SET", KEYS[1], string.format("%.17g %.17g", now, nextDebt), "PX", math.ceil(nextDebt / 1000))
local remaining = math.max(0, math.floor((window - nextDebt) / interval + slack))
return {1, remaining, math.max(1, math.ceil(nextDebt / 1000000 - slack))}`);

/** KEYS: the day's total. ARGV: bytes, limit, ttl seconds. Returns the new total, or nil (nothing added). */
const ADD_BYTES = redisScript(`
local total = tonumber(redis.call("GET", KEYS[1]) or "0")
if total + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return false end
local after = redis.call("INCRBY", KEYS[1], ARGV[1])
redis.call("EXPIRE", KEYS[1], ARGV[3])
return after`);

/**
 * KEYS: the reservation. ARGV: value, ttl seconds. Returns the value holding it now; the holder reserving again
 * gets its ttl back.
 */
const RESERVE = redisScript(`
if redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2]) then return ARGV[1] end
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] then redis.call("EXPIRE", KEYS[1], ARGV[2]) end
return holder`);

/**
 * KEYS: the slots (a sorted set, score: when each slot ends, ms on the server's clock). ARGV: holder, limit, ttl
 * seconds. Drops the ended slots, then takes (or renews) the holder's; returns every holder, or nil when full.
 */
const CLAIM_SLOT = redisScript(`
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if not redis.call("ZSCORE", KEYS[1], ARGV[1]) and redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[2]) then
  return false
end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[3]) * 1000, ARGV[1])
local last = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
redis.call("PEXPIREAT", KEYS[1], last[2])
return redis.call("ZRANGE", KEYS[1], 0, -1)`);

/** KEYS: the reservation. ARGV: value. Deletes it only while that value holds it. */
const UNRESERVE = redisScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`);

/** Options of {@linkcode createRedisUsageStore}. */
export interface RedisUsageStoreOptions {
  /** Prepended to every key (default "vmp3:"). */
  prefix?: string;
  /** How long a first use waits for the connection, in ms (default 1000). */
  connectTimeout?: number;
}

/**
 * Creates a {@linkcode UsageStore} on `redis` (made by `createRedisClient`, so that an outage rejects at once or
 * within its command timeout instead of hanging), its keys starting with `prefix` (default "vmp3:").
 */
export function createRedisUsageStore(redis: Redis, options: RedisUsageStoreOptions = {}): UsageStore {
  const prefix = options.prefix ?? "vmp3:";
  const connectTimeout = options.connectTimeout ?? 1000;
  return {
    async hit(subject, limit, windowSeconds) {
      checkRate(limit, windowSeconds);
      await whenConnected(redis, connectTimeout);
      const windowUs = Math.round(windowSeconds * 1e6);
      const reply = await HIT(redis, [`${prefix}rate:${subject}`], [limit, windowUs, GCRA_SLACK]);
      const [allowed, remaining, resetSeconds] = reply as [number, number, number];
      const decision: RateDecision = { allowed: allowed === 1, limit, remaining, resetSeconds };
      return decision;
    },
    async addBytes(subject, day, bytes, limit) {
      checkBytes(day, bytes, limit);
      await whenConnected(redis, connectTimeout);
      const total = await ADD_BYTES(redis, [`${prefix}bytes:${day}:${subject}`], [
        bytes,
        limit,
        BYTES_TTL_SECONDS,
      ]);
      return total === null ? null : Number(total);
    },
    async reserve(name, value, ttlSeconds) {
      checkTtl(ttlSeconds);
      await whenConnected(redis, connectTimeout);
      return String(await RESERVE(redis, [`${prefix}reserve:${name}`], [value, ttlSeconds]));
    },
    async unreserve(name, value) {
      await whenConnected(redis, connectTimeout);
      await UNRESERVE(redis, [`${prefix}reserve:${name}`], [value]);
    },
    async claimSlot(subject, holder, limit, ttlSeconds) {
      checkSlots(limit, ttlSeconds);
      await whenConnected(redis, connectTimeout);
      const holders = await CLAIM_SLOT(redis, [`${prefix}slots:${subject}`], [holder, limit, ttlSeconds]);
      return holders === null ? null : (holders as unknown[]).map(String);
    },
    async releaseSlot(subject, holder) {
      await whenConnected(redis, connectTimeout);
      await redis.zrem(`${prefix}slots:${subject}`, holder);
    },
  };
}
