/**
 * @module
 * An {@linkcode OutputCache} on Redis. Each cache entry is a hash `<prefix>cache:<key>` holding the output and its
 * storage key; the jobs using a stored MP3 are a set `<prefix>users:<outputKey>`, and `<prefix>entry:<outputKey>`
 * names the cache key that offers it. Every change is one Lua script, so a claim never races a release.
 */
import type { Redis } from "ioredis";
import { JobOutput, type OutputCache } from "@vmp3/shared";
import { whenConnected } from "./redis_job_store.ts";

/** KEYS: cache entry. ARGV: prefix, job id. Adds the job to the entry's users; returns the output JSON or nil. */
const CLAIM = `
local outputKey = redis.call("HGET", KEYS[1], "outputKey")
if not outputKey then return false end
redis.call("SADD", ARGV[1] .. "users:" .. outputKey, ARGV[2])
return redis.call("HGET", KEYS[1], "output")`;

/** KEYS: cache entry. ARGV: prefix, job id, output key, output JSON, cache key. */
const REMEMBER = `
if redis.call("EXISTS", KEYS[1]) == 0 then
  redis.call("HSET", KEYS[1], "outputKey", ARGV[3], "output", ARGV[4])
  redis.call("SET", ARGV[1] .. "entry:" .. ARGV[3], ARGV[5])
end
redis.call("SADD", ARGV[1] .. "users:" .. ARGV[3], ARGV[2])
return 1`;

/** ARGV: prefix, output key, job id. Returns 1 when the output has no user left (its entry is then removed). */
const RELEASE = `
local users = ARGV[1] .. "users:" .. ARGV[2]
redis.call("SREM", users, ARGV[3])
if redis.call("SCARD", users) > 0 then return 0 end
local entry = ARGV[1] .. "entry:" .. ARGV[2]
local key = redis.call("GET", entry)
if key then
  local cache = ARGV[1] .. "cache:" .. key
  if redis.call("HGET", cache, "outputKey") == ARGV[2] then redis.call("DEL", cache) end
  redis.call("DEL", entry)
end
return 1`;

/** Creates an {@linkcode OutputCache} on `redis`, its keys starting with `prefix` (default "vmp3:"). */
export function createRedisOutputCache(
  redis: Redis,
  options: { prefix?: string; connectTimeout?: number } = {},
): OutputCache {
  const prefix = options.prefix ?? "vmp3:";
  const connectTimeout = options.connectTimeout ?? 1000;
  const entryOf = (key: string) => `${prefix}cache:${key}`;
  return {
    async claim(key, jobId) {
      await whenConnected(redis, connectTimeout);
      const json = await redis.eval(CLAIM, 1, entryOf(key), prefix, jobId) as string | null;
      return json === null ? null : JobOutput.parse(JSON.parse(json));
    },
    async remember(key, output, jobId) {
      const valid = JobOutput.parse(output);
      await whenConnected(redis, connectTimeout);
      await redis.eval(REMEMBER, 1, entryOf(key), prefix, jobId, valid.key, JSON.stringify(valid), key);
    },
    async release(outputKey, jobId) {
      await whenConnected(redis, connectTimeout);
      return await redis.eval(RELEASE, 0, prefix, outputKey, jobId) === 1;
    },
  };
}
