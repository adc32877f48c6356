/**
 * @module
 * A {@linkcode KeyStore} on Redis: each key's JSON under `<prefix>key:<id>`, and the set `<prefix>keys` of every
 * id (for `list`). An insert or removal changes both in one Lua script. Records are checked against the
 * {@linkcode ApiKey} schema when read, so a damaged one fails loudly instead of granting anything.
 */
import type { Redis } from "ioredis";
import { ApiKey, type KeyStore } from "@vmp3/shared";
import { whenConnected } from "./redis_job_store.ts";
import { redisScript } from "./redis_script.ts";
import { parseStoredKey } from "./stored_key.ts";

/** KEYS: the key's record, the set of ids. ARGV: JSON, id. Stores the key only if its id is new. */
const INSERT = redisScript(`
if not redis.call("SET", KEYS[1], ARGV[1], "NX") then return 0 end
redis.call("SADD", KEYS[2], ARGV[2])
return 1`);

/** KEYS: the key's record, the set of ids. ARGV: id. */
const REMOVE = redisScript(`
redis.call("DEL", KEYS[1])
redis.call("SREM", KEYS[2], ARGV[1])
return 1`);

/** How many records one MGET of `list` reads. */
const LIST_BATCH = 200;

/** Options of {@linkcode createRedisKeyStore}. */
export interface RedisKeyStoreOptions {
  /** Prepended to every key (default "vmp3:"). */
  prefix?: string;
  /** How long a first use waits for the connection, in ms (default 1000). */
  connectTimeout?: number;
}

/** The record stored as `json` for key `id`, checked (see {@linkcode parseStoredKey}). */
function parseJson(id: string, json: string): ApiKey {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new Error(`The stored API key ${id} is not valid JSON`, { cause: error });
  }
  return parseStoredKey(id, value);
}

/** Creates a {@linkcode KeyStore} on `redis`, its keys starting with `prefix` (default "vmp3:"). */
export function createRedisKeyStore(redis: Redis, options: RedisKeyStoreOptions = {}): KeyStore {
  const prefix = options.prefix ?? "vmp3:";
  const connectTimeout = options.connectTimeout ?? 1000;
  const recordOf = (id: string) => `${prefix}key:${id}`;
  const ids = `${prefix}keys`;
  return {
    async get(id) {
      await whenConnected(redis, connectTimeout);
      const json = await redis.get(recordOf(id));
      return json === null ? null : parseJson(id, json);
    },
    async insert(key) {
      const valid = ApiKey.parse(key);
      await whenConnected(redis, connectTimeout);
      return await INSERT(redis, [recordOf(valid.id), ids], [JSON.stringify(valid), valid.id]) === 1;
    },
    async list() {
      await whenConnected(redis, connectTimeout);
      const all = (await redis.smembers(ids)).sort();
      const keys: ApiKey[] = [];
      for (let i = 0; i < all.length; i += LIST_BATCH) {
        const batch = all.slice(i, i + LIST_BATCH);
        const records = await redis.mget(batch.map(recordOf));
        batch.forEach((id, j) => {
          const json = records[j];
          if (json !== null) keys.push(parseJson(id, json)); // null: removed since SMEMBERS
        });
      }
      return keys;
    },
    async remove(id) {
      await whenConnected(redis, connectTimeout);
      await REMOVE(redis, [recordOf(id), ids], [id]);
    },
  };
}
