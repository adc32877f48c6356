/**
 * @module
 * A Lua script sent to Redis by its sha1 (EVALSHA), and in full (EVAL) only when the server does not know it yet,
 * after a restart or a SCRIPT FLUSH.
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** Runs a Lua script on `redis` with `keys` and `args`, and resolves with its reply. */
export type RedisScript = (redis: Redis, keys: string[], args: (string | number)[]) => Promise<unknown>;

/** A {@linkcode RedisScript} of `source`: EVALSHA first, EVAL when the server answers NOSCRIPT. */
export function redisScript(source: string): RedisScript {
  const sha = createHash("sha1").update(source).digest("hex");
  return async (redis, keys, args) => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return await redis.eval(source, keys.length, ...keys, ...args);
    }
  };
}
