/**
 * A durable queue on Deno KV, for the embedded mode: messages survive a restart, a message taken by a consumer
 * that dies comes back when its lease runs out, "retry" backs off, and "reject" (or too many deliveries) moves it to the queue `<name>.dead`.
 */
import type { z } from "zod";
import type { DeliveryInfo, Outcome, Queue, Subscription } from "@vmp3/shared";

interface Envelope {
  body: unknown;
  attempts: number;
  availableAt: number;
  leaseUntil: number;
}

/** Settings of a KV queue. */
export interface KvQueueOptions {
  /** How long a taken message stays invisible to other consumers without a renewal, in ms. */
  leaseMs?: number;
  /** How often an idle consumer looks for work, in ms. */
  pollMs?: number;
  /** How many deliveries before a message is dead-lettered. */
  deliveryLimit?: number;
  /** Backoff before the n-th redelivery after "retry", in ms. */
  backoffMs?: (attempt: number) => number;
}

/** A Queue on Deno KV, plus a look at what was dead-lettered. */
export interface KvQueue<T> extends Queue<T> {
  /** The bodies of dead-lettered messages. */
  deadLetters(): Promise<unknown[]>;
}

let sequence = 0;
function nextId(): string {
  sequence = (sequence + 1) % 1e6;
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `${Date.now().toString().padStart(15, "0")}-${sequence.toString().padStart(6, "0")}-${random}`;
}

/** Creates a durable queue named `name` in `kv`; messages are checked with `schema` when consumed. */
export function createKvQueue<T>(
  kv: Deno.Kv,
  name: string,
  schema: z.ZodType<T>,
  options: KvQueueOptions = {},
): KvQueue<T> {
  const leaseMs = options.leaseMs ?? 10_000;
  const pollMs = options.pollMs ?? 200;
  const deliveryLimit = options.deliveryLimit ?? 5;
  const backoffMs = options.backoffMs ?? ((attempt) => Math.min(30_000, 500 * 2 ** (attempt - 1)));
  const prefix: Deno.KvKey = ["queue", name];
  // Dead letters form the queue `<name>.dead`, which createKvQueue can read like any other (as RabbitMQ's can).
  const deadPrefix: Deno.KvKey = ["queue", `${name}.dead`];
  const wakers = new Set<() => void>();

  async function settle(entry: Deno.KvEntry<Envelope>, outcome: Outcome | "invalid"): Promise<void> {
    const envelope = entry.value;
    const op = kv.atomic().check(entry);
    if (outcome === "ack") {
      op.delete(entry.key);
    } else if (outcome === "retry" && envelope.attempts < deliveryLimit) {
      op.set(entry.key, {
        ...envelope,
        leaseUntil: 0,
        availableAt: Date.now() + backoffMs(envelope.attempts),
      });
    } else {
      op.delete(entry.key).set([...deadPrefix, entry.key.at(-1)!], {
        body: envelope.body,
        attempts: 0,
        availableAt: 0,
        leaseUntil: 0,
      });
    }
    // A failed check means our lease ran out and someone else holds the message now: theirs to settle.
    await op.commit();
  }

  return {
    async publish(message) {
      const envelope: Envelope = { body: message, attempts: 0, availableAt: 0, leaseUntil: 0 };
      const result = await kv.atomic().set([...prefix, nextId()], envelope).commit();
      if (!result.ok) throw new Error(`Could not enqueue a message on "${name}"`);
      for (const wake of wakers) wake();
    },

    consume(handler, consumeOptions = {}): Promise<Subscription> {
      const prefetch = consumeOptions.prefetch ?? 1;
      const inFlight = new Set<Promise<void>>();
      let closed = false;
      let wake = () => {};
      const waker = () => wake();
      wakers.add(waker);

      async function take(): Promise<Deno.KvEntry<Envelope> | null> {
        const now = Date.now();
        for await (const entry of kv.list<Envelope>({ prefix })) {
          const envelope = entry.value;
          if (envelope.availableAt > now || envelope.leaseUntil > now) continue;
          const leased = { ...envelope, attempts: envelope.attempts + 1, leaseUntil: now + leaseMs };
          const result = await kv.atomic().check(entry).set(entry.key, leased).commit();
          if (result.ok) return { ...entry, value: leased, versionstamp: result.versionstamp };
        }
        return null;
      }

      async function deliver(taken: Deno.KvEntry<Envelope>): Promise<void> {
        let entry = taken;
        let renewing: Promise<void> = Promise.resolve();
        const renew = setInterval(() => {
          renewing = renewing.then(async () => {
            const renewed = { ...entry.value, leaseUntil: Date.now() + leaseMs };
            const result = await kv.atomic().check(entry).set(entry.key, renewed).commit().catch(() => null);
            if (result?.ok) entry = { ...entry, value: renewed, versionstamp: result.versionstamp };
          });
        }, Math.max(50, leaseMs / 3));
        try {
          const parsed = schema.safeParse(entry.value.body);
          if (!parsed.success) {
            console.error(`Dead-lettering an invalid message on "${name}": ${parsed.error.message}`);
            clearInterval(renew);
            await renewing;
            await settle(entry, "invalid");
            return;
          }
          const info: DeliveryInfo = { redelivered: entry.value.attempts > 1 };
          let outcome: Outcome;
          try {
            outcome = await handler(parsed.data, info);
          } catch (error) {
            console.error(`A consumer of "${name}" failed; the message will be retried:`, error);
            outcome = "retry";
          }
          clearInterval(renew);
          await renewing;
          await settle(entry, outcome);
        } finally {
          clearInterval(renew);
        }
      }

      const loop = (async () => {
        while (!closed) {
          if (inFlight.size < prefetch) {
            const entry = await take().catch((error) => {
              if (!closed) console.error(`Reading queue "${name}" failed:`, error);
              return null;
            });
            if (entry) {
              const job = deliver(entry).catch((error) =>
                console.error(`Settling on "${name}" failed:`, error)
              )
                .finally(() => {
                  inFlight.delete(job);
                  wake();
                });
              inFlight.add(job);
              continue;
            }
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, pollMs);
            function done() {
              clearTimeout(timer);
              wake = () => {};
              resolve();
            }
            wake = done;
          });
        }
      })();

      return Promise.resolve({
        async close() {
          closed = true;
          wakers.delete(waker);
          wake();
          await loop;
          await Promise.all(inFlight);
        },
      });
    },

    async deadLetters() {
      const bodies: unknown[] = [];
      for await (const entry of kv.list<Envelope>({ prefix: deadPrefix })) bodies.push(entry.value.body);
      return bodies;
    },
  };
}
