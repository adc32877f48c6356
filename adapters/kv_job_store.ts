/** A JobStore on Deno KV, for the embedded mode (a file) and for tests (":memory:"). */
import { Job, type JobStore } from "@vmp3/shared";

/** Creates a JobStore keeping jobs under ["jobs", id] in `kv`. */
export function createKvJobStore(kv: Deno.Kv): JobStore {
  const keyOf = (id: string): Deno.KvKey => ["jobs", id];
  return {
    async get(id) {
      const entry = await kv.get<unknown>(keyOf(id));
      return entry.value === null ? null : Job.parse(entry.value);
    },
    async insert(job) {
      const key = keyOf(job.id);
      const result = await kv.atomic().check({ key, versionstamp: null }).set(key, job).commit();
      return result.ok;
    },
    async update(id, change) {
      for (;;) {
        const entry = await kv.get<unknown>(keyOf(id));
        if (entry.value === null) return null;
        const current = Job.parse(entry.value);
        const next = change(current);
        if (next === current) return current;
        const result = await kv.atomic().check(entry).set(entry.key, next).commit();
        if (result.ok) return next;
      }
    },
  };
}
