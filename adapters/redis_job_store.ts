/**
 * @module
 * A {@linkcode JobStore} on Redis: one JSON string per job, updated by compare-and-set so concurrent writers
 * never lose an update. The client fails fast when Redis is down instead of queueing commands.
 */
import { Redis } from "ioredis";
import { isFinal, Job, type JobStore } from "@vmp3/shared";

/** Options of {@linkcode createRedisClient}. */
export interface RedisClientOptions {
  /** How long one command may take, in ms (default 800: a status read answers, if only 503, within a second). */
  commandTimeout?: number;
  /** Called on connection errors (default: one console.error line per distinct message while the outage lasts). */
  onError?: (error: Error) => void;
}

/** Creates an ioredis client that connects on first use and fails fast while Redis is unreachable. */
export function createRedisClient(url: string, options: RedisClientOptions = {}): Redis {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    commandTimeout: options.commandTimeout ?? 800,
    connectTimeout: 2000,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000) + Math.floor(Math.random() * 100),
  });
  let last = "";
  const onError = options.onError ?? ((error: Error) => {
    if (error.message === last) return;
    last = error.message;
    console.error(`redis: ${error.message}`);
  });
  redis.on("error", onError);
  redis.on("ready", () => last = "");
  return redis;
}

/** Options of {@linkcode createRedisJobStore}. */
export interface RedisJobStoreOptions {
  /** Prepended to every key (default "vmp3:"). */
  prefix?: string;
  /** How long a first use waits for the connection, in ms (default 1000). */
  connectTimeout?: number;
}

/** Sets KEYS[1] to ARGV[2] only if it still holds ARGV[1]. */
const COMPARE_AND_SET = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2])
  return 1
end
return 0`;

/** KEYS: job, outbox. ARGV: job JSON, created-at ms, "1" if queued, id. Sets the job if new, and queues it. */
const INSERT = `
if not redis.call("SET", KEYS[1], ARGV[1], "NX") then return 0 end
if ARGV[3] == "1" then redis.call("ZADD", KEYS[2], ARGV[2], ARGV[4]) end
return 1`;

/** How often an update tries again after another writer changed the job under it. */
const MAX_TRIES = 20;

/**
 * Waits, up to `timeoutMs`, for a client that has not connected yet: with the offline queue off, a command sent
 * before the first connection would fail at once. A client that is reconnecting after an outage is not waited for.
 */
export function whenConnected(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  if (redis.status === "wait") redis.connect().catch(() => {});
  if (redis.status !== "connecting" && redis.status !== "connect") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer);
      redis.off("ready", onReady);
      redis.off("error", onError);
      redis.off("end", onEnd);
      if (error) reject(error);
      else resolve();
    };
    const onReady = () => done();
    const onError = (error: Error) =>
      done(new Error(`Redis unavailable: ${error.message}`, { cause: error }));
    const onEnd = () => done(new Error("Redis unavailable: connection closed"));
    const timer = setTimeout(
      () => done(new Error(`Redis unavailable: not connected after ${timeoutMs} ms`)),
      timeoutMs,
    );
    redis.on("ready", onReady);
    redis.on("error", onError);
    redis.on("end", onEnd);
  });
}

/** Creates a {@linkcode JobStore} keeping each job as JSON under `<prefix>job:<id>`. */
export function createRedisJobStore(redis: Redis, options: RedisJobStoreOptions = {}): JobStore {
  const prefix = options.prefix ?? "vmp3:";
  const connectTimeout = options.connectTimeout ?? 1000;
  const keyOf = (id: string) => `${prefix}job:${id}`;
  const outbox = `${prefix}outbox`;
  const parse = (id: string, json: string): Job => {
    try {
      return Job.parse(JSON.parse(json));
    } catch (error) {
      throw new Error(`The stored job ${id} is not a valid job`, { cause: error });
    }
  };

  return {
    async get(id) {
      await whenConnected(redis, connectTimeout);
      const json = await redis.get(keyOf(id));
      return json === null ? null : parse(id, json);
    },

    async insert(job) {
      const valid = Job.parse(job);
      await whenConnected(redis, connectTimeout);
      const queued = valid.status === "queued" ? "1" : "0";
      const created = Date.parse(valid.createdAt);
      return await redis.eval(
        INSERT,
        2,
        keyOf(valid.id),
        outbox,
        JSON.stringify(valid),
        created,
        queued,
        valid.id,
      ) ===
        1;
    },

    async update(id, change) {
      const key = keyOf(id);
      await whenConnected(redis, connectTimeout);
      for (let attempt = 1; attempt <= MAX_TRIES; attempt++) {
        const old = await redis.get(key);
        if (old === null) return null;
        const job = parse(id, old);
        const changed = change(job);
        if (changed === job) return job;
        const next = Job.parse(changed);
        if (next.id !== id) throw new Error(`An update may not change a job's id (${id} -> ${next.id})`);
        const json = JSON.stringify(next);
        if (json === old) return next;
        if (await redis.eval(COMPARE_AND_SET, 1, key, old, json) === 1) {
          if (isFinal(next.status)) await redis.zrem(outbox, id);
          return next;
        }
        // Another writer got there first: spread the retries out so a crowd of writers does not collide again.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(2 ** attempt, 50)));
      }
      throw new Error(`Update of job ${id} gave up after ${MAX_TRIES} conflicting writes`);
    },

    async markPublished(id) {
      await whenConnected(redis, connectTimeout);
      await redis.zrem(outbox, id);
    },

    async unpublished(before, limit) {
      await whenConnected(redis, connectTimeout);
      return await redis.zrangebyscore(outbox, "-inf", `(${before.getTime()}`, "LIMIT", 0, limit);
    },
  };
}
export { createRedisOutputCache } from "./redis_output_cache.ts";
