/**
 * @module
 * The real Gateway, Upload and Metadata apps wired in one process over the embedded-mode adapters (Deno KV in
 * memory, a temporary folder), as dev.ts wires them, but with no Convert worker: a test plays Convert by posting
 * job events to Metadata. For the tests of the client API's access and control (gateway/access_test.ts,
 * gateway/control_test.ts).
 */
import {
  type BlobStore,
  type ConversionRequested,
  ConversionRequested as ConversionRequestedSchema,
  JobCancel,
  jobKeys,
  type JobStore,
  type KeyStore,
  TASK_QUEUE,
} from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createMemoryBroadcast } from "@vmp3/adapters/memory-broadcast";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";
import { createKvUsageStore } from "@vmp3/adapters/kv-usage";
import { httpFetcher } from "@vmp3/adapters/http";
import type { PublicHttp } from "@vmp3/adapters/public-http";
import { createMetadataApp, createMetadataClient, type MetadataClient } from "@vmp3/metadata";
import { runKeysCommand } from "../../metadata/keys_cli.ts";
import { createSweeper, createUploadApp } from "@vmp3/upload";
import { eventually } from "../../upload/testing/wait.ts";
import { createDownloadLinks } from "../download_link.ts";
import { createGatewayApp } from "../app.ts";
import type { AuthMode } from "../auth.ts";

/** How the product under test is set up. */
export interface ProductOptions {
  auth?: AuthMode;
  /** Lifetime of download links, in seconds (default 300). */
  linkSeconds?: number;
  /** How long a job's files are kept, in ms (default: the product's 7 days). */
  filesTtlMs?: number;
  /** Reach the Upload service over HTTP (on a local port) as in real mode, instead of through its app's fetch. */
  uploadOverHttp?: boolean;
  /** Wraps the Metadata client the Upload service uses (to make a race happen at a chosen point). */
  wrapUploadMetadata?: (metadata: MetadataClient) => MetadataClient;
  /** The client URL imports fetch with (absent: imports answer 501). */
  publicHttp?: PublicHttp;
}

/** One API key made with the admin command. */
export interface TestKey {
  id: string;
  token: string;
  /** `{ authorization: "Bearer <token>" }`. */
  auth: Record<string, string>;
}

/** A running in-process product. */
export type Product = Awaited<ReturnType<typeof startProduct>>;

/** Starts the apps; `close()` when done. */
export async function startProduct(options: ProductOptions = {}) {
  const root = await Deno.makeTempDir({ prefix: "vmp3_gateway_test_" });
  const kv = await Deno.openKv(":memory:");
  const blobs: BlobStore = createFsBlobStore(root);
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequestedSchema, { pollMs: 5 });
  const store: JobStore = createKvJobStore(kv);
  const keys: KeyStore = createKvKeyStore(kv);
  const usage = createKvUsageStore(kv);
  const metadataApp = createMetadataApp({
    store,
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
    access: { keys, usage },
  });
  const metadata = createMetadataClient((request) => metadataApp.fetch(request));
  const cancels = createMemoryBroadcast(JobCancel);
  const uploadApp = createUploadApp({
    blobs,
    tasks,
    metadata: options.wrapUploadMetadata ? options.wrapUploadMetadata(metadata) : metadata,
    cancels,
    filesTtlMs: options.filesTtlMs,
    maxUploadBytes: 1_000_000,
    publicHttp: options.publicHttp,
  });
  const server = options.uploadOverHttp
    ? Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => uploadApp.fetch(request),
    )
    : null;
  const gateway = createGatewayApp({
    upload: server
      ? httpFetcher(`http://127.0.0.1:${server.addr.port}`)
      : (request) => uploadApp.fetch(request),
    metadata,
    auth: options.auth ?? "required",
    links: createDownloadLinks("s".repeat(32), options.linkSeconds ?? 300),
  });

  /** The tasks published so far, taken off the queue. */
  const published: ConversionRequested[] = [];
  const consumer = await tasks.consume((task) => {
    published.push(task);
    return Promise.resolve("ack");
  });

  const event = (jobId: string, body: Record<string, unknown>) =>
    metadata.postEvent({ version: 1, jobId, at: new Date().toISOString(), ...body } as never);

  return {
    gateway,
    metadata,
    store,
    keys,
    blobs,
    /** The conversion task queue (the test's consumer takes every task into `published`). */
    tasks,
    published,
    /** The broadcast of cancels that Convert workers would hear. */
    cancels,
    sweeper: createSweeper({ blobs, metadata, cancels }),

    /** Makes a key with `deno task keys create` and the given flags (e.g. ["--requests-per-minute", "3"]). */
    async createKey(flags: string[] = []): Promise<TestKey> {
      const result = await runKeysCommand(keys, ["create", "--name", "test", ...flags]);
      if (result.code !== 0) throw new Error(result.out.join("\n"));
      const token = result.out.map((line) => line.trim()).find((line) => line.startsWith("vmp3_"));
      if (!token) throw new Error(`No token in: ${result.out.join("\n")}`);
      const id = token.split("_")[1];
      return { id, token, auth: { authorization: `Bearer ${token}` } };
    },

    /** POST /v1/jobs with `bytes` as a raw video, as a client would. */
    upload(
      headers: Record<string, string>,
      bytes: string | Uint8Array<ArrayBuffer> = "video bytes",
      query = "",
    ): Promise<Response> {
      return Promise.resolve(gateway.request(`/v1/jobs${query}`, {
        method: "POST",
        headers: { "content-type": "video/mp4", ...headers },
        body: typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes,
      }));
    },

    /** POST /v1/jobs with a streamed body (see {@linkcode heldBody}), as a client would. */
    uploadStream(
      headers: Record<string, string>,
      body: ReadableStream<Uint8Array>,
    ): Promise<Response> {
      return Promise.resolve(gateway.request("/v1/jobs", {
        method: "POST",
        headers: { "content-type": "video/mp4", ...headers },
        body,
        // @ts-ignore: `duplex` is required to stream a request body, and not yet in every RequestInit type
        duplex: "half",
      }));
    },

    /** Plays Convert: the job started, then finished with `mp3` stored at its output key. */
    async finish(jobId: string, mp3 = "ID3 mp3 bytes"): Promise<void> {
      await event(jobId, { type: "job.started", duration: 1 });
      const { outputKey } = jobKeys(jobId);
      const bytes = new TextEncoder().encode(mp3);
      await blobs.put(outputKey, ReadableStream.from([bytes]));
      await event(jobId, {
        type: "job.done",
        output: {
          key: outputKey,
          codec: "mp3",
          size: bytes.byteLength,
          duration: 1,
          bitrate: 128000,
          sampleRate: 44100,
          channels: 2,
          sha256: "a".repeat(64),
          method: "encode",
        },
      });
    },

    /** Plays Convert: the job failed. */
    fail(jobId: string): Promise<void> {
      return event(jobId, {
        type: "job.failed",
        error: { code: "conversion_failed", message: "FFmpeg exited with 1" },
      });
    },

    /** Any event, as Convert would post it. */
    event,

    /** Whether the object `key` is stored. */
    async stored(key: string): Promise<boolean> {
      return (await blobs.head(key)) !== null;
    },

    /** Every job id in the store (of any owner). */
    async jobIds(): Promise<string[]> {
      const ids: string[] = [];
      for await (const entry of kv.list({ prefix: ["jobs"] })) ids.push(String(entry.key[1]));
      return ids;
    },

    /** Waits until the queue consumer has taken `count` tasks (or fails after 2 s). */
    async tasksTaken(count: number): Promise<ConversionRequested[]> {
      await eventually(
        () => `${count} tasks; only ${published.length} came`,
        () => published.length >= count,
      );
      return published;
    },

    async close(): Promise<void> {
      await consumer.close();
      await server?.shutdown();
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/**
 * A request body that sends `first` and then waits, until `finish()` sends `rest` and ends it; `cancelled()`
 * says whether its reader gave up on it (then `finish()` is called by itself).
 */
export function heldBody(first: string, rest: string) {
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => finish = resolve);
  const encoder = new TextEncoder();
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(encoder.encode(first));
      await done;
      if (cancelled) return;
      controller.enqueue(encoder.encode(rest));
      controller.close();
    },
    cancel() {
      cancelled = true;
      finish();
    },
  });
  return { body, finish, cancelled: () => cancelled };
}

/** A test with its own product, closed after. */
export function withProduct(
  options: ProductOptions,
  test: (product: Product) => Promise<void>,
): () => Promise<void> {
  return async () => {
    const product = await startProduct(options);
    try {
      await test(product);
    } finally {
      await product.close();
    }
  };
}
