/**
 * The Metadata service in real mode: jobs in Redis, events from RabbitMQ.
 * Run: `deno task start:metadata` (see README for the variables).
 * @module
 */
import {
  ConversionRequested,
  DEAD_TASK_QUEUE,
  EVENT_QUEUE,
  JobEvent,
  MetadataEnv,
  parseEnv,
} from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createRedisClient, createRedisJobStore, createRedisOutputCache } from "@vmp3/adapters/redis";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { createDurableJobStore } from "@vmp3/adapters/durable-jobs";
import { createMetadataApp } from "./app.ts";
import { startEventConsumer } from "./event_consumer.ts";
import { startDeadTaskConsumer } from "./dead_task_consumer.ts";
import { serveUntilSignal } from "@vmp3/adapters/serve";

/** Starts the Metadata service with `config`; resolves once it listens. */
export async function run(config: MetadataEnv) {
  const redis = createRedisClient(config.REDIS_URL);
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "metadata" });
  const records = createS3BlobStore(s3SettingsFromEnv(config));
  await records.ensureBucket();
  // Jobs live in Redis, with a durable record of each in S3 that rebuilds them if Redis loses them.
  const store = createDurableJobStore(createRedisJobStore(redis), records);
  const cache = createRedisOutputCache(redis);
  const consumer = await startEventConsumer(broker.queue(EVENT_QUEUE, JobEvent), { store, cache });
  const deadTasks = await startDeadTaskConsumer(
    broker.queue(DEAD_TASK_QUEUE, ConversionRequested, { deadLetterQueue: true }),
    store,
  );
  const app = createMetadataApp({ store, cache });
  return serveUntilSignal(app, config, async () => {
    await consumer.close();
    await deadTasks.close();
    await broker.close();
    redis.disconnect();
    records.close();
  });
}

if (import.meta.main) await run(parseEnv(MetadataEnv, (name) => Deno.env.get(name)));
