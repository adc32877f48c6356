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

/** Starts the Upload service with `config`; resolves once it listens. */
export async function run(config: UploadEnv) {
  const blobs = createS3BlobStore(s3SettingsFromEnv(config));
  await blobs.ensureBucket();
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "upload" });
  const app = createUploadApp({
    blobs,
    tasks: broker.queue(TASK_QUEUE, ConversionRequested),
    metadata: createMetadataClient(httpFetcher(config.METADATA_URL)),
    maxUploadBytes: config.MAX_UPLOAD_BYTES,
    presignSeconds: config.S3_PRESIGN_SECONDS,
  });
  return serveUntilSignal(app, config, async () => {
    await broker.close();
    blobs.close();
  });
}

if (import.meta.main) await run(parseEnv(UploadEnv, (name) => Deno.env.get(name)));
