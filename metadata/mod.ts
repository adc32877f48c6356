/**
 * @module
 * The Metadata service: the one writer of job state. It records jobs, applies Convert's events to them forward
 * only, and answers reads (and an SSE stream) over HTTP.
 */
export { createMetadataApp, type MetadataAppDeps } from "./app.ts";
export { type EventConsumerOptions, startEventConsumer } from "./event_consumer.ts";
export {
  createMetadataClient,
  type ExpiringFiles,
  type FilesToRemove,
  type MetadataClient,
  type PublicJob,
  type Scope,
} from "./client.ts";
export { OWNER_HEADER } from "./scope.ts";
export { startDeadTaskConsumer } from "./dead_task_consumer.ts";
export {
  createWebhookPublisher,
  deploymentWebhookSecret,
  jobWebhookTargets,
  keyWebhookTargets,
  startWebhookDelivery,
  type WebhookPublisher,
  type WebhookTarget,
  type WebhookTargets,
} from "./webhook_delivery.ts";
export { type KeyInfo } from "./access.ts";
