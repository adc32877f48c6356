/**
 * Webhooks: which changes of a job make one, how each is queued (durably, never in the way of event processing),
 * and the consumer that POSTs them, signed per the Standard Webhooks spec, retrying with backoff.
 *
 * Events: job.created; job.progress each time the progress passes another tenth (at most 9 per job, the same
 * whichever process records it, and no state to keep); job.done, job.failed and job.cancelled. A job done at once
 * from the cache gets job.created then job.done. The body is `{type, timestamp, data: <public job>}`.
 *
 * A delivery is one message on the webhook queue per attempt: a failed attempt is acked and published again with
 * the next attempt's number and a `notBefore`. A consumer holds a message that is not due yet for at most
 * `maxHoldMs`, then puts it back at the end of the queue, so that no message is held past the broker's consumer
 * timeout, and a restart loses nothing (the queue's own "retry" is not used for this: RabbitMQ redelivers at once
 * and the KV queue backs off 30 s at most, both within a delivery limit of 5).
 */
import {
  type Fetcher,
  generateWebhookSecret,
  isFinal,
  type Job,
  type JobStore,
  type KeyStore,
  publicJob,
  type Queue,
  signWebhook,
  type Subscription,
  type WebhookDelivery,
  type WebhookDeliveryRecord,
} from "@vmp3/shared";

/** The events a webhook reports. */
export type WebhookEvent = "job.created" | "job.progress" | "job.done" | "job.failed" | "job.cancelled";

/** Where a job's webhooks go, each signed with its own secret (`whsec_<base64>`). */
export interface WebhookTarget {
  url: string;
  secret: string;
}

/** The webhook targets of a job (its own `webhookUrl`, its API key's URL...); looked up at each attempt. */
export type WebhookTargets = (job: Job) => Promise<WebhookTarget[]>;

/** Queues the webhooks of one change of a job (`before` null: it was just created). */
export interface WebhookPublisher {
  publish(before: Job | null, after: Job): Promise<void>;
}

/** How many deliveries a job shows (the newest). */
export const MAX_SHOWN_DELIVERIES = 20;

/** The waits before the 2nd, 3rd... attempt: 5 s, 30 s, 2 min, 10 min, 1 h; after the 6th attempt it fails. */
export const DEFAULT_WEBHOOK_RETRY_DELAYS_MS = [5_000, 30_000, 120_000, 600_000, 3_600_000];

/** Which webhook events the change from `before` (null: none, a new job) to `after` makes. */
export function webhookEvents(before: Job | null, after: Job): WebhookEvent[] {
  const events: WebhookEvent[] = [];
  if (!before) events.push("job.created");
  if (isFinal(after.status) && after.status !== before?.status) {
    events.push(`job.${after.status}` as WebhookEvent);
  } else if (
    after.status === "converting" &&
    Math.floor(after.progress * 10) > Math.floor((before?.progress ?? 0) * 10)
  ) {
    events.push("job.progress");
  }
  return events;
}

/** The job's targets for `jobWebhookTargets`: its own `webhookUrl`, signed with the deployment's `secret`. */
export function jobWebhookTargets(secret: string): WebhookTargets {
  return (job) => Promise.resolve(job.webhookUrl ? [{ url: job.webhookUrl, secret }] : []);
}

/**
 * The targets of a job with API keys: its own `webhookUrl` and its key's URL. A job of a key that has a webhook
 * secret is signed with that secret (the key's holder verifies with it); else with the deployment's `secret`.
 * A key that is gone (revoked) has no URL any more.
 */
export function keyWebhookTargets(keys: KeyStore, secret: string): WebhookTargets {
  return async (job) => {
    const key = job.owner ? await keys.get(job.owner) : null;
    const signing = key?.webhookSecret ?? secret;
    const targets: WebhookTarget[] = [];
    if (job.webhookUrl) targets.push({ url: job.webhookUrl, secret: signing });
    if (key?.webhookUrl && key.webhookUrl !== job.webhookUrl) {
      targets.push({ url: key.webhookUrl, secret: signing });
    }
    return targets;
  };
}

/** `job` with `record` in its deliveries (replacing the same id unless that one is further on), the last 20. */
export function withDelivery(job: Job, record: WebhookDeliveryRecord): Job {
  const deliveries = [...job.webhooks?.deliveries ?? []];
  const at = deliveries.findIndex((d) => d.id === record.id);
  if (at === -1) deliveries.push(record);
  else if (deliveries[at].attempts <= record.attempts) deliveries[at] = record;
  else return job;
  return { ...job, webhooks: { deliveries: deliveries.slice(-MAX_SHOWN_DELIVERIES) } };
}

/** Stores `record` on its job's deliveries; a failure is logged, not thrown (the delivery goes on). */
async function note(store: JobStore, jobId: string, record: WebhookDeliveryRecord): Promise<void> {
  await store.update(jobId, (job) => withDelivery(job, record)).catch((error) => {
    console.error(`Recording webhook delivery ${record.id} on job ${jobId} failed:`, error);
  });
}

/** Options of {@linkcode createWebhookPublisher}. */
export interface WebhookPublisherDeps {
  store: JobStore;
  queue: Queue<WebhookDelivery>;
  targets: WebhookTargets;
  now?: () => Date;
}

/** Creates the publisher that queues one delivery per event and target, and shows each as pending on the job. */
export function createWebhookPublisher(deps: WebhookPublisherDeps): WebhookPublisher {
  const { store, queue, targets, now = () => new Date() } = deps;
  return {
    async publish(before, after) {
      const events = webhookEvents(before, after);
      if (events.length === 0) return;
      const urls = new Set<string>();
      const unique = (await targets(after)).filter(({ url }) => !urls.has(url) && urls.add(url));
      if (unique.length === 0) return;
      const at = now().toISOString();
      const { webhooks: _webhooks, ...data } = publicJob(after);
      const messages: WebhookDelivery[] = events.flatMap((event) =>
        unique.map(({ url }) => ({
          type: "webhook.delivery",
          version: 1,
          id: `msg_${crypto.randomUUID().replaceAll("-", "")}`,
          jobId: after.id,
          event,
          url,
          body: JSON.stringify({ type: event, timestamp: at, data }),
          attempt: 1,
        }))
      );
      const pending = (m: WebhookDelivery): WebhookDeliveryRecord => ({
        id: m.id,
        event: m.event,
        url: m.url,
        attempts: 0,
        status: "pending",
        updatedAt: at,
      });
      await store.update(after.id, (job) => messages.reduce((j, m) => withDelivery(j, pending(m)), job))
        .catch((error) => console.error(`Recording the webhooks of job ${after.id} failed:`, error));
      for (const message of messages) {
        try {
          await queue.publish(message);
        } catch (error) {
          console.error(`Queueing webhook ${message.id} of job ${after.id} failed:`, error);
          const lastError = `Could not be queued: ${error instanceof Error ? error.message : error}`;
          await note(store, after.id, { ...pending(message), status: "failed", lastError });
        }
      }
    },
  };
}

/** Options of {@linkcode startWebhookDelivery}. */
export interface WebhookDeliveryDeps {
  store: JobStore;
  targets: WebhookTargets;
  /** Sends the POSTs (default `fetch`): where an SSRF-guarded client plugs in. Redirects are not followed. */
  fetcher?: Fetcher;
  /** Waits before the 2nd, 3rd... attempts; after the last, the delivery fails (default 5 s ... 1 h). */
  retryDelaysMs?: number[];
  /** How long one attempt may take, in ms (default 10 000). */
  timeoutMs?: number;
  /** The longest a not yet due message is held before it goes back in the queue, in ms (default 30 000). */
  maxHoldMs?: number;
  /** Deliveries in hand at once, waiting ones included (default 64). */
  prefetch?: number;
  now?: () => Date;
}

/** The outcome of one POST. */
interface Attempted {
  ok: boolean;
  statusCode?: number;
  error?: string;
}

async function post(
  fetcher: Fetcher,
  message: WebhookDelivery,
  secret: string,
  timeoutMs: number,
  now: Date,
): Promise<Attempted> {
  const headers = await signWebhook(secret, { id: message.id, body: message.body, now });
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new Error(`no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
  });
  try {
    const request = new Request(message.url, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json", "user-agent": "vmp3-webhooks/1" },
      body: message.body,
      redirect: "manual",
      signal: abort.signal,
    });
    const response = await Promise.race([fetcher(request), timedOut]);
    await response.body?.cancel().catch(() => {});
    const ok = response.status >= 200 && response.status < 300;
    return { ok, statusCode: response.status, error: ok ? undefined : `answered ${response.status}` };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Delivers the webhooks of `queue`: each due message is POSTed to its URL with the secret its job's targets give
 * now; a 2xx answer is delivered, anything else (or no answer in time) is tried again after the next delay, until
 * the last attempt fails. Every attempt shows on the job's `webhooks.deliveries`.
 */
export async function startWebhookDelivery(
  queue: Queue<WebhookDelivery>,
  deps: WebhookDeliveryDeps,
): Promise<Subscription> {
  const {
    store,
    targets,
    fetcher = (request: Request) => fetch(request),
    retryDelaysMs = DEFAULT_WEBHOOK_RETRY_DELAYS_MS,
    timeoutMs = 10_000,
    maxHoldMs = 30_000,
    now = () => new Date(),
  } = deps;
  const closing = new AbortController();
  const hold = (ms: number) =>
    new Promise<void>((resolve) => {
      if (closing.signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        closing.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      closing.signal.addEventListener("abort", done);
    });

  const subscription = await queue.consume(async (message) => {
    const due = message.notBefore ? Date.parse(message.notBefore) : 0;
    if (due > now().getTime()) {
      await hold(Math.min(due - now().getTime(), maxHoldMs));
      if (due > now().getTime()) {
        await queue.publish(message); // back in line; acked only once the copy is safe
        return "ack";
      }
    }
    const job = await store.get(message.jobId);
    if (!job) return "ack"; // the job was deleted: nothing to report on, nowhere to show it
    const base = { id: message.id, event: message.event, url: message.url, attempts: message.attempt };
    const target = (await targets(job)).find(({ url }) => url === message.url);
    if (!target) {
      const updatedAt = now().toISOString();
      const record = { ...base, attempts: message.attempt - 1, status: "failed" as const, updatedAt };
      await note(store, job.id, { ...record, lastError: "The URL is no longer a webhook target of the job" });
      return "ack";
    }
    const result = await post(fetcher, message, target.secret, timeoutMs, now());
    const at = now();
    const outcome = {
      lastStatusCode: result.statusCode,
      lastError: result.error,
      updatedAt: at.toISOString(),
    };
    if (result.ok) {
      await note(store, job.id, { ...base, status: "delivered", ...outcome, lastError: undefined });
      return "ack";
    }
    const delay = retryDelaysMs[message.attempt - 1];
    if (delay === undefined) {
      await note(store, job.id, { ...base, status: "failed", ...outcome });
      return "ack";
    }
    const nextAttemptAt = new Date(at.getTime() + delay).toISOString();
    await note(store, job.id, { ...base, status: "pending", ...outcome, nextAttemptAt });
    await queue.publish({ ...message, attempt: message.attempt + 1, notBefore: nextAttemptAt });
    return "ack";
  }, { prefetch: deps.prefetch ?? 64 });

  return {
    async close() {
      closing.abort(); // messages held for later go back in the queue at once
      await subscription.close();
    },
  };
}

/** The deployment's webhook secret: `configured`, or a new one when unset (with a warning that it will change). */
export function deploymentWebhookSecret(configured: string | undefined): string {
  if (configured) return configured;
  console.warn(
    "WEBHOOK_SECRET is not set: webhooks are signed with a secret made for this run, and their signatures will " +
      "not verify after a restart. Set WEBHOOK_SECRET (whsec_ + base64) to keep one.",
  );
  return generateWebhookSecret();
}
