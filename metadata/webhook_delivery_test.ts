/**
 * Webhooks end to end inside Metadata: events recorded -> deliveries queued -> POSTed to a real HTTP listener,
 * verified with the standardwebhooks library; retries and giving up show on the job. The queue is Deno KV in some
 * tests and a real RabbitMQ (TEST_RABBITMQ_URL, from scripts/test_servers.sh) in one.
 */
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createRabbitBroker } from "@vmp3/adapters/rabbitmq";
import {
  generateWebhookSecret,
  type Job,
  type JobEvent,
  type JobStore,
  type Queue,
  WEBHOOK_QUEUE,
  WebhookDelivery,
} from "@vmp3/shared";
import { createMetadataApp } from "./app.ts";
import {
  createWebhookPublisher,
  jobWebhookTargets,
  startWebhookDelivery,
  webhookEvents,
  withDelivery,
} from "./webhook_delivery.ts";

interface Received {
  id: string;
  type: string;
  data: Record<string, unknown>;
  verified: boolean;
}

/**
 * A real HTTP listener, verifying each request's signature; it answers the n-th attempt (from 1) of each webhook
 * `statusFor(type, n)`.
 */
function listen(secret: string, statusFor: (type: string, attempt: number) => number) {
  const received: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = await request.text();
    let verified = false;
    try {
      new Webhook(secret).verify(body, Object.fromEntries(request.headers));
      verified = true;
    } catch {
      // counted as not verified
    }
    const payload = JSON.parse(body);
    received.push({
      id: request.headers.get("webhook-id")!,
      type: payload.type,
      data: payload.data,
      verified,
    });
    const attempt = received.filter((r) => r.id === request.headers.get("webhook-id")).length;
    return new Response(null, { status: statusFor(payload.type, attempt) });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/hook`, received, close: () => server.shutdown() };
}

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

async function run(
  queue: Queue<WebhookDelivery>,
  kv: Deno.Kv,
  options: {
    statusFor: (type: string, attempt: number) => number;
    retryDelaysMs: number[];
    /** How long the delivery consumer holds a message not yet due (default 100 ms). */
    maxHoldMs?: number;
    /** The delivery consumer's clock (default the real one). */
    now?: () => Date;
  },
) {
  const secret = generateWebhookSecret();
  const listener = listen(secret, options.statusFor);
  const store = createKvJobStore(kv);
  const targets = jobWebhookTargets(secret);
  const webhooks = createWebhookPublisher({ store, queue, targets });
  const app = createMetadataApp({
    store,
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
    webhooks,
  });
  const { retryDelaysMs, maxHoldMs = 100, now } = options;
  const start = () => startWebhookDelivery(queue, { store, targets, retryDelaysMs, maxHoldMs, now });
  let delivery = await start();
  const id = crypto.randomUUID();
  const post = async (path: string, body: unknown) => {
    const response = await app.request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    assert.ok(response.ok, `${path}: ${response.status} ${text}`);
    return JSON.parse(text);
  };
  const event = (body: Record<string, unknown>) =>
    post(`/jobs/${id}/events`, { version: 1, jobId: id, ...body });
  await post("/jobs", { id, input: { filename: "clip.mp4", size: 5 }, webhookUrl: listener.url });
  return {
    id,
    store,
    app,
    listener,
    event,
    /** Stops the delivery consumer (as a shutdown would) and starts another; `meanwhile` runs in between. */
    async restart(meanwhile: () => void = () => {}) {
      await delivery.close();
      meanwhile();
      delivery = await start();
    },
    async close() {
      await delivery.close();
      await listener.close();
    },
  };
}

const deliveriesOf = async (store: JobStore, id: string) => (await store.get(id))?.webhooks?.deliveries ?? [];

Deno.test("webhookEvents: created, each tenth of progress once, and the final state", () => {
  const job = {
    id: crypto.randomUUID(),
    status: "queued",
    progress: 0,
    input: { filename: "a", size: 1 },
    createdAt: at(0),
    updatedAt: at(0),
  } as Job;
  const converting = (progress: number): Job => ({ ...job, status: "converting", progress });
  assert.deepEqual(webhookEvents(null, job), ["job.created"]);
  assert.deepEqual(webhookEvents(null, { ...job, status: "done", progress: 1 }), ["job.created", "job.done"]);
  assert.deepEqual(webhookEvents(job, converting(0)), []);
  assert.deepEqual(webhookEvents(converting(0), converting(0.09)), []);
  assert.deepEqual(webhookEvents(converting(0.09), converting(0.1)), ["job.progress"]);
  assert.deepEqual(webhookEvents(converting(0.1), converting(0.19)), []);
  assert.deepEqual(webhookEvents(converting(0.19), converting(0.5)), ["job.progress"]);
  assert.deepEqual(webhookEvents(converting(0.5), { ...job, status: "failed" }), ["job.failed"]);
  assert.deepEqual(webhookEvents(converting(0.5), { ...job, status: "cancelled" }), ["job.cancelled"]);
});

Deno.test("a job shows at most its 20 latest deliveries, and a record never goes back to fewer attempts", () => {
  let job = { id: "x", webhooks: { deliveries: [] } } as unknown as Job;
  const record = (n: number, attempts = 1) => ({
    id: `msg_${n}`,
    event: "job.progress",
    url: "http://x",
    attempts,
    status: "pending" as const,
    updatedAt: at(n),
  });
  for (let n = 0; n < 25; n++) job = withDelivery(job, record(n));
  assert.deepEqual(
    job.webhooks!.deliveries.map((d) => d.id),
    Array.from({ length: 20 }, (_, i) => `msg_${i + 5}`),
  );
  job = withDelivery(job, record(24, 3));
  assert.equal(job.webhooks!.deliveries.at(-1)!.attempts, 3);
  assert.equal(withDelivery(job, record(24, 2)), job, "a late, older record changes nothing");
});

Deno.test("KV queue: created, progress and done webhooks arrive signed; a listener failing twice gets three attempts", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, WEBHOOK_QUEUE, WebhookDelivery, { pollMs: 10 });
  // The job.created delivery is answered 500, 503, then 200.
  const statusFor = (type: string, attempt: number) =>
    type === "job.created" ? [500, 503, 200][attempt - 1] : 200;
  const t = await run(queue, kv, { statusFor, retryDelaysMs: [50, 50, 50] });
  try {
    const created = await until("job.created delivered", async () => {
      const [d] = await deliveriesOf(t.store, t.id);
      return d?.status === "delivered" ? d : undefined;
    });
    assert.deepEqual(
      [created.event, created.attempts, created.lastStatusCode, created.url],
      ["job.created", 3, 200, t.listener.url],
    );
    assert.equal(created.lastError, undefined);
    const attempts = t.listener.received.filter((r) => r.type === "job.created");
    assert.equal(attempts.length, 3);
    assert.ok(
      attempts.every((r) => r.verified && r.id === created.id),
      "signed, one webhook-id on every attempt",
    );

    await t.event({ type: "job.started", at: at(1), duration: 3 });
    await t.event({ type: "job.progress", at: at(2), progress: 0.05 });
    await t.event({ type: "job.progress", at: at(3), progress: 0.42 });
    await t.event({ type: "job.done", at: at(4), output: OUTPUT });
    const all = await until("every delivery delivered", async () => {
      const deliveries = await deliveriesOf(t.store, t.id);
      return deliveries.length === 3 && deliveries.every((d) => d.status === "delivered")
        ? deliveries
        : undefined;
    });
    assert.deepEqual(all.map((d) => [d.event, d.attempts]), [["job.created", 3], ["job.progress", 1], [
      "job.done",
      1,
    ]]);
    const done = t.listener.received.find((r) => r.type === "job.done")!;
    assert.ok(done.verified);
    assert.deepEqual([done.data.id, done.data.status, done.data.progress], [t.id, "done", 1]);
    assert.equal("webhooks" in done.data, false, "the payload is the job without its delivery records");
    assert.equal(t.listener.received.find((r) => r.type === "job.progress")!.data.progress, 0.42);

    // The public job shows the deliveries (and no secret).
    const shown = await (await t.app.request(`/jobs/${t.id}`)).json();
    assert.equal(shown.webhooks.deliveries.length, 3);
    assert.doesNotMatch(JSON.stringify(shown), /whsec_/);
  } finally {
    await t.close();
    kv.close();
  }
});

Deno.test("KV queue: a retry waiting when the consumer stops is made by the next one", async () => {
  const kv = await Deno.openKv(":memory:");
  const inner = createKvQueue(kv, WEBHOOK_QUEUE, WebhookDelivery, { pollMs: 10 });
  // Which messages the consumers were handed, to know when the retry is held.
  const handed: WebhookDelivery[] = [];
  const queue: Queue<WebhookDelivery> = {
    publish: (message) => inner.publish(message),
    consume: (handler, options) =>
      inner.consume((message, info) => {
        handed.push(message);
        return handler(message, info);
      }, options),
  };
  // The retry is due in a minute and held all that time; the consumers' clock is moved on once the first has
  // stopped, so that the next one makes it at once.
  const retryMs = 60_000;
  let ahead = 0;
  const t = await run(queue, kv, {
    statusFor: (_, attempt) => attempt === 1 ? 500 : 200,
    retryDelaysMs: [retryMs],
    maxHoldMs: 10 * retryMs,
    now: () => new Date(Date.now() + ahead),
  });
  try {
    const pending = await until("the first attempt failed", async () => {
      const [d] = await deliveriesOf(t.store, t.id);
      return d?.attempts === 1 ? d : undefined;
    });
    assert.deepEqual([pending.status, pending.lastStatusCode], ["pending", 500]);
    assert.ok(pending.nextAttemptAt);
    await until(
      "the retry to be held",
      () => Promise.resolve(handed.some((m) => m.attempt === 2) || undefined),
    );
    const stopped = Date.now();
    await t.restart(() => {
      const took = Date.now() - stopped;
      assert.ok(took < 5_000, `stopping took ${took} ms: it waited for the retry held for ${retryMs} ms`);
      ahead = retryMs;
    });
    const delivered = await until("delivered after the restart", async () => {
      const [d] = await deliveriesOf(t.store, t.id);
      return d?.status === "delivered" ? d : undefined;
    });
    assert.equal(delivered.attempts, 2);
    assert.equal(t.listener.received.length, 2);
    assert.equal(
      handed.filter((m) => m.attempt === 2).length,
      2,
      "held by the first consumer, made by the next",
    );
  } finally {
    await t.close();
    kv.close();
  }
});

Deno.test("KV queue: a listener that always fails gets every attempt, then the delivery is failed", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = createKvQueue(kv, WEBHOOK_QUEUE, WebhookDelivery, { pollMs: 10 });
  const t = await run(queue, kv, { statusFor: () => 500, retryDelaysMs: [30, 60] });
  try {
    const failed = await until("the delivery failed", async () => {
      const [d] = await deliveriesOf(t.store, t.id);
      return d?.status === "failed" ? d : undefined;
    });
    assert.deepEqual([failed.attempts, failed.lastStatusCode, failed.lastError], [3, 500, "answered 500"]);
    assert.equal(failed.nextAttemptAt, undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(t.listener.received.length, 3, "no attempt after the last");
  } finally {
    await t.close();
    kv.close();
  }
});

Deno.test("RabbitMQ queue: a listener failing twice gets three attempts; every event is delivered", async () => {
  const url = Deno.env.get("TEST_RABBITMQ_URL");
  if (!url) {
    throw new Error("TEST_RABBITMQ_URL is not set: run through `bash scripts/test_servers.sh deno test -A`");
  }
  const broker = createRabbitBroker(url, { name: "webhook-test" });
  const queue = broker.queue(`test.webhooks.${crypto.randomUUID()}`, WebhookDelivery);
  const kv = await Deno.openKv(":memory:");
  const statusFor = (type: string, attempt: number) =>
    type === "job.created" ? [500, 502, 200][attempt - 1] : 200;
  const t = await run(queue, kv, { statusFor, retryDelaysMs: [100, 100] });
  try {
    await t.event({ type: "job.failed", at: at(1), error: { code: "no_audio_stream", message: "no audio" } });
    const deliveries = await until("both delivered", async () => {
      const found = await deliveriesOf(t.store, t.id);
      return found.length === 2 && found.every((d) => d.status === "delivered") ? found : undefined;
    });
    assert.deepEqual(deliveries.map((d) => [d.event, d.attempts]).sort(), [["job.created", 3], [
      "job.failed",
      1,
    ]]);
    assert.equal(t.listener.received.length, 4);
    assert.ok(t.listener.received.every((r) => r.verified));
    const failed = t.listener.received.find((r) => r.type === "job.failed")!;
    assert.deepEqual(failed.data.error, { code: "no_audio_stream", message: "no audio" });
  } finally {
    await t.close();
    await broker.close();
    kv.close();
  }
});

const OUTPUT = {
  key: "k",
  codec: "mp3",
  size: 10,
  duration: 3,
  bitrate: 192000,
  sampleRate: 44100,
  channels: 2,
  sha256: "d".repeat(64),
  method: "encode",
} as const satisfies Extract<JobEvent, { type: "job.done" }>["output"];
