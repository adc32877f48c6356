/**
 * A JobStore that keeps a durable record of each job in object storage beside its files (`jobs/{id}.json`), over
 * a fast store (Redis) that may lose everything. The record is written when a job is created and when it reaches
 * a final state; a job the fast store has lost is rebuilt from its record on first use. So a Redis restarted
 * empty still shows every finished job done (and it still downloads), and an event for a job in flight finds it.
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
      const apply = (job: Job) => {
        const next = change(job);
        changed = next !== job;
        return next;
      };
      let job = await fast.update(id, apply);
      if (job === null && await restore(id)) job = await fast.update(id, apply);
      if (job && isFinal(job.status)) {
        // A repeated final event changes nothing, but its first try may have failed to write the record.
        if (changed || !isFinal((await read(id))?.status ?? "queued")) await write(job);
      }
      return job;
    },

    markPublished: (id) => fast.markPublished(id),
    unpublished: (before, limit) => fast.unpublished(before, limit),
  };
}
