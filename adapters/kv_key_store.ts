/**
 * @module
 * A {@linkcode KeyStore} on Deno KV, for the embedded mode: each key's record under ["keys", id]. Records are
 * checked against the {@linkcode ApiKey} schema when read, so a damaged one fails loudly instead of granting
 * anything.
 */
import { ApiKey, type KeyStore } from "@vmp3/shared";
import { parseStoredKey } from "./stored_key.ts";

/** Creates a {@linkcode KeyStore} in `kv`. */
export function createKvKeyStore(kv: Deno.Kv): KeyStore {
  return {
    async get(id) {
      const entry = await kv.get(["keys", id]);
      return entry.value === null ? null : parseStoredKey(id, entry.value);
    },
    async insert(key) {
      const valid = ApiKey.parse(key);
      const result = await kv.atomic()
        .check({ key: ["keys", valid.id], versionstamp: null })
        .set(["keys", valid.id], valid)
        .commit();
      return result.ok;
    },
    async list() {
      const keys: ApiKey[] = [];
      for await (const entry of kv.list({ prefix: ["keys"] })) {
        keys.push(parseStoredKey(String(entry.key[1]), entry.value));
      }
      return keys;
    },
    async remove(id) {
      await kv.delete(["keys", id]);
    },
  };
}
