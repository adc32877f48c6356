/**
 * @module
 * A {@linkcode JobEventLog} on Deno KV, for the embedded mode: each job's entries under ["joblog", jobId, seq] with
 * a counter beside them, the oldest dropped past `maxLen`, all of them expiring some time after the job is final.
 * A blocked read wakes at once on an append in this process, and polls for appends by other processes.
 */
import type { JobEventLog, JobLogEntry } from "@vmp3/shared";

/** Options of {@linkcode createKvEventLog}. */
export interface KvEventLogOptions {
  /** How many entries a job's log keeps (default 1000; the oldest go first). */
  maxLen?: number;
  /** A log expires this long after its last entry, in ms (default 7 days). */
  ttlMs?: number;
  /** A log expires this long after its final entry, in ms (default 1 hour). */
  finalTtlMs?: number;
  /** How often a blocked read looks for entries appended by another process, in ms (default 250). */
  pollMs?: number;
}

/** An id: the append's time in ms, a dash, the entry's sequence number in its log (from 1). */
const ENTRY_ID = /^(\d{1,15})-(\d{1,15})$/;

interface Stored {
  id: string;
  type: string;
  job: JobLogEntry["job"];
  /** When the entry expires, in ms: KV deletes expired keys only eventually, so reads skip them meanwhile. */
  expiresAt: number;
}

const live = (stored: Stored | null): stored is Stored => stored !== null && stored.expiresAt > Date.now();
const shown = ({ id, type, job }: Stored): JobLogEntry => ({ id, type, job });

/** Creates a JobEventLog in `kv`. */
export function createKvEventLog(kv: Deno.Kv, options: KvEventLogOptions = {}): JobEventLog {
  const maxLen = options.maxLen ?? 1000;
  const ttlMs = options.ttlMs ?? 7 * 24 * 3600_000;
  const finalTtlMs = options.finalTtlMs ?? 3600_000;
  const pollMs = options.pollMs ?? 250;
  const entries = (jobId: string): Deno.KvKey => ["joblog", jobId];
  const counter = (jobId: string): Deno.KvKey => ["joblog-seq", jobId];
  const waiters = new Map<string, Set<() => void>>();

  const seqOf = (id: string): number | null => {
    const match = ENTRY_ID.exec(id);
    return match ? Number(match[2]) : null;
  };

  async function list(jobId: string, afterSeq: number, limit: number): Promise<JobLogEntry[]> {
    const found: JobLogEntry[] = [];
    const selector = {
      start: [...entries(jobId), afterSeq + 1],
      end: [...entries(jobId), Number.MAX_SAFE_INTEGER],
    };
    for await (const entry of kv.list<Stored>(selector, { limit })) {
      if (live(entry.value)) found.push(shown(entry.value));
    }
    return found;
  }

  return {
    async append(jobId, entry, appendOptions = {}) {
      const expireIn = appendOptions.final ? finalTtlMs : ttlMs;
      for (;;) {
        const last = await kv.get<number>(counter(jobId));
        const seq = (last.value ?? 0) + 1;
        const id = `${Date.now()}-${seq}`;
        const stored: Stored = { id, type: entry.type, job: entry.job, expiresAt: Date.now() + expireIn };
        const op = kv.atomic()
          .check(last)
          .set(counter(jobId), seq, { expireIn })
          .set([...entries(jobId), seq], stored, { expireIn });
        if (seq > maxLen) op.delete([...entries(jobId), seq - maxLen]);
        if (!(await op.commit()).ok) continue; // another append took this number: take the next
        if (appendOptions.final) {
          // Every entry now expires with the last: rewrite the older ones with the shorter lifetime.
          for await (const old of kv.list<Stored>({ prefix: entries(jobId) })) {
            if (old.value.id === id) continue;
            const value = { ...old.value, expiresAt: stored.expiresAt };
            await kv.atomic().check(old).set(old.key, value, { expireIn }).commit();
          }
        }
        for (const wake of waiters.get(jobId) ?? []) wake();
        return id;
      }
    },

    async read(jobId, afterId, readOptions) {
      const afterSeq = afterId === undefined ? 0 : seqOf(afterId);
      if (afterSeq === null) throw new RangeError(`${JSON.stringify(afterId)} is not an entry id`);
      const limit = readOptions.limit ?? 100;
      const deadline = Date.now() + readOptions.blockMs;
      for (;;) {
        const found = await list(jobId, afterSeq, limit);
        const left = deadline - Date.now();
        if (found.length > 0 || left <= 0) return found;
        await new Promise<void>((resolve) => {
          const set = waiters.get(jobId) ?? new Set();
          waiters.set(jobId, set);
          const done = () => {
            clearTimeout(timer);
            set.delete(done);
            if (set.size === 0) waiters.delete(jobId);
            resolve();
          };
          const timer = setTimeout(done, Math.min(left, pollMs));
          set.add(done);
        });
      }
    },

    async lastId(jobId) {
      for await (const entry of kv.list<Stored>({ prefix: entries(jobId) }, { reverse: true, limit: 1 })) {
        return live(entry.value) ? entry.value.id : null;
      }
      return null;
    },

    async has(jobId, id) {
      const seq = seqOf(id);
      if (seq === null) return false;
      const entry = await kv.get<Stored>([...entries(jobId), seq]);
      return live(entry.value) && entry.value.id === id;
    },
  };
}
