/**
 * The embedded mode: all four services in one process, wired to local adapters (Deno KV for jobs and queues, a
 * folder for files), so `deno task dev` needs no RabbitMQ, Redis or S3. The code paths are the real services':
 * only the adapters differ, and the Gateway reaches Upload and Metadata through their apps' own `fetch`.
 * @module
 */
import {
  ConversionRequested,
  DEAD_TASK_QUEUE,
  type EmbeddedEnv,
  EmbeddedEnv as EmbeddedEnvSchema,
  EVENT_QUEUE,
  JobCancel,
  JobEvent,
  parseEnv,
  TASK_QUEUE,
  WEBHOOK_QUEUE,
  WebhookDelivery,
} from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createMemoryBroadcast } from "@vmp3/adapters/memory-broadcast";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createDurableJobStore } from "@vmp3/adapters/durable-jobs";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";
import { createKvUsageStore } from "@vmp3/adapters/kv-usage";
import { createPublicHttp, publicFetcher, publicHttpSettingsFromEnv } from "@vmp3/adapters/public-http";
import {
  createMetadataApp,
  createMetadataClient,
  createWebhookPublisher,
  deploymentWebhookSecret,
  keyWebhookTargets,
  startDeadTaskConsumer,
  startEventConsumer,
  startWebhookDelivery,
} from "@vmp3/metadata";
import { createPendingUploadSweeper, createReconciler, createSweeper, createUploadApp } from "@vmp3/upload";
import { createFsMultipartStore } from "@vmp3/adapters/fs-multipart";
import { checkFfmpeg, limitsFromEnv, startWorker } from "@vmp3/convert";
import { createDownloadLinks, createGatewayApp, downloadLinkSecret } from "@vmp3/gateway";

/** A running embedded vmp3. */
export interface Running {
  /** Where the Gateway listens. */
  url: string;
  /** Stops taking work, lets conversions in hand finish, and closes everything. */
  close(): Promise<void>;
}

/** Starts the whole product in this process, on the local adapters. */
export async function runEmbedded(config: EmbeddedEnv): Promise<Running> {
  await checkFfmpeg({ ffmpegPath: config.FFMPEG_PATH, ffprobePath: config.FFPROBE_PATH });
  await Deno.mkdir(config.DATA_DIR, { recursive: true });
  const kv = await Deno.openKv(`${config.DATA_DIR}/vmp3.kv`);
  const blobs = createFsBlobStore(config.DATA_DIR);
  // tus uploads assemble their parts in DATA_DIR/multipart (direct-to-S3 uploads answer 501 here).
  const parts = createFsMultipartStore(config.DATA_DIR);
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested);
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent);
  // One process: the cancels need not leave it (see adapters/memory_broadcast.ts).
  const cancels = createMemoryBroadcast(JobCancel);
  // As in real mode: a durable record of each job beside its files, which rebuilds it if the job store loses it.
  const store = createDurableJobStore(createKvJobStore(kv), blobs);
  const cache = createKvOutputCache(kv);
  // Every change of a job goes to its event log (SSE) and queues its webhooks, as in real mode.
  const log = createKvEventLog(kv);
  const webhookQueue = createKvQueue(kv, WEBHOOK_QUEUE, WebhookDelivery);
  // API keys (made with `deno task keys`) and their counters, in the same KV file.
  const access = { keys: createKvKeyStore(kv), usage: createKvUsageStore(kv) };
  const webhookTargets = keyWebhookTargets(access.keys, deploymentWebhookSecret(config.WEBHOOK_SECRET));
  const webhooks = createWebhookPublisher({ store, queue: webhookQueue, targets: webhookTargets });

  const metadataApp = createMetadataApp({ store, cache, log, webhooks, access });
  const metadata = createMetadataClient((request) => metadataApp.fetch(request));
  const uploadApp = createUploadApp({
    blobs,
    tasks,
    metadata,
    cancels,
    filesTtlMs: config.FILES_TTL_SECONDS * 1000,
    maxUploadBytes: config.MAX_UPLOAD_BYTES,
    // Import from URL: fetches only public addresses (and IMPORT_ALLOW_CIDRS), checked at connect time.
    publicHttp: createPublicHttp(publicHttpSettingsFromEnv(config)),
    stall: { timeoutMs: config.UPLOAD_STALL_SECONDS * 1000, minBytes: config.UPLOAD_STALL_MIN_BYTES },
    resumable: { parts },
  });
  // Unfinished tus uploads are removed a day after their creation (the defaults of real mode).
  const uploadSweep = createPendingUploadSweeper({ blobs, parts }).start(600_000);
  const reconciler = createReconciler({
    blobs,
    tasks,
    metadata,
    graceMs: config.RECONCILE_GRACE_SECONDS * 1000,
  })
    .start(config.RECONCILE_SECONDS * 1000);
  const sweeper = createSweeper({ blobs, metadata, cancels }).start(config.SWEEP_SECONDS * 1000);
  const gatewayApp = createGatewayApp({
    upload: (request) => uploadApp.fetch(request),
    metadata,
    auth: config.AUTH,
    links: createDownloadLinks(downloadLinkSecret(config.DOWNLOAD_LINK_SECRET), config.DOWNLOAD_LINK_SECONDS),
  });

  const eventConsumer = await startEventConsumer(events, { store, cache, log, webhooks });
  const webhookDelivery = await startWebhookDelivery(webhookQueue, {
    store,
    // Webhooks reach public addresses only (and WEBHOOK_ALLOW_CIDRS), checked at connect time.
    fetcher: publicFetcher(createPublicHttp({ allow: config.WEBHOOK_ALLOW_CIDRS })),
    targets: webhookTargets,
    retryDelaysMs: config.WEBHOOK_RETRY_DELAYS_SECONDS.map((seconds) => seconds * 1000),
  });
  const deadTasks = await startDeadTaskConsumer(
    createKvQueue(kv, DEAD_TASK_QUEUE, ConversionRequested),
    { store, cache, log, webhooks },
  );
  const worker = await startWorker(tasks, {
    blobs,
    events,
    cancels,
    workDir: `${config.DATA_DIR}/work`,
    concurrency: config.CONVERT_CONCURRENCY,
    limits: limitsFromEnv(config),
  });
  const server = Deno.serve(
    { hostname: config.HOST, port: config.PORT, onListen: () => {} },
    (request) => gatewayApp.fetch(request),
  );
  const { hostname, port } = server.addr;
  return {
    url: `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`,
    async close() {
      await server.shutdown();
      await reconciler.stop();
      await sweeper.stop();
      await uploadSweep.stop();
      await worker.close();
      await eventConsumer.close();
      await deadTasks.close();
      await webhookDelivery.close();
      kv.close();
    },
  };
}

if (import.meta.main) {
  const config = parseEnv(EmbeddedEnvSchema, (name) => Deno.env.get(name));
  const running = await runEmbedded(config).catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  });
  console.log(`vmp3 (embedded) listening on ${running.url} — data in ${config.DATA_DIR}/`);
  if (config.AUTH === "open") {
    console.log(
      "The API runs OPEN: calls without an API key are let in (AUTH=required to need one; keys: deno task keys)",
    );
  }
  console.log(`Try: curl -F file=@clip.mp4 ${running.url}/v1/convert -o clip.mp3`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      console.log(`${signal}: finishing the conversions in hand…`);
      await running.close();
      Deno.exit(0);
    });
  }
}
