/**
 * The Upload service in real mode: videos into S3, tasks onto RabbitMQ, jobs recorded through Metadata.
 * Run: `deno task start:upload` (see README for the variables).
 * @module
 */
import { ConversionRequested, parseEnv, TASK_QUEUE, UploadEnv } from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { httpFetcher } from "@vmp3/adapters/http";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { createMetadataClient } from "@vmp3/metadata";
import { createUploadApp } from "./app.ts";
import { createReconciler } from "./reconciler.ts";

/** Starts the Upload service with `config`; resolves once it listens. */
export async function run(config: UploadEnv) {
  const blobs = createS3BlobStore(s3SettingsFromEnv(config));
  await blobs.ensureBucket();
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "upload" });
  const tasks = broker.queue(TASK_QUEUE, ConversionRequested);
  const metadata = createMetadataClient(httpFetcher(config.METADATA_URL));
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
    maxUploadBytes: config.MAX_UPLOAD_BYTES,
    stall: { timeoutMs: config.UPLOAD_STALL_SECONDS * 1000, minBytes: config.UPLOAD_STALL_MIN_BYTES },
    presignSeconds: config.S3_PRESIGN_SECONDS,
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
  return serveUntilSignal(app, config, async () => {
    await reconciler.stop();
    await broker.close();
    blobs.close();
  });
}

if (import.meta.main) await run(parseEnv(UploadEnv, (name) => Deno.env.get(name)));
