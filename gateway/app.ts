/**
 * The Gateway: vmp3's one public API. It holds no state and touches no file or process, so it runs on Deno Deploy;
 * it reaches the Upload and Metadata services through the fetchers it is given.
 */
import { Hono } from "hono";
import {
  AppError,
  contentDisposition,
  errorResponse,
  type Fetcher,
  isErrorCode,
  mp3Filename,
  onError,
  onNotFound,
  statusOf,
} from "@vmp3/shared";
import { zipStream } from "./zip.ts";
import { cors } from "./cors.ts";
import { type MetadataClient, OWNER_HEADER, type PublicJob, type Scope } from "@vmp3/metadata";
import { authenticate, type AuthMode, type AuthVariables } from "./auth.ts";
import type { DownloadLinks } from "./download_link.ts";
import { mountOpenApi } from "./openapi.ts";
import { streamShows } from "./job_stream_watch.ts";

/** What the Gateway app needs. */
export interface GatewayAppDeps {
  /** Reaches the Upload service. */
  upload: Fetcher;
  metadata: MetadataClient;
  /**
   * POST /v1/convert learns of its job's end from the job's event stream; where that stream cannot tell, how soon
   * it looks at the job again, in ms; the wait then grows by half each time, up to a second.
   */
  pollMs?: number;
  /** How long POST /v1/convert waits for a job, in ms. */
  convertTimeoutMs?: number;
  /** "required": every call needs an API key; "open" (the default, for embedded dev): a call without one is let in. */
  auth?: AuthMode;
  /** Signs the short-lived download links shown on done jobs; without it, jobs carry no download link. */
  links?: DownloadLinks;
}

const gc = (globalThis as { gc?: (options: { type: "minor" }) => void }).gc;

/**
 * Bodies are forwarded as they came (a JS stream in between would make Deno re-frame every chunk and cost the
 * Upload service ~100 MB at 20 uploads at once, docs/reliability.md); so the Gateway cannot count the bytes it
 * passes. While any body is in flight, a minor GC every 50 ms frees the spent chunks instead (where V8's `gc` is
 * exposed; a no-op on Deno Deploy).
 */
function createBodyCollector(): <T>(forwarding: Promise<T>) => Promise<T> {
  let inFlight = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  return async (forwarding) => {
    if (gc && inFlight++ === 0) timer = setInterval(() => gc({ type: "minor" }), 50);
    try {
      return await forwarding;
    } finally {
      if (gc && --inFlight === 0) clearInterval(timer);
    }
  };
}

const FORWARDED_HEADERS = ["content-type", "content-length", "content-disposition", "idempotency-key"];

/** The tus headers a resumable upload's requests and answers carry through the Gateway. */
const TUS_HEADERS = [
  "tus-resumable",
  "upload-length",
  "upload-offset",
  "upload-metadata",
  "upload-defer-length",
  "upload-concat",
  "upload-expires",
  "content-type",
  "content-length",
  "x-http-method-override",
];

type Env = { Variables: AuthVariables };

/** A batch as the Upload service answers it. */
interface Batch {
  id: string;
  jobs: PublicJob[];
}

function filenameOf(job: PublicJob): string {
  return String((job.input as { filename?: string } | undefined)?.filename ?? "audio");
}

/** The AppError of a service's error answer (its code and message, passed on as they are). */
async function errorOf(response: Response): Promise<AppError> {
  const body = await response.json().catch(() => null);
  const code = body?.error?.code;
  return new AppError(
    typeof code === "string" && isErrorCode(code) ? code : "upstream_unavailable",
    body?.error?.message ?? `The upload service answered ${response.status}`,
  );
}

/** Creates the Gateway HTTP app. */
export function createGatewayApp(deps: GatewayAppDeps): Hono<Env> {
  const { upload, metadata, pollMs = 25, convertTimeoutMs = 30 * 60_000, auth = "open", links } = deps;
  const app = new Hono<Env>();
  const collecting = createBodyCollector();
  app.onError(onError);
  app.notFound(onNotFound);

  const callUpload = async (path: string, init?: RequestInit): Promise<Response> => {
    try {
      return await upload(new Request(`http://upload${path}`, init));
    } catch (cause) {
      throw new AppError("service_unavailable", "The upload service cannot be reached", { cause });
    }
  };

  /** A signed download link lets its holder fetch that one MP3 without an API key. */
  const signedDownload = async (request: Request): Promise<boolean> => {
    if (!links) return false;
    const url = new URL(request.url);
    const match = /^\/v1\/jobs\/([^/]+)\/download$/.exec(url.pathname);
    if (!match || request.method !== "GET") return false;
    return await links.verify(
      decodeURIComponent(match[1]),
      url.searchParams.get("expires") ?? undefined,
      url.searchParams.get("sig") ?? undefined,
    );
  };
  // Browsers' preflights are answered before any key is asked for.
  app.use("*", cors());
  /** The job a status read (GET /v1/jobs/:id) asks for: read with the caller's key, in one call to Metadata. */
  const statusRead = (request: Request): string | undefined => {
    if (request.method !== "GET") return undefined;
    const match = /^\/v1\/jobs\/([^/]+)$/.exec(new URL(request.url).pathname);
    if (!match) return undefined;
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return undefined; // not an id; the route answers it
    }
  };
  app.use("/v1/*", authenticate(metadata, auth, signedDownload, statusRead));

  /** The job as the API shows it, with where to find it, follow it and (once done) download it. */
  const withLinks = async (job: PublicJob): Promise<PublicJob> => {
    const self = `/v1/jobs/${job.id}`;
    const download = job.status === "done" && !job.expiredAt && links ? await links.sign(job.id) : undefined;
    return { ...job, links: { self, events: `${self}/events`, ...(download ? { download } : {}) } };
  };

  /** Streams the request body to the Upload service as it arrives. */
  const submit = (request: Request, scope: Scope, path = "/uploads"): Promise<Response> => {
    const headers = new Headers({ [OWNER_HEADER]: scope.owner ?? "" });
    for (const name of FORWARDED_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    // fetch sends a stream body chunked and drops a Content-Length set on it: pass the declared size on, so that
    // Upload can refuse an oversize body before reading it.
    const declared = request.headers.get("content-length");
    if (declared !== null) {
      headers.delete("content-length");
      headers.set("x-content-length", declared);
    }
    const search = new URL(request.url).search;
    return collecting(callUpload(`${path}${search}`, {
      method: "POST",
      headers,
      body: request.body,
      signal: request.signal,
      // @ts-ignore: `duplex` is required to stream a request body, and not yet in every RequestInit type
      duplex: "half",
    }));
  };

  const mustGetJob = async (id: string, scope?: Scope): Promise<PublicJob> => {
    const job = await metadata.getJob(id, scope);
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    return job;
  };

  /** Relays a request to the Upload service as it is (method, path, query, the given headers, streamed body). */
  const relay = (request: Request, scope: Scope, names: string[]): Promise<Response> => {
    const headers = new Headers({ [OWNER_HEADER]: scope.owner ?? "" });
    for (const name of names) {
      const value = request.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    const url = new URL(request.url);
    const hasBody = request.body !== null && request.method !== "GET" && request.method !== "HEAD";
    return collecting(callUpload(`${url.pathname}${url.search}`, {
      method: request.method,
      headers,
      body: hasBody ? request.body : undefined,
      signal: request.signal,
      // @ts-ignore: `duplex` is required to stream a request body, and not yet in every RequestInit type
      duplex: hasBody ? "half" : undefined,
    }));
  };

  /** A 202 job answer of the Upload service, with its location and links. */
  const accepted = async (response: Response): Promise<Response> => {
    if (response.status !== 202 && response.status !== 200) return response;
    const job: PublicJob = await response.json();
    const headers = new Headers({ location: `/v1/jobs/${job.id}` });
    const replayed = response.headers.get("idempotent-replayed");
    if (replayed) headers.set("idempotent-replayed", replayed);
    return Response.json(await withLinks(job), { status: response.status, headers });
  };

  const download = (job: PublicJob, mode: "redirect" | "stream"): Promise<Response> => {
    const filename = filenameOf(job);
    const query = new URLSearchParams({ filename, mode });
    return callUpload(`/files/${encodeURIComponent(job.id)}/output?${query}`, { redirect: "manual" });
  };

  app.get("/healthz", (c) => c.json({ ok: true }));
  mountOpenApi(app);

  app.post("/v1/jobs", async (c) => {
    // A JSON body asks to import a video from a URL; anything else is the video (a form or the raw bytes).
    const type = c.req.header("content-type") ?? "";
    const path = /^application\/json\b/i.test(type) ? "/imports" : "/uploads";
    return await accepted(await submit(c.req.raw, c.var.scope, path));
  });

  app.get("/v1/jobs", async (c) => {
    const limit = c.req.query("limit");
    const page = await metadata.listJobs(c.var.scope, {
      status: c.req.query("status"),
      cursor: c.req.query("cursor"),
      limit: limit === undefined ? undefined : Number(limit),
    });
    return c.json({ jobs: await Promise.all(page.jobs.map(withLinks)), next: page.next });
  });

  /**
   * Whether Metadata's event stream of job `id` shows it done or failed before `deadline` (false when the stream
   * ends first, cannot be read, or the request is aborted).
   */
  const toldFinal = async (id: string, deadline: number, signal: AbortSignal): Promise<boolean> => {
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), Math.max(0, deadline - Date.now()));
    const abort = () => stop.abort();
    signal.addEventListener("abort", abort, { once: true });
    try {
      const response = await metadata.events(id, stop.signal);
      if (!response.ok || !response.body) {
        await response.body?.cancel();
        return false;
      }
      return await streamShows(response.body, ["done", "failed"]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    }
  };

  app.post("/v1/convert", async (c) => {
    const scope = c.var.scope;
    const response = await submit(c.req.raw, scope);
    if (response.status !== 202) return response;
    let job: PublicJob = await response.json();
    const deadline = Date.now() + convertTimeoutMs;
    let wait = pollMs;
    while (job.status !== "done" && job.status !== "failed") {
      if (Date.now() > deadline || c.req.raw.signal.aborted) {
        return errorResponse(
          "still_converting",
          `Job ${job.id} was accepted and is still converting; follow it at /v1/jobs/${job.id}`,
          { location: `/v1/jobs/${job.id}`, "x-job-id": job.id },
        );
      }
      // The job's event stream tells its end as it happens; where it cannot, a wait that grows between reads.
      if (!await toldFinal(job.id, deadline, c.req.raw.signal)) {
        await new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 1.5, 1000);
      }
      job = await mustGetJob(job.id, scope);
    }
    if (job.status === "failed") {
      const error = job.error as { code: string; message: string };
      return c.json({ error }, statusOf(error.code) as 400, { "x-job-id": job.id });
    }
    const file = await download(job, "stream");
    const headers = new Headers(file.headers);
    headers.set("x-job-id", job.id);
    return new Response(file.body, { status: file.status, headers });
  });

  app.get("/v1/jobs/:id", async (c) => {
    // Read already with the caller's key (auth.ts), or now.
    const job = c.var.job === undefined ? await mustGetJob(c.req.param("id"), c.var.scope) : c.var.job;
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(c.req.param("id"))}`);
    return c.json(await withLinks(job));
  });

  // Cancels an unfinished job, or deletes a finished one with its files: the Upload service does both.
  app.delete("/v1/jobs/:id", async (c) => {
    const response = await callUpload(`/jobs/${encodeURIComponent(c.req.param("id"))}`, {
      method: "DELETE",
      headers: { [OWNER_HEADER]: c.var.scope.owner ?? "" },
    });
    return response.status === 204 ? c.body(null, 204) : response;
  });

  app.post("/v1/jobs/:id/retry", async (c) => {
    const response = await callUpload(`/jobs/${encodeURIComponent(c.req.param("id"))}/retry`, {
      method: "POST",
      headers: { [OWNER_HEADER]: c.var.scope.owner ?? "" },
    });
    return await accepted(response);
  });

  // Several files in one form: one job each, in a batch.
  app.post("/v1/batches", async (c) => {
    const response = await submit(c.req.raw, c.var.scope, "/batches");
    if (response.status !== 202) return response;
    const batch: Batch = await response.json();
    return c.json({ ...batch, jobs: await Promise.all(batch.jobs.map(withLinks)) }, 202, {
      location: `/v1/batches/${batch.id}`,
    });
  });

  const mustGetBatch = async (id: string, scope: Scope): Promise<Batch> => {
    const response = await callUpload(`/batches/${encodeURIComponent(id)}`, {
      headers: { [OWNER_HEADER]: scope.owner ?? "" },
    });
    if (!response.ok) throw await errorOf(response);
    return await response.json();
  };

  app.get("/v1/batches/:id", async (c) => {
    const batch = await mustGetBatch(c.req.param("id"), c.var.scope);
    return c.json({ ...batch, jobs: await Promise.all(batch.jobs.map(withLinks)) });
  });

  // A zip of the batch's MP3s, streamed as each is read from storage (never held whole). Jobs that failed or were
  // cancelled are left out; a batch with a job still running is not ready.
  app.get("/v1/batches/:id/download", async (c) => {
    const batch = await mustGetBatch(c.req.param("id"), c.var.scope);
    const running = batch.jobs.filter((job) => job.status === "queued" || job.status === "converting");
    if (running.length > 0) {
      throw new AppError("not_ready", `${running.length} job(s) of batch ${batch.id} are still converting`);
    }
    const done = batch.jobs.filter((job) => job.status === "done" && !job.expiredAt);
    if (done.length === 0) throw new AppError("not_found", `Batch ${batch.id} has no MP3 to download`);
    async function* entries() {
      for (const job of done) {
        const file = await download(job, "stream");
        if (!file.ok || !file.body) {
          throw new Error(`The MP3 of job ${job.id} could not be read (${file.status})`);
        }
        yield {
          name: mp3Filename(filenameOf(job)),
          body: file.body,
          modified: new Date(String(job.updatedAt)),
        };
      }
    }
    return new Response(zipStream(entries()), {
      headers: {
        "content-type": "application/zip",
        "content-disposition": contentDisposition(`batch-${batch.id}.zip`),
      },
    });
  });

  // Resumable (tus) and direct-to-S3 uploads are the Upload service's, under the same paths.
  app.on(["POST", "OPTIONS"], "/v1/uploads", (c) => relay(c.req.raw, c.var.scope, TUS_HEADERS));
  app.all("/v1/uploads/*", (c) => relay(c.req.raw, c.var.scope, TUS_HEADERS));

  app.get("/v1/jobs/:id/events", async (c) => {
    await mustGetJob(c.req.param("id"), c.var.scope);
    // A client resuming (EventSource sends Last-Event-ID; others may use ?lastEventId=) gets what it missed.
    const lastEventId = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    const response = await metadata.events(c.req.param("id"), c.req.raw.signal, { lastEventId });
    return new Response(response.body, {
      status: response.status,
      headers: {
        "content-type": response.headers.get("content-type") ?? "text/event-stream",
        "cache-control": "no-cache",
      },
    });
  });

  app.get("/v1/jobs/:id/download", async (c) => {
    // A valid signed link is its own permission (its job only); otherwise the caller's key decides.
    const job = await mustGetJob(
      c.req.param("id"),
      (await signedDownload(c.req.raw)) ? undefined : c.var.scope,
    );
    if (job.expiredAt) throw new AppError("expired", `Job ${job.id} expired; its MP3 was removed`);
    if (job.status === "failed") {
      throw new AppError("not_ready", `Job ${job.id} failed and has no MP3; see its error`);
    }
    if (job.status !== "done") {
      throw new AppError("not_ready", `Job ${job.id} is ${job.status}; its MP3 is not ready yet`);
    }
    return await download(job, "redirect");
  });

  return app;
}
