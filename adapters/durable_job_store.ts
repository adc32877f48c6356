/**
 * A JobStore that keeps a durable record of each job in object storage beside its files (`jobs/{id}.json`), over
 * a fast store (Redis) that may lose everything. The record is written when a job is created and when it reaches
 * a final state; a job the fast store has lost is rebuilt from its record on first use. So a Redis restarted
 * empty still shows every finished job done (and it still downloads), and an event for a job in flight finds it.
 * The record is also written when a job's expiry (`expiresAt`, `expiredAt`) changes, so a rebuilt job still
 * knows its files are gone.
 *
 * `list` and `expiring` ask the fast store alone: after the fast store lost everything they only see the jobs
 * rebuilt so far (each one on its first `get` or `update`), not every job that has a record.
 */
import { type BlobStore, isFinal, Job, JobId, type JobStore } from "@vmp3/shared";

/** Where the record of job `id` is kept. */
export function jobRecordKey(id: string): string {
  return `jobs/${id}.json`;
}

/** Creates a JobStore over `fast`, recording jobs in `records`. */
export function createDurableJobStore(fast: JobStore, records: BlobStore): JobStore {
  const write = async (job: Job) => {
    const body = new TextEncoder().encode(JSON.stringify(job));
    await records.put(jobRecordKey(job.id), ReadableStream.from([body]), { contentType: "application/json" });
  };
  const read = async (id: string): Promise<Job | null> => {
    const object = await records.get(jobRecordKey(id));
    if (!object) return null;
    const parsed = Job.safeParse(JSON.parse(await new Response(object.body).text()));
    if (!parsed.success) {
      throw new Error(`The record of job ${id} is not a valid job`, { cause: parsed.error });
    }
    return parsed.data;
  };
  /** The job from its record, put back into the fast store; null if there is none. */
  const restore = async (id: string): Promise<Job | null> => {
    // Only ids a job can have reach storage: any other is unknown, without a request to the store.
    if (!JobId.safeParse(id).success) return null;
    const job = await read(id);
    if (!job) return null;
    if (!(await fast.insert(job))) return await fast.get(id); // restored meanwhile by another caller
    console.error(`Job ${id} was missing from the job store; rebuilt from its record (${job.status})`);
    return job;
  };

  return {
    async get(id) {
      return await fast.get(id) ?? await restore(id);
    },

    async insert(job) {
      if (!(await fast.insert(job))) return false;
      await write(job);
      return true;
    },

    async update(id, change) {
      let changed = false;
      let expiryChanged = false;
      const apply = (job: Job) => {
        const next = change(job);
        changed = next !== job;
        expiryChanged = next.expiresAt !== job.expiresAt || next.expiredAt !== job.expiredAt;
        return next;
      };
      let job = await fast.update(id, apply);
      if (job === null && await restore(id)) job = await fast.update(id, apply);
      if (job && isFinal(job.status)) {
        // A repeated final event changes nothing, but its first try may have failed to write the record.
        if (changed || !isFinal((await read(id))?.status ?? "queued")) await write(job);
      } else if (job && expiryChanged) {
        await write(job);
      }
      return job;
    },

    markPublished: (id) => fast.markPublished(id),
    unpublished: (before, limit) => fast.unpublished(before, limit),
    // After the fast store lost everything (a Redis wipe), these see only the jobs rebuilt so far.
    list: (query) => fast.list(query),
    expiring: (now, limit) => fast.expiring(now, limit),

    async remove(id) {
      // The record goes first: were the job removed from the fast store first, a crash in between would let the
      // next get() rebuild it from its record.
      if (JobId.safeParse(id).success) await records.delete(jobRecordKey(id));
      await fast.remove(id);
    },
  };
}
