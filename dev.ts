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
  JobEvent,
  parseEnv,
  TASK_QUEUE,
} from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createDurableJobStore } from "@vmp3/adapters/durable-jobs";
import {
  createMetadataApp,
  createMetadataClient,
  startDeadTaskConsumer,
  startEventConsumer,
} from "@vmp3/metadata";
import { createReconciler, createUploadApp } from "@vmp3/upload";
import { checkFfmpeg, limitsFromEnv, startWorker } from "@vmp3/convert";
import { createGatewayApp } from "@vmp3/gateway";

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
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested);
  const events = createKvQueue(kv, EVENT_QUEUE, JobEvent);
  // As in real mode: a durable record of each job beside its files, which rebuilds it if the job store loses it.
  const store = createDurableJobStore(createKvJobStore(kv), blobs);
  const cache = createKvOutputCache(kv);

  const metadataApp = createMetadataApp({ store, cache });
  const metadata = createMetadataClient((request) => metadataApp.fetch(request));
  const uploadApp = createUploadApp({
    blobs,
    tasks,
    metadata,
    maxUploadBytes: config.MAX_UPLOAD_BYTES,
    stall: { timeoutMs: config.UPLOAD_STALL_SECONDS * 1000, minBytes: config.UPLOAD_STALL_MIN_BYTES },
  });
  const reconciler = createReconciler({
    blobs,
    tasks,
    metadata,
    graceMs: config.RECONCILE_GRACE_SECONDS * 1000,
  })
    .start(config.RECONCILE_SECONDS * 1000);
  const gatewayApp = createGatewayApp({ upload: (request) => uploadApp.fetch(request), metadata });

  const eventConsumer = await startEventConsumer(events, { store, cache });
  const deadTasks = await startDeadTaskConsumer(
    createKvQueue(kv, DEAD_TASK_QUEUE, ConversionRequested),
    store,
  );
  const worker = await startWorker(tasks, {
    blobs,
    events,
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
      await worker.close();
      await eventConsumer.close();
      await deadTasks.close();
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
  console.log(`Try: curl -F file=@clip.mp4 ${running.url}/v1/convert -o clip.mp3`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      console.log(`${signal}: finishing the conversions in hand…`);
      await running.close();
      Deno.exit(0);
    });
  }
}
