/**
 * @module
 * A {@linkcode JobEventLog} on Redis Streams: one stream per job (XADD with an approximate MAXLEN), read with
 * XREAD BLOCK on connections of its own (a blocked connection can serve nothing else), and expiring some time after
 * the job is final.
 */
import type { Redis } from "ioredis";
import type { JobEventLog, JobLogEntry } from "@vmp3/shared";
import { whenConnected } from "./redis_job_store.ts";

/** Options of {@linkcode createRedisEventLog}. */
export interface RedisEventLogOptions {
  /** Prepended to every key (default "vmp3:"). */
  prefix?: string;
  /** About how many entries a job's log keeps (default 1000; the oldest go first). */
  maxLen?: number;
  /** A log expires this long after its last entry, in seconds (default 7 days). */
  ttlSeconds?: number;
  /** A log expires this long after its final entry, in seconds (default 1 hour). */
  finalTtlSeconds?: number;
  /** The longest a read may block, in ms (default 30 000); longer asks are cut to it. */
  maxBlockMs?: number;
  /** How many idle blocking connections are kept for the next reads (default 4). */
  idleConnections?: number;
  /** How long a first use waits for the connection, in ms (default 1000). */
  connectTimeout?: number;
}

/** A Redis stream id: milliseconds, a dash, a sequence number. */
const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

type StreamEntry = [id: string, fields: string[]];

function toEntry([id, fields]: StreamEntry): JobLogEntry {
  const value: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) value[fields[i]] = fields[i + 1];
  return { id, type: value.type, job: JSON.parse(value.job) };
}

/** A JobEventLog on `redis`, plus `close()` to end its blocking connections (not `redis` itself). */
export function createRedisEventLog(
  redis: Redis,
  options: RedisEventLogOptions = {},
): JobEventLog & { close(): void } {
  const prefix = options.prefix ?? "vmp3:";
  const maxLen = options.maxLen ?? 1000;
  const ttl = options.ttlSeconds ?? 7 * 24 * 3600;
  const finalTtl = options.finalTtlSeconds ?? 3600;
  const maxBlockMs = options.maxBlockMs ?? 30_000;
  const keepIdle = options.idleConnections ?? 4;
  const connectTimeout = options.connectTimeout ?? 1000;
  const ready = () => whenConnected(redis, connectTimeout);
  const key = (jobId: string) => `${prefix}joblog:${jobId}`;

  const idle: Redis[] = [];
  const busy = new Set<Redis>();
  let closed = false;

  async function acquire(): Promise<Redis> {
    const conn = idle.pop() ??
      // A blocked read outlasts the shared client's short command timeout.
      redis.duplicate({ commandTimeout: maxBlockMs + 5000, lazyConnect: true });
    busy.add(conn);
    await whenConnected(conn, 2000);
    return conn;
  }

  function release(conn: Redis, healthy: boolean): void {
    busy.delete(conn);
    if (healthy && !closed && idle.length < keepIdle) idle.push(conn);
    else conn.disconnect();
  }

  return {
    async append(jobId, entry, appendOptions = {}) {
      await ready();
      const results = await redis.multi()
        .xadd(key(jobId), "MAXLEN", "~", maxLen, "*", "type", entry.type, "job", JSON.stringify(entry.job))
        .expire(key(jobId), appendOptions.final ? finalTtl : ttl)
        .exec();
      const [error, id] = results?.[0] ?? [new Error("The append was not run")];
      if (error) throw error;
      return id as string;
    },

    async read(jobId, afterId, readOptions) {
      const after = afterId ?? "0-0";
      if (!STREAM_ID.test(after)) throw new RangeError(`${JSON.stringify(after)} is not a stream id`);
      const count = readOptions.limit ?? 100;
      if (readOptions.blockMs <= 0) {
        await ready();
        const entries = await redis.xrange(key(jobId), `(${after}`, "+", "COUNT", count) as StreamEntry[];
        return entries.map(toEntry);
      }
      const conn = await acquire();
      let healthy = false;
      try {
        const block = Math.min(Math.ceil(readOptions.blockMs), maxBlockMs);
        const result = await conn.xread("COUNT", count, "BLOCK", block, "STREAMS", key(jobId), after);
        healthy = true;
        return result ? (result[0][1] as StreamEntry[]).map(toEntry) : [];
      } finally {
        release(conn, healthy);
      }
    },

    async lastId(jobId) {
      await ready();
      const [last] = await redis.xrevrange(key(jobId), "+", "-", "COUNT", 1) as StreamEntry[];
      return last ? last[0] : null;
    },

    async has(jobId, id) {
      if (!STREAM_ID.test(id)) return false;
      await ready();
      const found = await redis.xrange(key(jobId), id, id, "COUNT", 1);
      return found.length > 0;
    },

    close() {
      closed = true;
      for (const conn of [...idle.splice(0), ...busy]) conn.disconnect();
      busy.clear();
    },
  };
}
