/**
 * A Convert worker in real mode: tasks from RabbitMQ, files in S3, FFmpeg in a private work folder. Start as many
 * as you like, on any machine that reaches RabbitMQ and S3.
 * Run: `deno task start:convert` (see README for the variables).
 * @module
 */
import { Hono } from "hono";
import { ConversionRequested, ConvertEnv, EVENT_QUEUE, JobEvent, parseEnv, TASK_QUEUE } from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { checkFfmpeg } from "./ffmpeg_check.ts";
import { limitsFromEnv, startWorker } from "./worker.ts";

/** Starts a Convert worker with `config`; resolves once it takes tasks. */
export async function run(config: ConvertEnv) {
  await checkFfmpeg({ ffmpegPath: config.FFMPEG_PATH, ffprobePath: config.FFPROBE_PATH });
  await Deno.mkdir(config.WORK_DIR, { recursive: true });
  const blobs = createS3BlobStore(s3SettingsFromEnv(config));
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "convert" });
  const worker = await startWorker(broker.queue(TASK_QUEUE, ConversionRequested), {
    blobs,
    events: broker.queue(EVENT_QUEUE, JobEvent),
    workDir: config.WORK_DIR,
    concurrency: config.CONVERT_CONCURRENCY,
    limits: limitsFromEnv(config),
  });
  const health = new Hono().get("/healthz", (c) => c.json({ ok: true }));
  return serveUntilSignal(health, config, async () => {
    await worker.close();
    await broker.close();
    blobs.close();
  });
}

if (import.meta.main) await run(parseEnv(ConvertEnv, (name) => Deno.env.get(name)));
