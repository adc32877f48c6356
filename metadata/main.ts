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
  WEBHOOK_QUEUE,
  WebhookDelivery,
} from "@vmp3/shared";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import { createRedisClient, createRedisJobStore, createRedisOutputCache } from "@vmp3/adapters/redis";
import { createS3BlobStore, s3SettingsFromEnv } from "@vmp3/adapters/s3";
import { createDurableJobStore } from "@vmp3/adapters/durable-jobs";
import { createRedisEventLog } from "@vmp3/adapters/redis-event-log";
import { createRedisKeyStore } from "@vmp3/adapters/redis-keys";
import { createRedisUsageStore } from "@vmp3/adapters/redis-usage";
import { createMetadataApp } from "./app.ts";
import { startEventConsumer } from "./event_consumer.ts";
import { startDeadTaskConsumer } from "./dead_task_consumer.ts";
import {
  createWebhookPublisher,
  deploymentWebhookSecret,
  keyWebhookTargets,
  startWebhookDelivery,
} from "./webhook_delivery.ts";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { createPublicHttp, publicFetcher } from "@vmp3/adapters/public-http";

/** Starts the Metadata service with `config`; resolves once it listens. */
export async function run(config: MetadataEnv) {
  const redis = createRedisClient(config.REDIS_URL);
  const broker = createRabbitBroker(config.RABBITMQ_URL, { name: "metadata" });
  const records = createS3BlobStore(s3SettingsFromEnv(config));
  await records.ensureBucket();
  // Jobs live in Redis, with a durable record of each in S3 that rebuilds them if Redis loses them.
  const store = createDurableJobStore(createRedisJobStore(redis), records);
  const cache = createRedisOutputCache(redis);
  // Every change of a job goes to its event log (SSE) and queues its webhooks.
  const log = createRedisEventLog(redis);
  const webhookQueue = broker.queue(WEBHOOK_QUEUE, WebhookDelivery);
  // API keys and their counters (rates, bytes a day, idempotency keys), in the same Redis.
  const access = { keys: createRedisKeyStore(redis), usage: createRedisUsageStore(redis) };
  // Each job's own webhookUrl and its key's, signed with the key's secret (else the deployment's).
  const targets = keyWebhookTargets(access.keys, deploymentWebhookSecret(config.WEBHOOK_SECRET));
  const webhooks = createWebhookPublisher({ store, queue: webhookQueue, targets });
  const delivery = await startWebhookDelivery(webhookQueue, {
    store,
    // Webhooks reach public addresses only (and WEBHOOK_ALLOW_CIDRS), checked at connect time.
    fetcher: publicFetcher(createPublicHttp({ allow: config.WEBHOOK_ALLOW_CIDRS })),
    targets,
    retryDelaysMs: config.WEBHOOK_RETRY_DELAYS_SECONDS.map((seconds) => seconds * 1000),
  });
  const consumer = await startEventConsumer(broker.queue(EVENT_QUEUE, JobEvent), {
    store,
    cache,
    log,
    webhooks,
  });
  const deadTasks = await startDeadTaskConsumer(
    broker.queue(DEAD_TASK_QUEUE, ConversionRequested, { deadLetterQueue: true }),
    { store, cache, log, webhooks },
  );
  const app = createMetadataApp({ store, cache, log, webhooks, access });
  return serveUntilSignal(app, config, async () => {
    await consumer.close();
    await deadTasks.close();
    await delivery.close();
    await broker.close();
    log.close();
    redis.disconnect();
    records.close();
  });
}

if (import.meta.main) await run(parseEnv(MetadataEnv, (name) => Deno.env.get(name)));
