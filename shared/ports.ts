/**
 * The small interfaces every external system sits behind. Each has a production adapter (S3, RabbitMQ, Redis)
 * and an in-process one that the embedded mode runs on.
 */
import type { ApiKey } from "./api_key.ts";
import type { Job, JobOutput, JobStatus } from "./job.ts";

/** Object storage for uploaded videos and finished MP3s. */
export interface BlobStore {
  /**
   * Streams `body` into `key`. The object appears whole or not at all; on error nothing is left behind.
   * `options.size`, when given, is the body's exact length (say, a raw upload's Content-Length): a store may use
   * it to send the body in one request; a body of another length fails the put with invalid_request.
   */
  put(
    key: string,
    body: ReadableStream<Uint8Array>,
    options?: { contentType?: string; size?: number },
  ): Promise<{ size: number }>;
  /** The object's bytes, or null if there is none. The caller must read or cancel the body. */
  get(key: string): Promise<{ body: ReadableStream<Uint8Array>; size: number } | null>;
  /** The object's size, or null if there is none. */
  head(key: string): Promise<{ size: number } | null>;
  /** Removes the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** The keys that start with `prefix`. */
  list(prefix: string): Promise<string[]>;
  /** A short-lived URL to download the object directly, or null where the store cannot make one. */
  presignGet(key: string, options: { filename: string; expiresIn: number }): Promise<string | null>;
  /**
   * Where a program on this host (FFmpeg) can read the object itself, seeking as it goes, and its size; null if
   * there is no such object. S3: a GET URL presigned on the store's own endpoint for `expiresIn` seconds, which
   * serves byte ranges; a folder: the object's file. A store without it is read by get().
   */
  readLocation?(
    key: string,
    options: { expiresIn: number },
  ): Promise<{ location: string; size: number } | null>;
}

/** What a consumer decided about one message. */
export type Outcome =
  /** Done with: remove it from the queue. */
  | "ack"
  /** A passing failure: deliver it again later. */
  | "retry"
  /** It can never succeed: move it to the dead-letter queue. */
  | "reject";

/** Facts about one delivery. */
export interface DeliveryInfo {
  /** Whether the broker may have delivered this message before. */
  redelivered: boolean;
}

/** A durable queue of typed messages with at-least-once delivery. */
export interface Queue<T> {
  /** Resolves only once the broker holds the message durably (publisher confirm). */
  publish(message: T): Promise<void>;
  /** Hands messages to `handler`, at most `prefetch` at a time; a handler that throws counts as "retry". */
  consume(
    handler: (message: T, info: DeliveryInfo) => Promise<Outcome>,
    options?: { prefetch?: number },
  ): Promise<Subscription>;
}

/** A running consumer. */
export interface Subscription {
  /** Stops taking messages, and resolves when the ones in hand are settled. */
  close(): Promise<void>;
}

/**
 * Where Metadata keeps jobs. A queued job is also in an outbox until its task is known to be published, so that a
 * crash between recording a job and publishing its task loses nothing (see upload/reconciler.ts).
 */
export interface JobStore {
  /** The job, or null. */
  get(id: string): Promise<Job | null>;
  /** Stores a new job (in the outbox too if it is queued); false (and nothing written) if one with that id exists. */
  insert(job: Job): Promise<boolean>;
  /**
   * Atomically replaces the job with `change(job)`; null if there is no such job. A final job leaves the outbox; a
   * final job queued again (a retry) enters it again, as of its `updatedAt`.
   */
  update(id: string, change: (job: Job) => Job): Promise<Job | null>;
  /** Takes the job out of the outbox: its task is published. */
  markPublished(id: string): Promise<void>;
  /** Ids of up to `limit` jobs still in the outbox that were created before `before`, oldest first. */
  unpublished(before: Date, limit: number): Promise<string[]>;
  /**
   * One page of the jobs of `owner` (absent: the jobs that have no owner), newest first, only those in `status`
   * if given. `cursor` is the `next` of the page before (absent: the first page); `next` is null on the last page.
   */
  list(query: JobQuery): Promise<{ jobs: Job[]; next: string | null }>;
  /** Ids of up to `limit` jobs whose `expiresAt` is before `now` and that have no `expiredAt` yet, oldest first. */
  expiring(now: Date, limit: number): Promise<string[]>;
  /** Removes the job for good, from every index too; removing a missing job is not an error. */
  remove(id: string): Promise<void>;
}

/** Which jobs {@linkcode JobStore.list} returns. */
export interface JobQuery {
  owner?: string;
  status?: JobStatus;
  /** The `next` of the page before. */
  cursor?: string;
  /** At most this many jobs (1 to 100). */
  limit: number;
}

/**
 * Finished MP3s by content: a cache key (the input's sha256 and the options, see `cacheKey`) names the output a
 * job made, and every job using an output is counted, so that deleting one job never breaks another.
 */
export interface OutputCache {
  /** The output made for `key`, now counting `jobId` among its users; null when there is none. */
  claim(key: string, jobId: string): Promise<JobOutput | null>;
  /**
   * Records that `jobId` made `output` for `key` and counts it as a user of `output.key`. The first output
   * recorded for a key stays; recording again is harmless.
   */
  remember(key: string, output: JobOutput, jobId: string): Promise<void>;
  /**
   * Stops counting `jobId` as a user of the MP3 stored at `outputKey`. True when no job uses it any more: the
   * cache no longer offers it, and the caller may delete the object.
   */
  release(outputKey: string, jobId: string): Promise<boolean>;
}

/** API keys, stored by id (their secrets only as sha256). */
export interface KeyStore {
  /** The key, or null. */
  get(id: string): Promise<ApiKey | null>;
  /** Stores a new key; false (and nothing written) if one with that id exists. */
  insert(key: ApiKey): Promise<boolean>;
  /** Every key, by id. */
  list(): Promise<ApiKey[]>;
  /** Removes the key; its jobs stay (they are no one's to see until a key with the same id exists). */
  remove(id: string): Promise<void>;
}

/** What one counted request learnt about its limit. */
export interface RateDecision {
  allowed: boolean;
  /** The limit of the window. */
  limit: number;
  /** Requests left in the window after this one (0 when refused). */
  remaining: number;
  /** Seconds until the window resets (a whole number, at least 1). */
  resetSeconds: number;
}

/**
 * Counters shared by every instance of a service: request rates and daily byte totals per key, and the jobs a key
 * has running. A store that cannot be reached throws (the caller answers 503, never lets everything through).
 */
export interface UsageStore {
  /** Counts one request of `subject` in the current window of `windowSeconds`, allowed while under `limit`. */
  hit(subject: string, limit: number, windowSeconds: number): Promise<RateDecision>;
  /**
   * Adds `bytes` to `subject`'s total for `day` (YYYY-MM-DD) if the total stays within `limit`; the new total, or
   * null (and nothing added) when it would pass it.
   */
  addBytes(subject: string, day: string, bytes: number, limit: number): Promise<number | null>;
  /**
   * Reserves `name` for `value` for `ttlSeconds` (SET NX): the value that holds it now, which is `value` when this
   * call reserved it. When `value` holds it already, its time to live is set to `ttlSeconds` again (a holder keeps
   * its reservation alive by reserving again). Idempotency keys use it.
   */
  reserve(name: string, value: string, ttlSeconds: number): Promise<string>;
  /** Gives up a reservation, if `value` still holds it. */
  unreserve(name: string, value: string): Promise<void>;
  /**
   * Takes one of `subject`'s `limit` slots for `holder` until `ttlSeconds` from now, atomically: every holder of a
   * slot now (`holder` among them) when taken, or null (nothing changed) when `limit` others hold one. A holder
   * taking its slot again keeps it (whatever the limit) with the new time to live; an expired slot is free. Job
   * admission uses it to count the jobs being admitted at once.
   */
  claimSlot(subject: string, holder: string, limit: number, ttlSeconds: number): Promise<string[] | null>;
  /** Frees `holder`'s slot of `subject`, if it holds one. */
  releaseSlot(subject: string, holder: string): Promise<void>;
}

/** A way to reach another service's HTTP API: `fetch` over the network, or a Hono app's own `fetch`. */
export type Fetcher = (request: Request) => Response | Promise<Response>;

/**
 * A fan-out of short-lived notices: every subscriber (every worker, on any machine) receives every message
 * published while it is subscribed. Nothing is kept for later: a subscriber gets nothing published before it
 * subscribed, nor while its connection is being rebuilt.
 */
export interface Broadcast<T> {
  /** Resolves once the broker has taken the message (publisher confirm); having no subscriber is not an error. */
  publish(message: T): Promise<void>;
  /**
   * Hands each message to `handler`, one at a time, in the order received; resolves once messages published from
   * now on will reach it. A handler that throws is reported, and the next message is handed over as usual.
   */
  subscribe(handler: (message: T) => void | Promise<void>): Promise<Subscription>;
}

/** One entry of a job's event log: the job (its public form) as one change left it. */
export interface JobLogEntry {
  /** Unique in the job's log and growing: what an SSE client sends back as Last-Event-ID. */
  id: string;
  /** What happened, e.g. "job.created", "job.progress", "job.done". */
  type: string;
  /** The public job after the change. */
  job: Record<string, unknown> & { id: string; status: string };
}

/**
 * Every change of each job, in order, so that an SSE client that reconnects gets exactly what it missed. Bounded
 * (the oldest entries of a long log go) and forgotten some time after the job is final.
 */
export interface JobEventLog {
  /** Adds an entry to `jobId`'s log; resolves with its id. `final`: the job will not change again. */
  append(jobId: string, entry: Omit<JobLogEntry, "id">, options?: { final?: boolean }): Promise<string>;
  /**
   * The entries after `afterId` (absent: from the first), oldest first, at most `limit`; when there are none yet,
   * waits up to `blockMs` for one (0: answers at once).
   */
  read(
    jobId: string,
    afterId: string | undefined,
    options: { blockMs: number; limit?: number },
  ): Promise<JobLogEntry[]>;
  /** The id of the last entry of `jobId`'s log, or null if it has none. */
  lastId(jobId: string): Promise<string | null>;
  /** Whether `id` is an entry still in `jobId`'s log (false for a malformed id, or one trimmed or expired). */
  has(jobId: string, id: string): Promise<boolean>;
}

/** One stored part of a {@linkcode MultipartStore} upload. */
export interface StoredPart {
  /** 1 to 10000: the part's place in the object. */
  number: number;
  /** What the store answered for the part; completing needs it. */
  etag: string;
  size: number;
}

/**
 * Objects assembled from numbered parts, sent one at a time and possibly by different processes: the storage of
 * resumable (tus) and direct (presigned) uploads. Parts other than the last must be at least
 * {@linkcode MultipartStore.minPartBytes}. S3 multipart uploads in production, a folder in embedded mode.
 */
export interface MultipartStore {
  /** The least size of a part that is not the last, in bytes (5 MiB on S3). */
  readonly minPartBytes: number;
  /** Starts assembling the object `key`; returns the upload's id. */
  create(key: string, options?: { contentType?: string }): Promise<string>;
  /** Stores part `number` (a part sent again with the same number replaces it); returns its etag. */
  uploadPart(key: string, uploadId: string, number: number, bytes: Uint8Array): Promise<string>;
  /** The parts stored so far, by number. */
  listParts(key: string, uploadId: string): Promise<StoredPart[]>;
  /** Joins `parts` in order into the object `key`, which then appears whole; the upload is gone after. */
  complete(key: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<void>;
  /** Drops the upload and its parts; the object never appears. */
  abort(key: string, uploadId: string): Promise<void>;
  /** A short-lived URL a client can PUT the whole object `key` to, or null where the store cannot make one. */
  presignPut(key: string, expiresIn: number): Promise<string | null>;
  /** A short-lived URL a client can PUT part `number` to, or null where the store cannot make one. */
  presignPart(key: string, uploadId: string, number: number, expiresIn: number): Promise<string | null>;
}
