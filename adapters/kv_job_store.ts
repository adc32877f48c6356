/**
 * A JobStore on Deno KV, for the embedded mode (a file) and for tests (":memory:").
 *
 * Keys: ["jobs", id] the job; ["outbox", queued-at ms, id] the queued jobs whose task is not known to be
 * published (queued at: created, or queued again by a retry), and ["outbox_at", id] that time, to find the entry; ["owned_jobs", owner, created-at ms, id] and ["unowned_jobs", created-at ms, id] each owner's jobs,
 * holding a copy of the job so that a page is read with one `list`; ["expiring", expires-at ms, id] the jobs with an
 * `expiresAt` and no `expiredAt`. Every write of a job writes its index entries in the same atomic operation,
 * checked against the job's versionstamp.
 */
import { isFinal, Job, type JobStore } from "@vmp3/shared";
import { checkLimit, collectPage, decodeCursor, type IndexEntry } from "./job_page.ts";

/** The key prefix of the owner index of `owner` (absent: the jobs with no owner). */
function ownerPrefix(owner: string | undefined): Deno.KvKey {
  return owner === undefined ? ["unowned_jobs"] : ["owned_jobs", owner];
}

function ownerKey(job: Job): Deno.KvKey {
  return [...ownerPrefix(job.owner), Date.parse(job.createdAt), job.id];
}

/** The expiry index key of `job`, or null when it is not waiting to expire. */
function expiryKey(job: Job): Deno.KvKey | null {
  return job.expiresAt !== undefined && job.expiredAt === undefined
    ? ["expiring", Date.parse(job.expiresAt), job.id]
    : null;
}

function sameKey(a: Deno.KvKey | null, b: Deno.KvKey | null): boolean {
  return a !== null && b !== null && a.length === b.length && a.every((part, i) => part === b[i]);
}

/** Creates a JobStore keeping jobs under ["jobs", id] in `kv`, and the outbox under ["outbox", createdAt, id]. */
export function createKvJobStore(kv: Deno.Kv): JobStore {
  const keyOf = (id: string): Deno.KvKey => ["jobs", id];
  const outboxKey = (job: Job): Deno.KvKey => ["outbox", Date.parse(job.createdAt), job.id];
  const outboxAtKey = (id: string): Deno.KvKey => ["outbox_at", id];
  /** Deletes `job`'s outbox entries in `op`: at its creation time, and at `queuedAt` (the pointer's) if another. */
  const leaveOutbox = (op: Deno.AtomicOperation, job: Job, queuedAt: Deno.KvEntryMaybe<unknown>) => {
    op.delete(outboxKey(job)).delete(queuedAt.key);
    if (typeof queuedAt.value === "number") op.delete(["outbox", queuedAt.value, job.id]);
    return op;
  };
  return {
    async get(id) {
      const entry = await kv.get<unknown>(keyOf(id));
      return entry.value === null ? null : Job.parse(entry.value);
    },
    async insert(job) {
      const key = keyOf(job.id);
      const op = kv.atomic().check({ key, versionstamp: null }).set(key, job).set(ownerKey(job), job);
      if (job.status === "queued") {
        op.set(outboxKey(job), true).set(outboxAtKey(job.id), Date.parse(job.createdAt));
      }
      const expiry = expiryKey(job);
      if (expiry) op.set(expiry, true);
      return (await op.commit()).ok;
    },
    async update(id, change) {
      for (;;) {
        const [entry, queuedAt] = await kv.getMany<unknown[]>([keyOf(id), outboxAtKey(id)]);
        if (entry.value === null) return null;
        const current = Job.parse(entry.value);
        const next = change(current);
        if (next === current) return current;
        const op = kv.atomic().check(entry, queuedAt).set(entry.key, next);
        const [oldOwner, newOwner] = [ownerKey(current), ownerKey(next)];
        if (!sameKey(oldOwner, newOwner)) op.delete(oldOwner);
        op.set(newOwner, next);
        const [oldExpiry, newExpiry] = [expiryKey(current), expiryKey(next)];
        if (oldExpiry && !sameKey(oldExpiry, newExpiry)) op.delete(oldExpiry);
        if (newExpiry) op.set(newExpiry, true);
        if (isFinal(next.status)) leaveOutbox(op, next, queuedAt);
        if (isFinal(current.status) && next.status === "queued") {
          // Queued again after it ended (a retry): back in the outbox, as of now, until its task is published.
          const now = Date.parse(next.updatedAt);
          op.set(["outbox", now, id], true).set(queuedAt.key, now);
        }
        if ((await op.commit()).ok) return next;
      }
    },
    async markPublished(id) {
      const [entry, queuedAt] = await kv.getMany<unknown[]>([keyOf(id), outboxAtKey(id)]);
      if (entry.value !== null) await leaveOutbox(kv.atomic(), Job.parse(entry.value), queuedAt).commit();
    },
    async unpublished(before, limit) {
      const ids: string[] = [];
      const end: Deno.KvKey = ["outbox", before.getTime()];
      for await (const entry of kv.list({ start: ["outbox"], end }, { limit })) {
        ids.push(String(entry.key[2]));
      }
      return ids;
    },
    async list(query) {
      checkLimit(query.limit);
      const after = query.cursor === undefined ? null : decodeCursor(query.cursor);
      const prefix = ownerPrefix(query.owner);
      const selector: Deno.KvListSelector = after === null
        ? { prefix }
        : { prefix, end: [...prefix, after.createdAt, after.id] };
      const batchSize = query.status === undefined ? query.limit + 1 : 200;
      async function* entries(): AsyncGenerator<IndexEntry> {
        for await (const entry of kv.list<unknown>(selector, { reverse: true, batchSize })) {
          const [createdAt, id] = entry.key.slice(-2);
          yield { position: { createdAt: Number(createdAt), id: String(id) }, job: Job.parse(entry.value) };
        }
      }
      return await collectPage(query, entries());
    },
    async expiring(now, limit) {
      const ids: string[] = [];
      const end: Deno.KvKey = ["expiring", now.getTime()];
      for await (const entry of kv.list({ start: ["expiring"], end }, { limit })) {
        ids.push(String(entry.key[2]));
      }
      return ids;
    },
    async remove(id) {
      for (;;) {
        const [entry, queuedAt] = await kv.getMany<unknown[]>([keyOf(id), outboxAtKey(id)]);
        if (entry.value === null) return;
        const job = Job.parse(entry.value);
        const op = leaveOutbox(
          kv.atomic().check(entry, queuedAt).delete(entry.key).delete(ownerKey(job)),
          job,
          queuedAt,
        );
        const expiry = expiryKey(job);
        if (expiry) op.delete(expiry);
        if ((await op.commit()).ok) return;
      }
    },
  };
}
