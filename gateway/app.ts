/**
 * The Gateway: vmp3's one public API. It holds no state and touches no file or process, so it runs on Deno Deploy;
 * it reaches the Upload and Metadata services through the fetchers it is given.
 */
import { Hono } from "hono";
import { AppError, errorResponse, type Fetcher, onError, onNotFound, statusOf } from "@vmp3/shared";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";

/** What the Gateway app needs. */
export interface GatewayAppDeps {
  /** Reaches the Upload service. */
  upload: Fetcher;
  metadata: MetadataClient;
  /**
   * How soon POST /v1/convert first looks at the job again, in ms; the wait then grows by half each time, up to
   * a second, so a short job is answered quickly and a long one costs Metadata few reads.
   */
  pollMs?: number;
  /** How long POST /v1/convert waits for a job, in ms. */
  convertTimeoutMs?: number;
}

const gc = (globalThis as { gc?: (options: { type: "minor" }) => void }).gc;

/** Passes bytes through, with a minor GC every 2 MiB where V8's `gc` is exposed (a no-op on Deno Deploy). */
function collectingGarbage(): TransformStream<Uint8Array, Uint8Array> {
  let since = 0;
  return new TransformStream({
    transform(chunk, controller) {
      controller.enqueue(chunk);
      since += chunk.byteLength;
      if (since >= 2 * 1024 * 1024) {
        gc?.({ type: "minor" });
        since = 0;
      }
    },
  });
}

const FORWARDED_HEADERS = ["content-type", "content-length", "content-disposition"];

/** Creates the Gateway HTTP app. */
export function createGatewayApp(deps: GatewayAppDeps): Hono {
  const { upload, metadata, pollMs = 25, convertTimeoutMs = 30 * 60_000 } = deps;
  const app = new Hono();
  app.onError(onError);
  app.notFound(onNotFound);

  const callUpload = async (path: string, init?: RequestInit): Promise<Response> => {
    try {
      return await upload(new Request(`http://upload${path}`, init));
    } catch (cause) {
      throw new AppError("service_unavailable", "The upload service cannot be reached", { cause });
    }
  };

  /** Streams the request body to the Upload service as it arrives. */
  const submit = (request: Request): Promise<Response> => {
    const headers = new Headers();
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
    return callUpload(`/uploads${search}`, {
      method: "POST",
      headers,
      body: request.body?.pipeThrough(collectingGarbage()),
      signal: request.signal,
      // @ts-ignore: `duplex` is required to stream a request body, and not yet in every RequestInit type
      duplex: "half",
    });
  };

  const mustGetJob = async (id: string): Promise<PublicJob> => {
    const job = await metadata.getJob(id);
    if (!job) throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
    return job;
  };

  const download = (job: PublicJob, mode: "redirect" | "stream"): Promise<Response> => {
    const filename = String((job.input as { filename?: string } | undefined)?.filename ?? "audio");
    const query = new URLSearchParams({ filename, mode });
    return callUpload(`/files/${encodeURIComponent(job.id)}/output?${query}`, { redirect: "manual" });
  };

  app.get("/healthz", (c) => c.json({ ok: true }));

  app.post("/v1/jobs", async (c) => {
    const response = await submit(c.req.raw);
    if (response.status !== 202) return response;
    const job: PublicJob = await response.json();
    return c.json(job, 202, { location: `/v1/jobs/${job.id}` });
  });

  app.post("/v1/convert", async (c) => {
    const response = await submit(c.req.raw);
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
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 1.5, 1000);
      job = await mustGetJob(job.id);
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

  app.get("/v1/jobs/:id", async (c) => c.json(await mustGetJob(c.req.param("id"))));

  app.get("/v1/jobs/:id/events", async (c) => {
    await mustGetJob(c.req.param("id"));
    const response = await metadata.events(c.req.param("id"), c.req.raw.signal);
    return new Response(response.body, {
      status: response.status,
      headers: {
        "content-type": response.headers.get("content-type") ?? "text/event-stream",
        "cache-control": "no-cache",
      },
    });
  });

  app.get("/v1/jobs/:id/download", async (c) => {
    const job = await mustGetJob(c.req.param("id"));
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
