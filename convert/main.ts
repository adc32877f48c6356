/**
 * A Convert worker in real mode: tasks from RabbitMQ, files in S3, FFmpeg in a private work folder. Start as many
 * as you like, on any machine that reaches RabbitMQ and S3.
 * Run: `deno task start:convert` (see README for the variables).
 *
 * On SIGTERM (or SIGINT) it takes no new task; the task in hand finishes if it can within
 * CONVERT_SHUTDOWN_GRACE_SECONDS, else FFmpeg is stopped and the task handed back to the broker; then it exits 0.
 * @module
 */
import { Hono } from "hono";
import {
  BROKER_TIMEOUT_SHARE,
  CANCEL_EXCHANGE,
  ConfigError,
  ConversionRequested,
  ConvertEnv,
  EVENT_QUEUE,
  JobCancel,
  JobEvent,
  parseEnv,
  TASK_QUEUE,
} from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { checkFfmpeg } from "./ffmpeg_check.ts";
import { limitsFromEnv, startWorker } from "./worker.ts";

/** The exit code of a worker stopped by the test switch CONVERT_TEST_CRASH_FILENAME. */
export const TEST_CRASH_EXIT_CODE = 70;

/** Starts a Convert worker with `config`; resolves once it takes tasks. */
export async function run(config: ConvertEnv) {
  await checkFfmpeg({ ffmpegPath: config.FFMPEG_PATH, ffprobePath: config.FFPROBE_PATH });
  await Deno.mkdir(config.WORK_DIR, { recursive: true });
  const crashOn = config.CONVERT_TEST_CRASH_FILENAME;
  if (crashOn !== undefined) {
    console.error(
      `WARNING: the test switch CONVERT_TEST_CRASH_FILENAME is set: this worker exits when it takes a task for a ` +
        `file named ${JSON.stringify(crashOn)}. Never set it outside tests.`,
    );
  }
  const blobs = createS3BlobStore(s3SettingsFromEnv(config));
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "convert" });
  // strictPrefetch: never more than CONVERT_CONCURRENCY conversions, even while a lost channel's still run.
  const worker = await startWorker(broker.queue(TASK_QUEUE, ConversionRequested, { strictPrefetch: true }), {
    blobs,
    events: broker.queue(EVENT_QUEUE, JobEvent),
    // Every worker hears every cancel: the one converting the job stops it.
    cancels: broker.broadcast(CANCEL_EXCHANGE, JobCancel),
    workDir: config.WORK_DIR,
    concurrency: config.CONVERT_CONCURRENCY,
    limits: limitsFromEnv(config),
    retryDelaysMs: config.CONVERT_RETRY_DELAYS_SECONDS.map((seconds) => seconds * 1000),
    // The broker takes back a task held past its consumer timeout: never hold one that long.
    maxHoldMs: config.BROKER_CONSUMER_TIMEOUT_SECONDS * 1000 * BROKER_TIMEOUT_SHARE,
    log: (line) => console.log(line),
    onStarted: crashOn === undefined ? undefined : (task) => {
      if (task.filename !== crashOn) return;
      console.error(`job ${task.jobId}: CONVERT_TEST_CRASH_FILENAME names its file; exiting on purpose`);
      Deno.exit(TEST_CRASH_EXIT_CODE);
    },
  });
  const health = new Hono().get("/healthz", (c) => c.json({ ok: true }));
  return serveUntilSignal(health, config, async () => {
    await worker.shutdown(config.CONVERT_SHUTDOWN_GRACE_SECONDS * 1000);
    await broker.close();
    blobs.close();
  });
}

if (import.meta.main) {
  let config: ConvertEnv;
  try {
    config = parseEnv(ConvertEnv, (name) => Deno.env.get(name));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    // A clear message and a quick exit, not a stack trace.
    console.error(`convert: ${error.message}`);
    Deno.exit(1);
  }
  await run(config);
}
