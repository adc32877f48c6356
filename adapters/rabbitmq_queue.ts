/**
 * @module
 * Durable {@linkcode Queue}s on RabbitMQ, following the broker's reliability guide: quorum queues with a delivery
 * limit and a dead-letter queue, persistent messages published with confirms and `mandatory`, manual acks, small
 * prefetch. amqplib does not recover by itself, so one connection manager per broker reconnects with backoff and
 * rebuilds the publishing channel and every running consumer (and broadcast subscriber: rabbitmq_broadcast.ts).
 */
import { Buffer } from "node:buffer";
import {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  connect,
  type ConsumeMessage,
  type Message,
} from "amqplib";
import type { z } from "zod";
import type { Broadcast, DeliveryInfo, Outcome, Queue } from "@vmp3/shared";
import { createRabbitBroadcast } from "./rabbitmq_broadcast.ts";

/** Options of {@linkcode createRabbitBroker}. */
export interface RabbitBrokerOptions {
  /** The connection's name as the broker shows it (default "vmp3"). */
  name?: string;
  /** Told about lost connections, failed attempts, broken channels, failed handlers and invalid messages. */
  onError?: (error: unknown, context: string) => void;
  /** The first reconnect delay, in ms (default 100); each failed attempt doubles it, with jitter. */
  reconnectInitialMs?: number;
  /** The longest reconnect delay, in ms (default 5000). */
  reconnectMaxMs?: number;
  /** How long `publish()` and `consume()` may wait for the broker in all, reconnects included, in ms (default 10 000). */
  timeoutMs?: number;
}

/** Options of {@linkcode RabbitBroker.queue}. */
export interface RabbitQueueOptions {
  /** Deliveries after which a message goes to the dead-letter queue `<name>.dead` (default 5). */
  deliveryLimit?: number;
  /**
   * This is another queue's dead-letter queue (`<name>.dead`), read to act on what ended there: it is declared as
   * that queue declares it, with no delivery limit and no dead-letter queue of its own.
   */
  deadLetterQueue?: boolean;
  /**
   * Never run more than `prefetch` handlers at once, even across a lost channel: when a channel dies (the
   * connection was lost, or the broker took back a message held past its consumer timeout), its handlers still
   * running go on, and a new channel is opened only once they have ended, else the broker's redeliveries would
   * run beside them. For consumers whose handlers are heavy (a Convert worker: CONVERT_CONCURRENCY conversions).
   */
  strictPrefetch?: boolean;
}

/** One connection to RabbitMQ, shared by all the queues made from it. */
export interface RabbitBroker {
  /** A durable quorum queue named `name` whose messages `schema` checks on both ends. */
  queue<T>(name: string, schema: z.ZodType<T>, options?: RabbitQueueOptions): Queue<T>;
  /**
   * A durable fanout exchange named `name`: each subscriber has its own exclusive, auto-deleted queue bound to it
   * (declared again whenever its channel is rebuilt), so every subscriber receives each message published while
   * it is subscribed. Messages are transient and published with confirms; `schema` checks them on both ends.
   */
  broadcast<T>(name: string, schema: z.ZodType<T>): Broadcast<T>;
  /** Stops every consumer (waiting for their handlers) and closes the connection. */
  close(): Promise<void>;
}

/** A publish the broker refused for good (nack, or no queue to route to): trying again will not help. */
export class PublishRefusedError extends Error {
  override name = "PublishRefusedError";
}

const noop = () => {};

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether `error` is the broker saying a declaration does not match the existing queue (406). */
function isPreconditionFailed(error: unknown): boolean {
  return (error as { code?: unknown })?.code === 406 || /PRECONDITION.FAILED/.test(messageOf(error));
}

/** Creates a broker client for `url`; nothing connects until a queue is first used. */
export function createRabbitBroker(url: string, options: RabbitBrokerOptions = {}): RabbitBroker {
  const broker = new Broker(url, options);
  return {
    queue: (name, schema, queueOptions) => broker.queue(name, schema, queueOptions),
    broadcast: (name, schema) => createRabbitBroadcast(broker, name, schema),
    close: () => broker.close(),
  };
}

/** What the broker attaches to every new connection: a queue's consumer, or a broadcast's subscriber. */
export interface Attachable {
  /** Opens its channel on `conn` and starts consuming, unless that is done or under way. */
  attach(conn: ChannelModel): Promise<void>;
  /** Stops for good. */
  close(): Promise<void>;
}

/** Where one message goes, and how (see {@linkcode Broker.publishTo}). */
export interface PublishTarget {
  /** Named in errors. */
  name: string;
  exchange: string;
  routingKey: string;
  /** Declares what the message goes to, on `conn` (once per connection). */
  declare(conn: ChannelModel): Promise<void>;
  /**
   * A task: persistent and mandatory, refused when no queue takes it. Otherwise a notice: transient, and
   * dropped without error when nobody listens.
   */
  durable: boolean;
}

interface Publisher {
  channel: ConfirmChannel;
  /** Ids of messages the broker returned as unroutable, until their confirm arrives. */
  returned: Set<string>;
}

/** The connection manager behind a {@linkcode RabbitBroker}; rabbitmq_broadcast.ts builds on it. */
export class Broker {
  readonly #url: string;
  readonly #name: string;
  readonly #onError: (error: unknown, context: string) => void;
  readonly #initialDelay: number;
  readonly #maxDelay: number;
  readonly timeoutMs: number;

  #conn: ChannelModel | null = null;
  #connecting: Promise<ChannelModel> | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  readonly #wake = new AbortController();
  readonly consumers = new Set<Attachable>();
  /** The queues declared on each connection (declarations are redone after a reconnect). */
  readonly #declared = new WeakMap<ChannelModel, Map<string, Promise<void>>>();
  #publisher: { conn: ChannelModel; ready: Promise<Publisher> } | null = null;

  constructor(url: string, options: RabbitBrokerOptions) {
    this.#url = url;
    this.#name = options.name ?? "vmp3";
    this.#onError = options.onError ??
      ((error, context) => console.error(`rabbitmq ${this.#name}: ${context}: ${messageOf(error)}`));
    this.#initialDelay = options.reconnectInitialMs ?? 100;
    this.#maxDelay = options.reconnectMaxMs ?? 5000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The live connection, or null while there is none. */
  get current(): ChannelModel | null {
    return this.#conn;
  }

  report(error: unknown, context: string): void {
    try {
      this.#onError(error, context);
    } catch {
      // A failing logger must not break the connection manager.
    }
  }

  /** An exponential delay with jitter for the `attempt`-th retry (0-based). */
  backoff(attempt: number): number {
    const cap = Math.min(this.#maxDelay, this.#initialDelay * 2 ** Math.min(attempt, 20));
    return cap / 2 + Math.random() * (cap / 2);
  }

  /** Waits `ms`, or less if the broker closes. */
  sleep(ms: number): Promise<void> {
    const signal = this.#wake.signal;
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** The live connection, connecting (and waiting until `deadline`) if there is none. */
  async connection(deadline: number): Promise<ChannelModel> {
    if (this.#closed) throw new Error("The RabbitMQ client is closed");
    if (this.#conn) return this.#conn;
    const connecting = this.#startConnecting();
    const left = deadline - Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        connecting,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`RabbitMQ is unreachable (no connection within ${this.timeoutMs} ms)`)),
            Math.max(0, left),
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  #startConnecting(): Promise<ChannelModel> {
    if (!this.#connecting) {
      const connecting = this.#connectLoop().finally(() => {
        if (this.#connecting === connecting) this.#connecting = null;
      });
      connecting.catch(noop);
      this.#connecting = connecting;
    }
    return this.#connecting;
  }

  async #connectLoop(): Promise<ChannelModel> {
    for (let attempt = 0;; attempt++) {
      if (this.#closed) throw new Error("The RabbitMQ client is closed");
      let conn: ChannelModel;
      try {
        conn = await connect(this.#url, { clientProperties: { connection_name: this.#name }, timeout: 5000 });
      } catch (error) {
        if (this.#closed) throw new Error("The RabbitMQ client is closed");
        this.report(error, `connecting failed (attempt ${attempt + 1})`);
        await this.sleep(this.backoff(attempt));
        continue;
      }
      if (this.#closed) {
        conn.close().catch(noop);
        throw new Error("The RabbitMQ client is closed");
      }
      conn.on("error", (error) => this.report(error, "connection error"));
      conn.on("close", () => this.#onConnectionClosed(conn));
      conn.on(
        "blocked",
        (reason) => this.report(new Error(`the broker blocks publishing: ${reason}`), "blocked"),
      );
      this.#conn = conn;
      for (const consumer of this.consumers) consumer.attach(conn).catch(noop);
      return conn;
    }
  }

  #onConnectionClosed(conn: ChannelModel): void {
    if (this.#conn !== conn) return;
    this.#conn = null;
    if (this.#publisher?.conn === conn) this.#publisher = null;
    if (this.#closed) return;
    this.report(new Error("connection lost; reconnecting"), "connection closed");
    // Reconnect at once (with backoff) so consumers come back without waiting for a publish.
    this.#startConnecting();
  }

  /** Declares `name` and its dead-letter queue once per connection. */
  declare(conn: ChannelModel, name: string, deliveryLimit: number | null): Promise<void> {
    let declared = this.#declared.get(conn);
    if (!declared) {
      declared = new Map();
      this.#declared.set(conn, declared);
    }
    const key = JSON.stringify([name, deliveryLimit]);
    let done = declared.get(key);
    if (!done) {
      const map = declared;
      done = this.#declare(conn, name, deliveryLimit);
      map.set(key, done);
      done.catch(() => map.delete(key));
    }
    return done;
  }

  /** Forgets that `name` was declared on `conn` (say, after it was deleted), so the next use declares it again. */
  forget(conn: ChannelModel, name: string): void {
    const declared = this.#declared.get(conn);
    if (!declared) return;
    for (const key of declared.keys()) if (JSON.parse(key)[0] === name) declared.delete(key);
  }

  async #declare(conn: ChannelModel, name: string, deliveryLimit: number | null): Promise<void> {
    const channel = await conn.createChannel();
    channel.on("error", noop); // a failed declaration also rejects below, with the same error
    try {
      if (deliveryLimit === null) {
        await channel.assertQueue(name, { durable: true, arguments: { "x-queue-type": "quorum" } });
        return;
      }
      await channel.assertQueue(`${name}.dead`, { durable: true, arguments: { "x-queue-type": "quorum" } });
      await channel.assertQueue(name, {
        durable: true,
        arguments: {
          "x-queue-type": "quorum",
          "x-delivery-limit": deliveryLimit,
          "x-dead-letter-exchange": "",
          "x-dead-letter-routing-key": `${name}.dead`,
        },
      });
    } catch (error) {
      throw Object.assign(
        new Error(`Declaring queue "${name}" failed: ${messageOf(error)}`, { cause: error }),
        {
          code: (error as { code?: unknown })?.code,
        },
      );
    } finally {
      channel.close().catch(noop);
    }
  }

  #publisherFor(conn: ChannelModel): Promise<Publisher> {
    if (this.#publisher?.conn === conn) return this.#publisher.ready;
    const ready: Promise<Publisher> = (async () => {
      const channel = await conn.createConfirmChannel();
      const returned = new Set<string>();
      channel.on("error", (error) => this.report(error, "publishing channel error"));
      channel.on("close", () => {
        if (this.#publisher?.ready === ready) this.#publisher = null;
      });
      channel.on("return", (message: Message) => {
        const id = message.properties.messageId;
        if (id !== undefined) returned.add(String(id));
        this.forget(conn, message.fields.routingKey);
      });
      return { channel, returned };
    })();
    this.#publisher = { conn, ready };
    ready.catch(() => {
      if (this.#publisher?.ready === ready) this.#publisher = null;
    });
    return ready;
  }

  /** Publishes `body` to `name` and resolves once the broker confirms it, reconnecting as needed until the deadline. */
  publish(name: string, deliveryLimit: number | null, body: Buffer): Promise<void> {
    return this.publishTo({
      name,
      exchange: "",
      routingKey: name,
      declare: (conn) => this.declare(conn, name, deliveryLimit),
      durable: true,
    }, body);
  }

  /** Publishes `body` to `target` and resolves once the broker confirms it, reconnecting as needed until the deadline. */
  async publishTo(target: PublishTarget, body: Buffer): Promise<void> {
    const { name } = target;
    const deadline = Date.now() + this.timeoutMs;
    let lastError: unknown;
    for (;;) {
      if (this.#closed) throw new Error("The RabbitMQ client is closed");
      try {
        const conn = await this.connection(deadline);
        await target.declare(conn);
        const publisher = await this.#publisherFor(conn);
        await this.#send(publisher, target, body, deadline);
        return;
      } catch (error) {
        if (error instanceof PublishRefusedError || isPreconditionFailed(error)) throw error;
        lastError = error;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Publishing to "${name}" failed: RabbitMQ did not confirm within ${this.timeoutMs} ms (${
            messageOf(lastError)
          })`,
          { cause: lastError },
        );
      }
      await this.sleep(Math.min(left, 50 + Math.random() * 100));
    }
  }

  #send(
    { channel, returned }: Publisher,
    { name, exchange, routingKey, durable }: PublishTarget,
    body: Buffer,
    deadline: number,
  ): Promise<void> {
    const messageId = crypto.randomUUID();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("no confirm from the broker in time")),
        Math.max(0, deadline - Date.now()),
      );
      try {
        channel.publish(exchange, routingKey, body, {
          persistent: durable,
          contentType: "application/json",
          mandatory: durable,
          messageId,
          timestamp: Math.floor(Date.now() / 1000),
        }, (error) => {
          clearTimeout(timer);
          const wasReturned = returned.delete(messageId);
          if (error) {
            if (/nack/i.test(messageOf(error))) {
              reject(new PublishRefusedError(`RabbitMQ refused the message to "${name}" (nack)`));
            } else {
              reject(error); // the channel closed before the confirm: publish again
            }
          } else if (wasReturned) {
            reject(new PublishRefusedError(`RabbitMQ returned the message to "${name}" as unroutable`));
          } else {
            resolve();
          }
        });
      } catch (error) {
        clearTimeout(timer);
        reject(error);
      }
    });
  }

  queue<T>(name: string, schema: z.ZodType<T>, options: RabbitQueueOptions = {}): Queue<T> {
    const deliveryLimit = options.deadLetterQueue ? null : options.deliveryLimit ?? 5;
    if (deliveryLimit !== null && (!Number.isInteger(deliveryLimit) || deliveryLimit < 1)) {
      throw new RangeError(`deliveryLimit must be a positive integer, not ${deliveryLimit}`);
    }
    return {
      publish: async (message) => {
        const valid = schema.parse(message);
        await this.publish(name, deliveryLimit, Buffer.from(JSON.stringify(valid)));
      },
      consume: async (handler, consumeOptions = {}) => {
        const prefetch = consumeOptions.prefetch ?? 1;
        if (!Number.isInteger(prefetch) || prefetch < 1) {
          throw new RangeError(`prefetch must be a positive integer, not ${prefetch}`);
        }
        if (this.#closed) throw new Error("The RabbitMQ client is closed");
        const consumer = new Consumer<T>(this, {
          name,
          deliveryLimit,
          schema,
          handler,
          prefetch,
          strictPrefetch: options.strictPrefetch ?? false,
        });
        this.consumers.add(consumer);
        const deadline = Date.now() + this.timeoutMs;
        for (;;) {
          try {
            await consumer.attach(await this.connection(deadline));
            return { close: () => consumer.close() };
          } catch (error) {
            if (Date.now() >= deadline || isPreconditionFailed(error) || this.#closed) {
              await consumer.close();
              throw new Error(`Consuming from "${name}" failed: ${messageOf(error)}`, { cause: error });
            }
            await this.sleep(100);
          }
        }
      },
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#wake.abort();
      await Promise.all([...this.consumers].map((consumer) => consumer.close()));
      const conn = this.#conn;
      this.#conn = null;
      this.#publisher = null;
      if (conn) await conn.close().catch(noop);
      await this.#connecting?.catch(noop);
    })();
    return this.#closing;
  }
}

interface ConsumerSpec<T> {
  name: string;
  deliveryLimit: number | null;
  schema: z.ZodType<T>;
  handler: (message: T, info: DeliveryInfo) => Promise<Outcome>;
  prefetch: number;
  strictPrefetch: boolean;
}

/** Channels that have closed: a delivery tag from one of them means nothing on any other channel. */
const deadChannels = new WeakSet<Channel>();

class Consumer<T> {
  readonly #broker: Broker;
  readonly #spec: ConsumerSpec<T>;
  #channel: Channel | null = null;
  #tag: string | null = null;
  #attaching: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  readonly #inFlight = new Set<Promise<void>>();
  /** How many handlers run for each channel. */
  readonly #running = new Map<Channel, number>();
  /** Handlers still running whose channel has died (see `strictPrefetch`). */
  #orphans = 0;

  constructor(broker: Broker, spec: ConsumerSpec<T>) {
    this.#broker = broker;
    this.#spec = spec;
  }

  /** Opens a channel on `conn` and starts consuming, unless that is done or under way. */
  attach(conn: ChannelModel): Promise<void> {
    if (this.#closing || this.#channel) return Promise.resolve();
    // Attached again when the last of them ends.
    if (this.#spec.strictPrefetch && this.#orphans > 0) return Promise.resolve();
    if (this.#attaching) return this.#attaching;
    const attaching = this.#open(conn)
      .then(() => {
        this.#failures = 0;
      }, (error) => {
        this.#broker.report(error, `starting the consumer of "${this.#spec.name}" failed`);
        this.#scheduleRetry();
        throw error;
      })
      .finally(() => {
        if (this.#attaching === attaching) this.#attaching = null;
      });
    attaching.catch(noop);
    this.#attaching = attaching;
    return attaching;
  }

  async #open(conn: ChannelModel): Promise<void> {
    const { name, prefetch } = this.#spec;
    const channel = await conn.createChannel();
    channel.on("error", (error) => this.#broker.report(error, `consumer channel of "${name}"`));
    channel.on("close", () => this.#onChannelClosed(channel));
    try {
      await this.#broker.declare(conn, name, this.#spec.deliveryLimit);
      await channel.prefetch(prefetch);
      const { consumerTag } = await channel.consume(name, (message) => this.#onMessage(channel, message), {
        noAck: false,
      });
      if (this.#closing) {
        await channel.close().catch(noop);
        return;
      }
      this.#channel = channel;
      this.#tag = consumerTag;
    } catch (error) {
      channel.close().catch(noop);
      throw error;
    }
  }

  #onChannelClosed(channel: Channel): void {
    deadChannels.add(channel);
    this.#orphans += this.#running.get(channel) ?? 0;
    if (this.#channel !== channel) return;
    this.#channel = null;
    this.#tag = null;
    // A lost connection is rebuilt by the broker, which then re-attaches this consumer; a channel the broker
    // closed on a live connection (say, an ack timeout) is reopened here.
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#closing || this.#retryTimer !== undefined || this.#broker.closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      const conn = this.#broker.current;
      if (conn) this.attach(conn).catch(noop);
    }, this.#broker.backoff(this.#failures++));
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (the queue was deleted): declare it again and resubscribe.
      this.#broker.report(
        new Error(`the broker cancelled the consumer of "${this.#spec.name}"`),
        "cancelled",
      );
      const conn = this.#broker.current;
      if (conn) this.#broker.forget(conn, this.#spec.name);
      channel.close().catch(noop);
      return;
    }
    // Closing: leave it unacknowledged; the broker takes it back when the channel closes.
    if (this.#closing) return;
    const task = this.#handle(channel, message);
    this.#inFlight.add(task);
    this.#running.set(channel, (this.#running.get(channel) ?? 0) + 1);
    task.finally(() => {
      this.#inFlight.delete(task);
      const left = (this.#running.get(channel) ?? 1) - 1;
      if (left > 0) this.#running.set(channel, left);
      else this.#running.delete(channel);
      if (!deadChannels.has(channel)) return;
      // An orphan has ended: with strictPrefetch, the last one lets the consumer attach again.
      if (--this.#orphans === 0 && !this.#closing && !this.#channel) {
        const conn = this.#broker.current;
        if (conn) this.attach(conn).catch(noop);
      }
    });
  }

  async #handle(channel: Channel, delivery: ConsumeMessage): Promise<void> {
    const { name, schema, handler } = this.#spec;
    let message: T;
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(delivery.content);
      const parsed = schema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(parsed.error.message);
      message = parsed.data;
    } catch (error) {
      this.#broker.report(
        new Error(`invalid message on "${name}" moved to "${name}.dead": ${messageOf(error)}`, {
          cause: error,
        }),
        "invalid message",
      );
      this.#settle(channel, delivery, "reject");
      return;
    }
    let outcome: Outcome;
    try {
      outcome = await handler(message, { redelivered: delivery.fields.redelivered });
      if (outcome !== "ack" && outcome !== "retry" && outcome !== "reject") {
        this.#broker.report(new Error(`handler returned ${String(outcome)}; treated as "retry"`), name);
        outcome = "retry";
      }
    } catch (error) {
      this.#broker.report(error, `handler of "${name}" failed; the message will be delivered again`);
      outcome = "retry";
    }
    this.#settle(channel, delivery, outcome);
  }

  #settle(channel: Channel, delivery: ConsumeMessage, outcome: Outcome): void {
    // Its channel died meanwhile: the broker has already taken the message back and will deliver it again.
    if (deadChannels.has(channel)) return;
    try {
      if (outcome === "ack") channel.ack(delivery);
      else channel.nack(delivery, false, outcome === "retry");
    } catch (error) {
      this.#broker.report(error, `settling a message of "${this.#spec.name}" failed`);
    }
  }

  /** Stops consuming, waits for the handlers in progress, settles their messages and closes the channel. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#broker.consumers.delete(this);
      await this.#attaching?.catch(noop);
      const channel = this.#channel;
      const tag = this.#tag;
      if (channel && tag && !deadChannels.has(channel)) await channel.cancel(tag).catch(noop);
      while (this.#inFlight.size > 0) await Promise.all([...this.#inFlight]);
      this.#channel = null;
      this.#tag = null;
      if (channel && !deadChannels.has(channel)) await channel.close().catch(noop);
    })();
    return this.#closing;
  }
}
