/**
 * A job's Server-Sent Events: each entry of its event log as `event: job` with `id: <entry id>`, so that a client
 * that reconnects with Last-Event-ID gets exactly what it missed, then what happens next.
 */
import type { SSEStreamingApi } from "hono/streaming";
import {
  isFinal,
  type JobEventLog,
  type JobLogEntry,
  type JobStatus,
  type JobStore,
  publicJob,
} from "@vmp3/shared";

/** What a job's event stream reads. */
export interface JobEventStreamDeps {
  store: JobStore;
  log: JobEventLog;
  /** How long the stream waits for an entry before it sends a keep-alive comment (and checks the store), in ms. */
  keepAliveMs: number;
}

type Shown = JobLogEntry["job"];

/** What a client has seen of a job: a change of any of these is worth sending. */
const stateOf = (job: Shown) => `${job.status}|${job.progress}|${job.updatedAt}`;

/**
 * Streams `jobId`'s changes to `stream` until the job is final (or removed, or the client leaves).
 *
 * - With a `lastEventId` that is an entry of the job's log: the entries after it, then live ones.
 * - Without, or with one the log does not know (malformed, another job's, trimmed or expired): the current job
 *   first (with the id of the last entry, if any), then live entries.
 *
 * When no entry comes within `keepAliveMs`, a keep-alive comment goes out, and the store is checked: a change the
 * log missed (its append failed, or the change came another way) is still sent, without an id.
 */
export async function streamJobEvents(
  stream: SSEStreamingApi,
  deps: JobEventStreamDeps,
  jobId: string,
  lastEventId?: string,
): Promise<void> {
  const { store, log, keepAliveMs } = deps;
  let sent: string | null = null;
  let shown: string | null = null;
  const send = async (job: Shown, id?: string) => {
    sent = JSON.stringify(job);
    shown = stateOf(job);
    await stream.writeSSE({ event: "job", data: sent, id });
    return isFinal(job.status as JobStatus);
  };

  const resumed = !!lastEventId && await log.has(jobId, lastEventId).catch(() => false);
  let cursor: string | undefined;
  if (resumed) {
    cursor = lastEventId;
  } else {
    // The last id is read before the job, so that the job is at least as new as that entry.
    cursor = await log.lastId(jobId).catch(() => null) ?? undefined;
    const job = await store.get(jobId);
    if (!job || await send(publicJob(job), cursor)) return;
  }

  // A resumed client whose job has ended meanwhile with nothing logged after its id must not wait a keep-alive.
  let blockMs = resumed ? 0 : keepAliveMs;
  while (!stream.aborted) {
    let entries: JobLogEntry[] = [];
    try {
      entries = await log.read(jobId, cursor, { blockMs });
    } catch (error) {
      console.error(`Reading the event log of job ${jobId} failed; checking the store instead:`, error);
      await stream.sleep(keepAliveMs);
    }
    blockMs = keepAliveMs;
    if (stream.aborted) return;
    for (const entry of entries) {
      cursor = entry.id;
      if (JSON.stringify(entry.job) === sent) continue; // already sent as the current job
      if (await send(entry.job, entry.id)) return;
    }
    if (entries.length > 0) continue;
    const job = await store.get(jobId).catch(() => undefined);
    if (job === null) return; // removed
    // A resumed client's last state is unknown here: it is sent the job only once the job is final.
    const missed = job && (shown === null ? isFinal(job.status) : stateOf(publicJob(job)) !== shown);
    if (job && missed) {
      if (await send(publicJob(job))) return;
    } else {
      await stream.write(": keep-alive\n\n");
    }
  }
}
