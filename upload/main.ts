/**
 * The Upload service in real mode: videos into S3, tasks onto RabbitMQ, jobs recorded through Metadata.
 * Run: `deno task start:upload` (see README for the variables).
 * @module
 */
import {
  CANCEL_EXCHANGE,
  ConversionRequested,
  JobCancel,
  parseEnv,
  TASK_QUEUE,
  UploadEnv,
} from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { createS3MultipartStore } from "@vmp3/adapters/s3-multipart";
import { httpFetcher } from "@vmp3/adapters/http";
import { createPublicHttp, publicHttpSettingsFromEnv } from "@vmp3/adapters/public-http";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { createMetadataClient } from "@vmp3/metadata";
import { createUploadApp } from "./app.ts";
import { createReconciler } from "./reconciler.ts";
import { createSweeper } from "./sweeper.ts";
import { createPendingUploadSweeper } from "./pending_upload_sweeper.ts";

/** Starts the Upload service with `config`; resolves once it listens. */
export async function run(config: UploadEnv) {
  const blobs = createS3BlobStore(s3SettingsFromEnv(config));
  await blobs.ensureBucket();
  // Resumable (tus) and direct uploads: S3 multipart uploads, presigned for S3_PUBLIC_ENDPOINT when set.
  const parts = createS3MultipartStore(s3SettingsFromEnv(config));
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "upload" });
  const tasks = broker.queue(TASK_QUEUE, ConversionRequested);
  const metadata = createMetadataClient(httpFetcher(config.METADATA_URL));
  // Every worker hears a cancel (a client's, or the sweeper's of an expired job), and the one converting it stops.
  const cancels = broker.broadcast(CANCEL_EXCHANGE, JobCancel);
  const crashOn = config.UPLOAD_TEST_CRASH_FILENAME;
  if (crashOn !== undefined) {
    console.error(
      `WARNING: the test switch UPLOAD_TEST_CRASH_FILENAME is set: this service exits before publishing the task ` +
        `of a file named ${JSON.stringify(crashOn)}. Never set it outside tests.`,
    );
  }
  const app = createUploadApp({
    blobs,
    tasks,
    metadata,
    cancels,
    filesTtlMs: config.FILES_TTL_SECONDS * 1000,
    maxUploadBytes: config.MAX_UPLOAD_BYTES,
    // Import from URL: fetches only public addresses (and IMPORT_ALLOW_CIDRS), checked at connect time.
    publicHttp: createPublicHttp(publicHttpSettingsFromEnv(config)),
    stall: { timeoutMs: config.UPLOAD_STALL_SECONDS * 1000, minBytes: config.UPLOAD_STALL_MIN_BYTES },
    presignSeconds: config.S3_PRESIGN_SECONDS,
    resumable: {
      parts,
      partBytes: config.TUS_PART_BYTES,
      expiryMs: config.UPLOAD_EXPIRY_SECONDS * 1000,
      directUrlSeconds: config.DIRECT_UPLOAD_URL_SECONDS,
    },
    beforePublish: crashOn === undefined ? undefined : ({ id, filename }) => {
      if (filename !== crashOn) return;
      console.error(
        `job ${id}: UPLOAD_TEST_CRASH_FILENAME names its file; exiting before publishing its task`,
      );
      Deno.exit(70);
    },
  });
  const reconciler = createReconciler({
    blobs,
    tasks,
    metadata,
    graceMs: config.RECONCILE_GRACE_SECONDS * 1000,
  })
    .start(config.RECONCILE_SECONDS * 1000);
  const sweeper = createSweeper({ blobs, metadata, cancels }).start(config.SWEEP_SECONDS * 1000);
  const uploadSweep = createPendingUploadSweeper({ blobs, parts }).start(config.UPLOAD_SWEEP_SECONDS * 1000);
  return serveUntilSignal(app, config, async () => {
    await sweeper.stop();
    await uploadSweep.stop();
    await reconciler.stop();
    await broker.close();
    blobs.close();
    parts.close();
  });
}

if (import.meta.main) await run(parseEnv(UploadEnv, (name) => Deno.env.get(name)));
