/**
 * Tests of the RabbitMQ queue against a real broker. Run through `bash scripts/test_servers.sh deno test -A ...`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createServer } from "node:net";
import { type Channel, connect } from "amqplib";
import { z } from "zod";
import type { DeliveryInfo, Outcome } from "@vmp3/shared";
import { createRabbitBroker, type RabbitBroker, type RabbitBrokerOptions } from "./rabbitmq_queue.ts";

function brokerUrl(): string {
  const value = Deno.env.get("TEST_RABBITMQ_URL");
  if (!value) {
    throw new Error(
      "TEST_RABBITMQ_URL is not set: run through `bash scripts/test_servers.sh deno test -A adapters/`",
    );
  }
  return value;
}

const Task = z.object({ id: z.number().int(), text: z.string() });
type Task = z.infer<typeof Task>;

function queueName(): string {
  return `test.${crypto.randomUUID()}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function eventually<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

/** Runs `fn` with a broker (collecting its reports) and a plain amqplib channel to look at queues. */
async function withBroker(
  fn: (broker: RabbitBroker, tools: Tools) => Promise<void>,
  options: RabbitBrokerOptions = {},
): Promise<void> {
  const reports: string[] = [];
  const broker = createRabbitBroker(brokerUrl(), {
    name: "test",
    onError: (error, context) =>
      reports.push(`${context}: ${error instanceof Error ? error.message : error}`),
    ...options,
  });
  // A short connection per look, so tests that close every connection do not break their own tools.
  const withChannel = async <T>(fn: (channel: Channel) => Promise<T>): Promise<T> => {
    const raw = await connect(brokerUrl());
    raw.on("error", () => {});
    try {
      const channel = await raw.createChannel();
      channel.on("error", () => {});
      return await fn(channel);
    } finally {
      await raw.close().catch(() => {});
    }
  };
  const tools: Tools = {
    reports,
    take: (queue) =>
      withChannel(async (channel) => {
        const message = await channel.get(queue, { noAck: true });
        return message ? JSON.parse(message.content.toString()) : undefined;
      }),
    ready: (queue) => withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount),
    deleteQueue: (queue) =>
      withChannel(async (channel) => {
        await channel.deleteQueue(queue);
      }),
    publishRaw: (queue, body) =>
      withChannel(async (channel) => {
        channel.sendToQueue(queue, Buffer.from(body), { persistent: true });
        await channel.checkQueue(queue); // a round trip, so the message is in before the connection closes
      }),
  };
  try {
    await fn(broker, tools);
  } finally {
    await broker.close();
  }
}

interface Tools {
  reports: string[];
  /** Takes one message off `queue`, parsed, or undefined if it is empty. */
  take(queue: string): Promise<unknown>;
  /** How many messages are ready on `queue`. */
  ready(queue: string): Promise<number>;
  /** Deletes `queue`. */
  deleteQueue(queue: string): Promise<void>;
  /** Puts raw bytes on `queue`, past the schema. */
  publishRaw(queue: string, body: string): Promise<void>;
}

async function rabbitmqctl(...args: string[]): Promise<void> {
  const ctl = Deno.env.get("TEST_RABBITMQ_CTL");
  assert.ok(ctl, "TEST_RABBITMQ_CTL is not set");
  const [command, ...rest] = ctl.split(" ");
  const out = await new Deno.Command(command, { args: [...rest, ...args], stdout: "piped", stderr: "piped" })
    .output();
  assert.ok(out.success, `rabbitmqctl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test("rabbitmq: nothing connects until a queue is used", async () => {
  // A closed port: any connection attempt would be reported.
  const port = await new Promise<number>((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
  const reports: string[] = [];
  const broker = createRabbitBroker(`amqp://guest:guest@127.0.0.1:${port}`, {
    onError: (e) => reports.push(String(e)),
    timeoutMs: 600,
  });
  broker.queue("never.used", Task);
  await sleep(100);
  assert.deepEqual(reports, []);
  // Used, it fails within the timeout with a clear message.
  const started = Date.now();
  await assert.rejects(
    broker.queue("never.used", Task).publish({ id: 1, text: "x" }),
    /Publishing to "never\.used" failed: RabbitMQ did not confirm within 600 ms/,
  );
  assert.ok(Date.now() - started < 2000);
  assert.ok(reports.length > 0);
  await broker.close();
});

Deno.test("rabbitmq: publish and consume round-trip, checked by the schema", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    await queue.publish({ id: 1, text: "héllo" });
    await assert.rejects(queue.publish({ id: "nope" } as unknown as Task));
    const got: Array<[Task, DeliveryInfo]> = [];
    const sub = await queue.consume((message, info) => {
      got.push([message, info]);
      return Promise.resolve("ack");
    });
    await eventually("the message", () => got.length === 1 || undefined);
    await sub.close();
    assert.deepEqual(got, [[{ id: 1, text: "héllo" }, { redelivered: false }]]);
    assert.equal(await tools.ready(name), 0);
    assert.equal(await tools.ready(`${name}.dead`), 0);
  });
});

Deno.test("rabbitmq: an invalid message goes to the dead-letter queue and others still flow", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const seen: Task[] = [];
    const sub = await queue.consume((message) => {
      seen.push(message);
      return Promise.resolve("ack");
    });
    await tools.publishRaw(name, "{not json");
    await tools.publishRaw(name, JSON.stringify({ id: "wrong" }));
    await tools.publishRaw(name, JSON.stringify({ id: 2, text: "good" }));
    await eventually("the good message", () => seen.length === 1 || undefined);
    await eventually("two dead letters", async () => (await tools.ready(`${name}.dead`)) === 2 || undefined);
    await sub.close();
    assert.deepEqual(seen, [{ id: 2, text: "good" }]);
    assert.equal(tools.reports.filter((r) => r.startsWith("invalid message")).length, 2);
  });
});

Deno.test('rabbitmq: "retry" delivers again with redelivered=true, a throw counts as retry', async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const infos: DeliveryInfo[] = [];
    const sub = await queue.consume((_message, info) => {
      infos.push(info);
      if (infos.length === 1) return Promise.resolve("retry");
      if (infos.length === 2) throw new Error("passing trouble");
      return Promise.resolve("ack");
    });
    await queue.publish({ id: 3, text: "again" });
    await eventually("three deliveries", () => infos.length === 3 || undefined);
    await sub.close();
    assert.deepEqual(infos, [{ redelivered: false }, { redelivered: true }, { redelivered: true }]);
    assert.equal(await tools.ready(name), 0);
    assert.equal(await tools.ready(`${name}.dead`), 0);
  });
});

Deno.test('rabbitmq: "reject" moves the message to the dead-letter queue', async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    let calls = 0;
    const sub = await queue.consume(() => {
      calls++;
      return Promise.resolve("reject");
    });
    await queue.publish({ id: 4, text: "poison" });
    const dead = await eventually("the dead letter", () => tools.take(`${name}.dead`));
    await sub.close();
    assert.deepEqual(dead, { id: 4, text: "poison" });
    assert.equal(calls, 1);
  });
});

Deno.test("rabbitmq: a message that keeps failing is dead-lettered after the delivery limit", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task, { deliveryLimit: 2 });
    let calls = 0;
    const sub = await queue.consume(() => {
      calls++;
      return Promise.resolve("retry");
    });
    await queue.publish({ id: 5, text: "loops" });
    const dead = await eventually("the dead letter", () => tools.take(`${name}.dead`));
    await sleep(200);
    await sub.close();
    assert.deepEqual(dead, { id: 5, text: "loops" });
    assert.ok(calls >= 2 && calls <= 3, `delivered ${calls} times`);
  });
});

Deno.test("rabbitmq: a dead-letter queue can be consumed like a queue, to act on what ended there", async () => {
  await withBroker(async (broker) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const sub = await queue.consume(() => Promise.resolve("reject"));
    const got = deferred<{ id: number; text: string }>();
    const dead = await broker.queue(`${name}.dead`, Task, { deadLetterQueue: true }).consume((message) => {
      got.resolve(message);
      return Promise.resolve("ack");
    });
    await queue.publish({ id: 6, text: "poison" });
    assert.deepEqual(await got.promise, { id: 6, text: "poison" });
    await sub.close();
    await dead.close();
  });
});

Deno.test("rabbitmq: prefetch bounds how many handlers run at once", async () => {
  await withBroker(async (broker) => {
    for (const prefetch of [1, 3]) {
      const queue = broker.queue(queueName(), Task);
      for (let i = 0; i < 4; i++) await queue.publish({ id: i, text: "slow" });
      let running = 0;
      let most = 0;
      let done = 0;
      const sub = await queue.consume(async () => {
        running++;
        most = Math.max(most, running);
        await sleep(150);
        running--;
        done++;
        return "ack" as Outcome;
      }, { prefetch });
      await eventually("all four handled", () => done === 4 || undefined);
      await sub.close();
      assert.equal(most, prefetch, `prefetch ${prefetch}`);
    }
  });
});

Deno.test("rabbitmq: close() waits for the handler in progress and settles its message", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const started = deferred();
    const release = deferred();
    const sub = await queue.consume(async () => {
      started.resolve();
      await release.promise;
      return "ack";
    });
    await queue.publish({ id: 6, text: "slow" });
    await started.promise;
    let closed = false;
    const closing = sub.close().then(() => closed = true);
    await sleep(300);
    assert.equal(closed, false, "close() returned while a handler was running");
    release.resolve();
    await closing;
    assert.equal(await tools.ready(name), 0, "the message was not acked");
  });
});

Deno.test("rabbitmq: a consumer survives its connection being closed by the broker", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const seen: number[] = [];
    const sub = await queue.consume((message) => {
      seen.push(message.id);
      return Promise.resolve("ack");
    });
    await queue.publish({ id: 1, text: "before" });
    await eventually("the first message", () => seen.length === 1 || undefined);

    await rabbitmqctl("close_all_connections", "test: connection closed on purpose");
    await eventually(
      "the loss being noticed",
      () => tools.reports.some((r) => r.startsWith("connection closed")) || undefined,
    );

    await queue.publish({ id: 2, text: "after" });
    await eventually("the message after the reconnect", () => seen.includes(2) || undefined);
    await sub.close();
    assert.deepEqual(seen, [1, 2]);
  });
});

Deno.test("rabbitmq: a publish during a broker outage succeeds once the broker is back", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const seen: number[] = [];
    const sub = await queue.consume((message) => {
      seen.push(message.id);
      return Promise.resolve("ack");
    });
    await queue.publish({ id: 1, text: "before" });
    await eventually("the first message", () => seen.length === 1 || undefined);

    await rabbitmqctl("stop_app");
    let restarted = false;
    try {
      let published = false;
      const publishing = queue.publish({ id: 2, text: "during" }).then(() => published = true);
      await sleep(1000);
      assert.equal(published, false, "a publish was confirmed while the broker was stopped");
      await rabbitmqctl("start_app");
      restarted = true;
      await publishing;
    } finally {
      if (!restarted) await rabbitmqctl("start_app");
    }
    await eventually(
      "the message published during the outage",
      () => seen.includes(2) || undefined,
      20_000,
    );
    await sub.close();
    assert.deepEqual(seen, [1, 2]);
    assert.ok(tools.reports.some((r) => r.startsWith("connecting failed")));
  }, { timeoutMs: 30_000 });
});

Deno.test("rabbitmq: an ack for a delivery from a dead channel is dropped and the message comes again", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const release = deferred();
    const started = deferred();
    const infos: DeliveryInfo[] = [];
    const sub = await queue.consume(async (_message, info) => {
      infos.push(info);
      if (infos.length === 1) {
        started.resolve();
        await release.promise; // its connection dies meanwhile
      }
      return "ack";
    });
    await queue.publish({ id: 7, text: "in flight" });
    await started.promise;
    await rabbitmqctl("close_all_connections", "test: connection closed mid-handler");
    await eventually(
      "the loss being noticed",
      () => tools.reports.some((r) => r.startsWith("connection closed")) || undefined,
    );
    release.resolve();
    await eventually("the redelivery", () => infos.length === 2 || undefined);
    await sleep(200);
    await sub.close();
    assert.deepEqual(infos, [{ redelivered: false }, { redelivered: true }]);
    assert.equal(await tools.ready(name), 0);
    // No "settling failed" report: the stale ack was not sent on the new channel.
    assert.ok(!tools.reports.some((r) => r.startsWith("settling")), tools.reports.join("\n"));
  });
});

Deno.test("rabbitmq: a message the broker cannot route is refused, and the queue is declared again", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    await queue.publish({ id: 1, text: "routed" });
    await tools.deleteQueue(name);
    await assert.rejects(queue.publish({ id: 2, text: "lost" }), /returned the message .* as unroutable/);
    await queue.publish({ id: 3, text: "routed again" });
    assert.deepEqual(await tools.take(name), { id: 3, text: "routed again" });
  });
});

Deno.test("rabbitmq: a consumer whose queue is deleted declares it again and goes on", async () => {
  await withBroker(async (broker, tools) => {
    const name = queueName();
    const queue = broker.queue(name, Task);
    const seen: number[] = [];
    const sub = await queue.consume((message) => {
      seen.push(message.id);
      return Promise.resolve("ack");
    });
    await tools.deleteQueue(name);
    await eventually(
      "the cancel being noticed",
      () => tools.reports.some((r) => r.startsWith("cancelled")) || undefined,
    );
    await queue.publish({ id: 8, text: "after the delete" });
    await eventually("the message", () => seen.includes(8) || undefined);
    await sub.close();
  });
});

Deno.test("rabbitmq: a queue declared with other arguments fails with a clear error", async () => {
  await withBroker(async (broker) => {
    const name = queueName();
    await broker.queue(name, Task, { deliveryLimit: 5 }).publish({ id: 1, text: "x" });
    await assert.rejects(
      broker.queue(name, Task, { deliveryLimit: 3 }).publish({ id: 2, text: "y" }),
      /Declaring queue ".*" failed: .*PRECONDITION/,
    );
  });
});

Deno.test("rabbitmq: with strictPrefetch, a consumer whose connection is lost takes nothing more until its running handler ends", async () => {
  for (const strictPrefetch of [true, false]) {
    await withBroker(async (broker) => {
      const queue = broker.queue(queueName(), Task, { strictPrefetch });
      const release = deferred();
      const started = deferred();
      let running = 0;
      let most = 0;
      const seen: number[] = [];
      const sub = await queue.consume(async (message) => {
        seen.push(message.id);
        running++;
        most = Math.max(most, running);
        if (seen.length === 1) {
          started.resolve();
          await release.promise; // its connection dies meanwhile
        }
        running--;
        return "ack";
      });
      await queue.publish({ id: 1, text: "long" });
      await started.promise;
      await rabbitmqctl("close_all_connections", "test: connection closed mid-handler");
      await queue.publish({ id: 2, text: "waits" });
      if (strictPrefetch) {
        await sleep(1500);
        assert.deepEqual(seen, [1], "a message was taken while the orphaned handler ran");
      } else {
        await eventually("the messages beside the orphan", () => seen.length >= 2 || undefined);
      }
      release.resolve();
      await eventually("both messages, the first again", () => seen.length === 3 || undefined);
      await sub.close();
      assert.deepEqual(seen.toSorted(), [1, 1, 2]);
      assert.equal(most, strictPrefetch ? 1 : 2, `strictPrefetch ${strictPrefetch}`);
    });
  }
});
