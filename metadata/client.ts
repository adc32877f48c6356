/** A typed client of the Metadata HTTP API, for the Upload service and the Gateway. */
import {
  AppError,
  type ErrorCode,
  type Fetcher,
  isErrorCode,
  type JobEvent,
  type NewJob,
  type RateDecision,
} from "@vmp3/shared";
import type { KeyInfo } from "./access.ts";
import { OWNER_HEADER } from "./scope.ts";

/**
 * Whose jobs a call may see: `{ owner: "<key id>" }`, or `{}` for a caller without a key (where the API runs
 * open). Internal calls pass no scope and see every job.
 */
export interface Scope {
  owner?: string;
}

/** Which files of a job to remove now (see metadata/job_control.ts). */
export interface FilesToRemove {
  inputKey: string;
  /** The MP3, when no other job uses it. */
  outputKey: string | null;
}

/** The files of a job whose expiry began, and whether it is cancelled (its workers must be told). */
export interface ExpiringFiles extends FilesToRemove {
  cancelled: boolean;
}

/** A job as the Metadata API answers it (the public form). */
export type PublicJob = Record<string, unknown> & { id: string; status: string };

/** The Metadata API, as another service calls it. */
export interface MetadataClient {
  /** Records a new queued job. */
  createJob(job: NewJob): Promise<PublicJob>;
  /** The job, or null if there is none (in `scope`). */
  getJob(id: string, scope?: Scope): Promise<PublicJob | null>;
  /** One page of the jobs in `scope`, newest first. */
  listJobs(
    scope: Scope,
    query: { status?: string; cursor?: string; limit?: number },
  ): Promise<{ jobs: PublicJob[]; next: string | null }>;
  /** Cancels an unfinished job (a finished one is answered as it is). */
  cancelJob(id: string, scope: Scope): Promise<PublicJob>;
  /**
   * Queues a failed job again (conflict unless it failed), back in the outbox until `markPublished`; with
   * `keepUntil` (an ISO time), its files are kept at least until then.
   */
  retryJob(id: string, scope: Scope, options?: { keepUntil?: string }): Promise<PublicJob>;
  /** Deletes a finished job's record; answers which files to remove. */
  deleteJob(id: string, scope: Scope): Promise<FilesToRemove>;
  /**
   * The key a token names, with the rate decision of this request (counted now); unauthorized if the token is not
   * a valid key.
   */
  authenticate(token: string): Promise<{ key: KeyInfo; rate: RateDecision }>;
  /**
   * `authenticate` and, if the rate allows the request, `getJob(id, { owner: key.id })`, in one call (the Gateway's
   * status reads); `job` is null when there is none in the key's scope or the rate refused the request. Optional:
   * where a client lacks it, the Gateway makes the two calls.
   */
  authenticateJob?(
    token: string,
    id: string,
  ): Promise<{ key: KeyInfo; rate: RateDecision; job: PublicJob | null }>;
  /**
   * Admits a new job of `owner` of `bytes` against the key's quotas (quota_exceeded if not). With `jobId`, the job
   * holds an admission slot until {@linkcode MetadataClient.admitted} (call it once the job is recorded, or will
   * not be), which makes admissions at once count each other; without, concurrent admissions may pass together.
   */
  admit(owner: string, bytes: number, jobId?: string): Promise<void>;
  /** Frees the admission slot of `jobId` (see `admit`): the job is recorded now, or will never be. */
  admitted(owner: string, jobId: string): Promise<void>;
  /**
   * Asks, counting nothing, whether `owner` may start a job now with `bytes` more today (quota_exceeded if not):
   * the early refusal before an upload is read. The exact check is `admit`, once the upload is stored.
   */
  checkQuota(owner: string, bytes: number): Promise<void>;
  /** Reserves `name` for `value` (an idempotency key for a job id): the value that holds it now. */
  reserve(name: string, value: string, ttlSeconds: number): Promise<string>;
  /** Gives up a reservation if `value` still holds it. */
  unreserve(name: string, value: string): Promise<void>;
  /** Ids of jobs whose files are due for removal. */
  expiring(before: Date, limit: number): Promise<string[]>;
  /**
   * Begins a job's expiry: cancels it if unfinished, lets go of its MP3, and answers which files to remove (and
   * whether the job is cancelled); conflict when it is not due `before` (retried since). Safe to repeat. The job is
   * marked expired by `markExpired`, once its files are removed.
   */
  expireJob(id: string, options?: { before?: Date }): Promise<ExpiringFiles>;
  /** Marks a job expired (its files are removed): its download answers 410 from now on. */
  markExpired(id: string): Promise<void>;
  /** Where the job's MP3 is stored; null if the job is unknown or has no MP3. */
  outputKey(id: string): Promise<string | null>;
  /** Records that the job's task is published (it leaves the outbox). */
  markPublished(id: string): Promise<void>;
  /** Jobs recorded before `before` whose task is not known to be published. */
  unpublished(before: Date, limit: number): Promise<PublicJob[]>;
  /** Applies an event to a job. */
  postEvent(event: JobEvent): Promise<void>;
  /**
   * The raw HTTP response of a job's SSE stream; with `lastEventId` (a client's Last-Event-ID), it resumes after
   * that entry.
   */
  events(id: string, signal?: AbortSignal, options?: { lastEventId?: string }): Promise<Response>;
}

async function failure(response: Response): Promise<AppError> {
  const body = await response.json().catch(() => null);
  const code = body?.error?.code;
  const message = body?.error?.message ?? `The metadata service answered ${response.status}`;
  const known: ErrorCode = typeof code === "string" && isErrorCode(code) ? code : "upstream_unavailable";
  return new AppError(known, message);
}

/** The header that scopes a call to an owner's jobs. */
function scoped(scope: Scope | undefined): Record<string, string> {
  return scope ? { [OWNER_HEADER]: scope.owner ?? "" } : {};
}

/** The JSON of a successful response, or its error thrown. */
async function answer<T>(response: Response): Promise<T> {
  if (!response.ok) throw await failure(response);
  return await response.json();
}

/** Creates a client that sends its requests through `fetcher`. */
export function createMetadataClient(fetcher: Fetcher): MetadataClient {
  const call = async (path: string, init?: RequestInit): Promise<Response> => {
    try {
      return await fetcher(new Request(`http://metadata${path}`, init));
    } catch (cause) {
      throw new AppError("service_unavailable", "The metadata service cannot be reached", { cause });
    }
  };
  const json = { "content-type": "application/json" };
  return {
    async createJob(job) {
      const response = await call("/jobs", { method: "POST", headers: json, body: JSON.stringify(job) });
      if (!response.ok) throw await failure(response);
      return await response.json();
    },
    async getJob(id, scope) {
      const response = await call(`/jobs/${encodeURIComponent(id)}`, { headers: scoped(scope) });
      if (response.status === 404) {
        await response.body?.cancel();
        return null;
      }
      if (!response.ok) throw await failure(response);
      return await response.json();
    },
    async listJobs(scope, query) {
      const search = new URLSearchParams();
      for (const [name, value] of Object.entries(query)) {
        if (value !== undefined) search.set(name, String(value));
      }
      return await answer(await call(`/jobs?${search}`, { headers: scoped(scope) }));
    },
    async cancelJob(id, scope) {
      return await answer(
        await call(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: scoped(scope) }),
      );
    },
    async retryJob(id, scope, options = {}) {
      return await answer(
        await call(`/jobs/${encodeURIComponent(id)}/retry`, {
          method: "POST",
          headers: { ...scoped(scope), ...json },
          body: JSON.stringify(options),
        }),
      );
    },
    async deleteJob(id, scope) {
      return await answer(
        await call(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE", headers: scoped(scope) }),
      );
    },
    async authenticate(token) {
      return await answer(
        await call("/auth", { method: "POST", headers: json, body: JSON.stringify({ token }) }),
      );
    },
    async authenticateJob(token, id) {
      return await answer(
        await call(`/auth/jobs/${encodeURIComponent(id)}`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ token }),
        }),
      );
    },
    async admit(owner, bytes, jobId) {
      await answer(
        await call(`/owners/${encodeURIComponent(owner)}/admit`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ bytes, jobId }),
        }),
      );
    },
    async admitted(owner, jobId) {
      const response = await call(`/owners/${encodeURIComponent(owner)}/admitted`, {
        method: "POST",
        headers: json,
        body: JSON.stringify({ jobId }),
      });
      if (!response.ok) throw await failure(response);
      await response.body?.cancel();
    },
    async checkQuota(owner, bytes) {
      await answer(
        await call(`/owners/${encodeURIComponent(owner)}/admit`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ bytes, check: true }),
        }),
      );
    },
    async reserve(name, value, ttlSeconds) {
      const body = JSON.stringify({ name, value, ttlSeconds });
      return (await answer<{ holder: string }>(
        await call("/reservations", { method: "POST", headers: json, body }),
      ))
        .holder;
    },
    async unreserve(name, value) {
      const body = JSON.stringify({ name, value });
      const response = await call("/reservations/release", { method: "POST", headers: json, body });
      if (!response.ok) throw await failure(response);
      await response.body?.cancel();
    },
    async expiring(before, limit) {
      const query = new URLSearchParams({ before: before.toISOString(), limit: String(limit) });
      return (await answer<{ ids: string[] }>(await call(`/expiring?${query}`))).ids;
    },
    async expireJob(id, options = {}) {
      const body = JSON.stringify({ before: options.before?.toISOString() });
      return await answer(
        await call(`/jobs/${encodeURIComponent(id)}/expire`, { method: "POST", headers: json, body }),
      );
    },
    async markExpired(id) {
      const response = await call(`/jobs/${encodeURIComponent(id)}/expired`, { method: "POST" });
      if (!response.ok) throw await failure(response);
      await response.body?.cancel();
    },
    async outputKey(id) {
      const response = await call(`/jobs/${encodeURIComponent(id)}/output`);
      if (response.status === 404 || response.status === 409) {
        await response.body?.cancel();
        return null;
      }
      if (!response.ok) throw await failure(response);
      const { key } = await response.json();
      return typeof key === "string" ? key : null;
    },
    async markPublished(id) {
      const response = await call(`/jobs/${encodeURIComponent(id)}/published`, { method: "POST" });
      if (!response.ok) throw await failure(response);
      await response.body?.cancel();
    },
    async unpublished(before, limit) {
      const query = new URLSearchParams({ before: before.toISOString(), limit: String(limit) });
      const response = await call(`/outbox?${query}`);
      if (!response.ok) throw await failure(response);
      return (await response.json()).jobs;
    },
    async postEvent(event) {
      const response = await call(`/jobs/${encodeURIComponent(event.jobId)}/events`, {
        method: "POST",
        headers: json,
        body: JSON.stringify(event),
      });
      if (!response.ok) throw await failure(response);
      await response.body?.cancel();
    },
    events(id, signal, options = {}) {
      const headers: Record<string, string> = options.lastEventId
        ? { "last-event-id": options.lastEventId }
        : {};
      return call(`/jobs/${encodeURIComponent(id)}/events`, { signal, headers });
    },
  };
}
