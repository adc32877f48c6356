/**
 * The small interfaces every external system sits behind. Each has a production adapter (S3, RabbitMQ, Redis)
 * and an in-process one that the embedded mode runs on.
 */
import type { Job, JobOutput } from "./job.ts";

/** Object storage for uploaded videos and finished MP3s. */
export interface BlobStore {
  /** Streams `body` into `key`. The object appears whole or not at all; on error nothing is left behind. */
  put(
    key: string,
    body: ReadableStream<Uint8Array>,
    options?: { contentType?: string },
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
  /** Atomically replaces the job with `change(job)`; null if there is no such job. A final job leaves the outbox. */
  update(id: string, change: (job: Job) => Job): Promise<Job | null>;
  /** Takes the job out of the outbox: its task is published. */
  markPublished(id: string): Promise<void>;
  /** Ids of up to `limit` jobs still in the outbox that were created before `before`, oldest first. */
  unpublished(before: Date, limit: number): Promise<string[]>;
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

/** A way to reach another service's HTTP API: `fetch` over the network, or a Hono app's own `fetch`. */
export type Fetcher = (request: Request) => Response | Promise<Response>;
