/** A JobStore on Deno KV, for the embedded mode (a file) and for tests (":memory:"). */
import { isFinal, Job, type JobStore } from "@vmp3/shared";

/** Creates a JobStore keeping jobs under ["jobs", id] in `kv`, and the outbox under ["outbox", createdAt, id]. */
export function createKvJobStore(kv: Deno.Kv): JobStore {
  const keyOf = (id: string): Deno.KvKey => ["jobs", id];
  const outboxKey = (job: Job): Deno.KvKey => ["outbox", Date.parse(job.createdAt), job.id];
  return {
    async get(id) {
      const entry = await kv.get<unknown>(keyOf(id));
      return entry.value === null ? null : Job.parse(entry.value);
    },
    async insert(job) {
      const key = keyOf(job.id);
      const op = kv.atomic().check({ key, versionstamp: null }).set(key, job);
      if (job.status === "queued") op.set(outboxKey(job), true);
      return (await op.commit()).ok;
    },
    async update(id, change) {
      for (;;) {
        const entry = await kv.get<unknown>(keyOf(id));
        if (entry.value === null) return null;
        const current = Job.parse(entry.value);
        const next = change(current);
        if (next === current) return current;
        const op = kv.atomic().check(entry).set(entry.key, next);
        if (isFinal(next.status)) op.delete(outboxKey(next));
        if ((await op.commit()).ok) return next;
      }
    },
    async markPublished(id) {
      const entry = await kv.get<unknown>(keyOf(id));
      if (entry.value !== null) await kv.delete(outboxKey(Job.parse(entry.value)));
    },
    async unpublished(before, limit) {
      const ids: string[] = [];
      const end: Deno.KvKey = ["outbox", before.getTime()];
      for await (const entry of kv.list({ start: ["outbox"], end }, { limit })) {
        ids.push(String(entry.key[2]));
      }
      return ids;
    },
  };
}
