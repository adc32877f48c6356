/**
 * @module
 * The Metadata service: the one writer of job state. It records jobs, applies Convert's events to them forward
 * only, and answers reads (and an SSE stream) over HTTP.
 */
export { createMetadataApp, type MetadataAppDeps } from "./app.ts";
export { type EventConsumerOptions, startEventConsumer } from "./event_consumer.ts";
export { createMetadataClient, type MetadataClient, type PublicJob } from "./client.ts";
export { startDeadTaskConsumer } from "./dead_task_consumer.ts";
