/**
 * @module
 * {@linkcode Broadcast}s on RabbitMQ: a durable fanout exchange, and for each subscriber its own exclusive,
 * auto-deleted queue bound to it. That queue lives as long as the subscriber's channel: the broker's connection
 * manager (rabbitmq_queue.ts) attaches the subscriber again to each new connection, which declares a new queue and
 * binds it, and a channel lost on a live connection is reopened with backoff. Messages are transient and published
 * with confirms, not `mandatory` (nobody listening is not an error), and consumed without acks: a notice that is
 * lost with a connection is not worth delivering later.
 */
import { Buffer } from "node:buffer";
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib";
import type { z } from "zod";
import type { Broadcast } from "@vmp3/shared";
import type { Attachable, Broker } from "./rabbitmq_queue.ts";

const noop = () => {};

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Declares the fanout exchange `name` on a channel of its own (a 406 there must not break another channel). */
async function declareExchange(conn: ChannelModel, name: string): Promise<void> {
  const channel = await conn.createChannel();
  channel.on("error", noop); // a failed declaration also rejects below, with the same error
  try {
    await channel.assertExchange(name, "fanout", { durable: true });
  } catch (error) {
    throw Object.assign(
      new Error(`Declaring exchange "${name}" failed: ${messageOf(error)}`, { cause: error }),
      {
        code: (error as { code?: unknown })?.code,
      },
    );
  } finally {
    channel.close().catch(noop);
  }
}

/**
 * The broadcast on the fanout exchange `name` through `broker`'s connection; `schema` checks messages on both
 * ends. Made by `RabbitBroker.broadcast`.
 */
export function createRabbitBroadcast<T>(broker: Broker, name: string, schema: z.ZodType<T>): Broadcast<T> {
  const declared = new WeakMap<ChannelModel, Promise<void>>();
  const declare = (conn: ChannelModel): Promise<void> => {
    let done = declared.get(conn);
    if (!done) {
      done = declareExchange(conn, name);
      declared.set(conn, done);
      done.catch(() => declared.delete(conn));
    }
    return done;
  };
  return {
    publish: async (message) => {
      const valid = schema.parse(message);
      await broker.publishTo(
        { name, exchange: name, routingKey: "", declare, durable: false },
        Buffer.from(JSON.stringify(valid)),
      );
    },
    subscribe: async (handler) => {
      if (broker.closed) throw new Error("The RabbitMQ client is closed");
      const subscriber = new Subscriber(broker, name, schema, handler);
      broker.consumers.add(subscriber);
      const deadline = Date.now() + broker.timeoutMs;
      for (;;) {
        try {
          await subscriber.attach(await broker.connection(deadline));
          return { close: () => subscriber.close() };
        } catch (error) {
          const refused = (error as { code?: unknown })?.code === 406; // the exchange exists with another type
          if (Date.now() >= deadline || refused || broker.closed) {
            await subscriber.close();
            throw new Error(`Subscribing to "${name}" failed: ${messageOf(error)}`, { cause: error });
          }
          await broker.sleep(100);
        }
      }
    },
  };
}

/** One subscriber: a channel, and on it an exclusive queue bound to the exchange, consumed without acks. */
class Subscriber<T> implements Attachable {
  readonly #broker: Broker;
  readonly #name: string;
  readonly #schema: z.ZodType<T>;
  readonly #handler: (message: T) => void | Promise<void>;
  #channel: Channel | null = null;
  #attaching: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  /** The handler's run over the messages received so far, one after another; never rejects. */
  #handling: Promise<void> = Promise.resolve();

  constructor(
    broker: Broker,
    name: string,
    schema: z.ZodType<T>,
    handler: (message: T) => void | Promise<void>,
  ) {
    this.#broker = broker;
    this.#name = name;
    this.#schema = schema;
    this.#handler = handler;
  }

  attach(conn: ChannelModel): Promise<void> {
    if (this.#closing || this.#channel) return Promise.resolve();
    if (this.#attaching) return this.#attaching;
    const attaching = this.#open(conn)
      .then(() => {
        this.#failures = 0;
      }, (error) => {
        this.#broker.report(error, `subscribing to "${this.#name}" failed`);
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
    const name = this.#name;
    const channel = await conn.createChannel();
    channel.on("error", (error) => this.#broker.report(error, `subscriber channel of "${name}"`));
    channel.on("close", () => this.#onChannelClosed(channel));
    try {
      await channel.assertExchange(name, "fanout", { durable: true });
      // Exclusive: deleted with the connection; auto-delete: deleted when this channel's consumer goes.
      const { queue } = await channel.assertQueue(`${name}.${crypto.randomUUID()}`, {
        exclusive: true,
        autoDelete: true,
        durable: false,
      });
      await channel.bindQueue(queue, name, "");
      await channel.consume(queue, (message) => this.#onMessage(channel, message), {
        noAck: true,
        exclusive: true,
      });
      if (this.#closing) {
        await channel.close().catch(noop);
        return;
      }
      this.#channel = channel;
    } catch (error) {
      channel.close().catch(noop);
      throw error;
    }
  }

  #onChannelClosed(channel: Channel): void {
    if (this.#channel !== channel) return;
    this.#channel = null;
    // A lost connection is rebuilt by the broker, which then attaches this subscriber again; a channel closed on a
    // live connection is reopened here.
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

  #onMessage(channel: Channel, delivery: ConsumeMessage | null): void {
    if (delivery === null) {
      // The broker cancelled the consumer (its queue was deleted): subscribe again with a new queue.
      this.#broker.report(new Error(`the broker cancelled the subscriber of "${this.#name}"`), "cancelled");
      channel.close().catch(noop);
      return;
    }
    if (this.#closing) return;
    let message: T;
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(delivery.content);
      const parsed = this.#schema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(parsed.error.message);
      message = parsed.data;
    } catch (error) {
      this.#broker.report(
        new Error(`invalid message on "${this.#name}" dropped: ${messageOf(error)}`, { cause: error }),
        "invalid message",
      );
      return;
    }
    this.#handling = this.#handling.then(async () => {
      try {
        await this.#handler(message);
      } catch (error) {
        this.#broker.report(error, `handler of "${this.#name}" failed`);
      }
    });
  }

  /** Stops receiving (its queue goes with its channel) and waits for the handler to finish what it was given. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#broker.consumers.delete(this);
      await this.#attaching?.catch(noop);
      const channel = this.#channel;
      this.#channel = null;
      if (channel) await channel.close().catch(noop);
      await this.#handling;
    })();
    return this.#closing;
  }
}
