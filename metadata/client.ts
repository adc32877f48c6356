/** A typed client of the Metadata HTTP API, for the Upload service and the Gateway. */
import {
  AppError,
  type ErrorCode,
  type Fetcher,
  isErrorCode,
  type JobEvent,
  type NewJob,
} from "@vmp3/shared";

/** A job as the Metadata API answers it (the public form). */
export type PublicJob = Record<string, unknown> & { id: string; status: string };

/** The Metadata API, as another service calls it. */
export interface MetadataClient {
  /** Records a new queued job. */
  createJob(job: NewJob): Promise<PublicJob>;
  /** The job, or null if there is none. */
  getJob(id: string): Promise<PublicJob | null>;
  /** Where the job's MP3 is stored; null if the job is unknown or has no MP3. */
  outputKey(id: string): Promise<string | null>;
  /** Records that the job's task is published (it leaves the outbox). */
  markPublished(id: string): Promise<void>;
  /** Jobs recorded before `before` whose task is not known to be published. */
  unpublished(before: Date, limit: number): Promise<PublicJob[]>;
  /** Applies an event to a job. */
  postEvent(event: JobEvent): Promise<void>;
  /** The raw HTTP response of a job's SSE stream. */
  events(id: string, signal?: AbortSignal): Promise<Response>;
}

async function failure(response: Response): Promise<AppError> {
  const body = await response.json().catch(() => null);
  const code = body?.error?.code;
  const message = body?.error?.message ?? `The metadata service answered ${response.status}`;
  const known: ErrorCode = typeof code === "string" && isErrorCode(code) ? code : "upstream_unavailable";
  return new AppError(known, message);
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
    async getJob(id) {
      const response = await call(`/jobs/${encodeURIComponent(id)}`);
      if (response.status === 404) {
        await response.body?.cancel();
        return null;
      }
      if (!response.ok) throw await failure(response);
      return await response.json();
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
    events(id, signal) {
      return call(`/jobs/${encodeURIComponent(id)}/events`, { signal });
    },
  };
}
