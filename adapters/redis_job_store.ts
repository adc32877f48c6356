/**
 * @module
 * A {@linkcode JobStore} on Redis: one JSON string per job, updated by compare-and-set so concurrent writers
 * never lose an update. The client fails fast when Redis is down instead of queueing commands.
 *
 * Keys (under the prefix): `job:<id>` the job's JSON; `outbox` (sorted set, score created-at ms, or the time it
 * was queued again for a retried job) the queued jobs whose task is not known to be published; `owner:<owner>` and `unowned` (sorted sets, all scores 0, members
 * `<created-at ms, 15 digits>:<id>`, so that lexical order is list order) each owner's jobs; `expiry` (sorted set,
 * score expires-at ms) the jobs with an `expiresAt` and no `expiredAt`. Every write of a job updates its index
 * entries in the same Lua script.
 */
import { Redis } from "ioredis";
import { isFinal, Job, type JobStore } from "@vmp3/shared";
import { checkLimit, collectPage, decodeCursor, type IndexEntry, type ListPosition } from "./job_page.ts";

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

/**
 * KEYS: job, outbox, owner index, expiry. ARGV: job JSON, created-at ms, "1" if queued, id, owner index member,
 * expiry score ("" for none). Sets the job if new, queues it and indexes it.
 */
const INSERT = `
if not redis.call("SET", KEYS[1], ARGV[1], "NX") then return 0 end
if ARGV[3] == "1" then redis.call("ZADD", KEYS[2], ARGV[2], ARGV[4]) end
redis.call("ZADD", KEYS[3], 0, ARGV[5])
if ARGV[6] ~= "" then redis.call("ZADD", KEYS[4], ARGV[6], ARGV[4]) end
return 1`;

/**
 * KEYS: job, outbox, old owner index, new owner index, expiry. ARGV: old JSON, new JSON, old member, new member,
 * "1" if final, expiry score ("" for none), id, outbox score when queued again ("" if not). Replaces the job only
 * if it still holds the old JSON, and moves its index entries along (the owner entry is added every time, which
 * also indexes a job stored before indexes).
 */
const UPDATE = `
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[2])
if KEYS[3] ~= KEYS[4] or ARGV[3] ~= ARGV[4] then redis.call("ZREM", KEYS[3], ARGV[3]) end
redis.call("ZADD", KEYS[4], 0, ARGV[4])
if ARGV[6] == "" then redis.call("ZREM", KEYS[5], ARGV[7]) else redis.call("ZADD", KEYS[5], ARGV[6], ARGV[7]) end
if ARGV[5] == "1" then redis.call("ZREM", KEYS[2], ARGV[7]) end
if ARGV[8] ~= "" then redis.call("ZADD", KEYS[2], ARGV[8], ARGV[7]) end
return 1`;

/**
 * KEYS: job, outbox, owner index, expiry. ARGV: JSON, owner index member, id. Deletes the job and its index
 * entries, only if it still holds that JSON.
 */
const REMOVE = `
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[3], ARGV[2])
redis.call("ZREM", KEYS[4], ARGV[3])
redis.call("ZREM", KEYS[2], ARGV[3])
return 1`;

/** How many owner index entries one round trip of `list` reads when it filters by status. */
const SCAN_BATCH = 200;

/** The owner index member of a job at `position`: lexical order of members is creation order, then id order. */
function memberOf(position: ListPosition): string {
  return `${String(position.createdAt).padStart(15, "0")}:${position.id}`;
}

function positionOfMember(member: string): ListPosition {
  const colon = member.indexOf(":");
  return { createdAt: Number(member.slice(0, colon)), id: member.slice(colon + 1) };
}

/** The expiry index score of `job`, "" when it is not waiting to expire. */
function expiryScore(job: Job): string {
  return job.expiresAt !== undefined && job.expiredAt === undefined ? String(Date.parse(job.expiresAt)) : "";
}

/** How often an update tries again after another writer changed the job under it. */
const MAX_TRIES = 20;

/** The wait for each client's first connection, shared by every caller meanwhile. */
const connecting = new WeakMap<Redis, Promise<void>>();

/**
 * Waits, up to `timeoutMs`, for a client that has not connected yet: with the offline queue off, a command sent
 * before the first connection would fail at once. A client that is reconnecting after an outage is not waited for.
 * Callers that come meanwhile share one wait (and its time limit), so a burst of first calls adds one set of
 * listeners to the client, not one per call.
 */
export function whenConnected(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  if (redis.status === "wait") redis.connect().catch(() => {});
  if (redis.status !== "connecting" && redis.status !== "connect") return Promise.resolve();
  const pending = connecting.get(redis);
  if (pending) return pending;
  const wait = new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer);
      connecting.delete(redis);
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
  connecting.set(redis, wait);
  return wait;
}

/** Creates a {@linkcode JobStore} keeping each job as JSON under `<prefix>job:<id>`. */
export function createRedisJobStore(redis: Redis, options: RedisJobStoreOptions = {}): JobStore {
  const prefix = options.prefix ?? "vmp3:";
  const connectTimeout = options.connectTimeout ?? 1000;
  const keyOf = (id: string) => `${prefix}job:${id}`;
  const outbox = `${prefix}outbox`;
  const expiry = `${prefix}expiry`;
  const indexOf = (owner: string | undefined) =>
    owner === undefined ? `${prefix}unowned` : `${prefix}owner:${owner}`;
  const memberOfJob = (job: Job) => memberOf({ createdAt: Date.parse(job.createdAt), id: job.id });
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
        4,
        keyOf(valid.id),
        outbox,
        indexOf(valid.owner),
        expiry,
        JSON.stringify(valid),
        created,
        queued,
        valid.id,
        memberOfJob(valid),
        expiryScore(valid),
      ) === 1;
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
        const written = await redis.eval(
          UPDATE,
          5,
          key,
          outbox,
          indexOf(job.owner),
          indexOf(next.owner),
          expiry,
          old,
          json,
          memberOfJob(job),
          memberOfJob(next),
          isFinal(next.status) ? "1" : "0",
          expiryScore(next),
          id,
          // Queued again after it ended (a retry): back in the outbox, as of now, until its task is published.
          isFinal(job.status) && next.status === "queued" ? String(Date.parse(next.updatedAt)) : "",
        );
        if (written === 1) return next;
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

    async list(query) {
      checkLimit(query.limit);
      const after = query.cursor === undefined ? null : decodeCursor(query.cursor);
      await whenConnected(redis, connectTimeout);
      const index = indexOf(query.owner);
      // Without a filter one page (and one more, to know whether another follows) is all that is read.
      const batch = query.status === undefined ? query.limit + 1 : SCAN_BATCH;
      async function* entries(): AsyncGenerator<IndexEntry> {
        let max = after === null ? "+" : `(${memberOf(after)}`;
        for (;;) {
          const members = await redis.zrevrangebylex(index, max, "-", "LIMIT", 0, batch);
          if (members.length === 0) return;
          const positions = members.map(positionOfMember);
          const values = await redis.mget(positions.map((p) => keyOf(p.id)));
          for (const [i, position] of positions.entries()) {
            const json = values[i];
            yield { position, job: json === null ? null : parse(position.id, json) };
          }
          if (members.length < batch) return;
          max = `(${members[members.length - 1]}`;
        }
      }
      return await collectPage(query, entries());
    },

    async expiring(now, limit) {
      await whenConnected(redis, connectTimeout);
      return await redis.zrangebyscore(expiry, "-inf", `(${now.getTime()}`, "LIMIT", 0, limit);
    },

    async remove(id) {
      const key = keyOf(id);
      await whenConnected(redis, connectTimeout);
      for (let attempt = 1; attempt <= MAX_TRIES; attempt++) {
        const old = await redis.get(key);
        if (old === null) return;
        const job = parse(id, old);
        const args = [key, outbox, indexOf(job.owner), expiry, old, memberOfJob(job), id];
        if (await redis.eval(REMOVE, 4, ...args) === 1) return;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(2 ** attempt, 50)));
      }
      throw new Error(`Removal of job ${id} gave up after ${MAX_TRIES} conflicting writes`);
    },
  };
}
export { createRedisOutputCache } from "./redis_output_cache.ts";
