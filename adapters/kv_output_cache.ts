/**
 * An OutputCache on Deno KV, for the embedded mode: ["cache", key] holds the output, ["users", outputKey, jobId]
 * counts each job using a stored MP3, and ["entry", outputKey] names the cache key that offers it.
 */
import { JobOutput, type OutputCache } from "@vmp3/shared";

/** Creates an OutputCache in `kv`. */
export function createKvOutputCache(kv: Deno.Kv): OutputCache {
  return {
    async claim(key, jobId) {
      for (;;) {
        const entry = await kv.get<unknown>(["cache", key]);
        if (entry.value === null) return null;
        const output = JobOutput.parse(entry.value);
        // Only while the entry is unchanged: a release that removed it in between wins, and this is a miss. Writing
        // ["entry", key] again changes its versionstamp, so a release that counted no user before this claim
        // fails its own check and counts again.
        const result = await kv.atomic()
          .check(entry)
          .set(["users", output.key, jobId], true)
          .set(["entry", output.key], key)
          .commit();
        if (result.ok) return output;
      }
    },
    async remember(key, output, jobId) {
      const valid = JobOutput.parse(output);
      const offered = await kv.atomic()
        .check({ key: ["cache", key], versionstamp: null })
        .set(["cache", key], valid)
        .set(["entry", valid.key], key)
        .set(["users", valid.key, jobId], true)
        .commit();
      if (!offered.ok) await kv.set(["users", valid.key, jobId], true); // another output is offered for the key
    },
    async release(outputKey, jobId) {
      await kv.delete(["users", outputKey, jobId]);
      for (;;) {
        // The entry first: a claim after this read rewrites it, and the check below then fails.
        const entry = await kv.get<string>(["entry", outputKey]);
        for await (const _ of kv.list({ prefix: ["users", outputKey] }, { limit: 1 })) return false;
        if (entry.value === null) return true; // never offered by the cache, so no claim can add a user
        const cache = await kv.get<{ key?: string }>(["cache", entry.value]);
        const op = kv.atomic().check(entry, cache).delete(entry.key);
        if (cache.value?.key === outputKey) op.delete(cache.key);
        if ((await op.commit()).ok) return true;
      }
    },
  };
}
