/**
 * Tests of the RabbitMQ broadcast against a real broker. Run through `bash scripts/test_servers.sh deno test -A ...`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connect } from "amqplib";
import { createRabbitBroker, type RabbitBroker } from "./rabbitmq_queue.ts";
import { Notice, testBroadcast } from "./testing/broadcast_contract.ts";

function brokerUrl(): string {
  const value = Deno.env.get("TEST_RABBITMQ_URL");
  if (!value) {
    throw new Error(
      "TEST_RABBITMQ_URL is not set: run through `bash scripts/test_servers.sh deno test -A adapters/`",
    );
  }
  return value;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function eventually(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function rabbitmqctl(...args: string[]): Promise<string> {
  const ctl = Deno.env.get("TEST_RABBITMQ_CTL");
  assert.ok(ctl, "TEST_RABBITMQ_CTL is not set");
  const [command, ...rest] = ctl.split(" ");
  const out = await new Deno.Command(command, { args: [...rest, ...args], stdout: "piped", stderr: "piped" })
    .output();
  assert.ok(out.success, `rabbitmqctl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** The names of the queues whose name starts with `prefix`. */
async function queuesNamed(prefix: string): Promise<string[]> {
  return (await rabbitmqctl("list_queues", "name", "--quiet", "--no-table-headers"))
    .split("\n").map((line) => line.trim()).filter((line) => line.startsWith(prefix));
}

/** A broker client per "worker", each with its own connection, and their reports. */
function brokers() {
  const reports: string[] = [];
  const all: RabbitBroker[] = [];
  const make = (name: string) => {
    const broker = createRabbitBroker(brokerUrl(), {
      name,
      onError: (error, context) =>
        reports.push(`${name}: ${context}: ${error instanceof Error ? error.message : error}`),
    });
    all.push(broker);
    return broker;
  };
  return { make, reports, close: () => Promise.all(all.map((broker) => broker.close())).then(() => {}) };
}

testBroadcast("rabbitmq", () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  let n = 0;
  return Promise.resolve({
    open: () => clients.make(`client-${++n}`).broadcast(exchange, Notice),
    reports: clients.reports,
    close: clients.close,
  });
});

Deno.test("rabbitmq broadcast: subscribers on two connections both get a message; their queues go with them", async () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  try {
    const seen: Record<string, number[]> = { a: [], b: [] };
    const subs = await Promise.all(
      (["a", "b"] as const).map((who) =>
        clients.make(who).broadcast(exchange, Notice).subscribe((message) => {
          seen[who].push(message.id);
        })
      ),
    );
    assert.equal((await queuesNamed(exchange)).length, 2, "one exclusive queue per subscriber");
    await clients.make("publisher").broadcast(exchange, Notice).publish({ id: 7, text: "to all" });
    await eventually("both subscribers to get it", () => seen.a.length === 1 && seen.b.length === 1);
    assert.deepEqual(seen, { a: [7], b: [7] });
    await Promise.all(subs.map((sub) => sub.close()));
    await eventually("the queues to be deleted", async () => (await queuesNamed(exchange)).length === 0);
  } finally {
    await clients.close();
  }
});

Deno.test("rabbitmq broadcast: a subscriber whose connection the broker closed receives later messages", async () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  try {
    const seen: number[] = [];
    const sub = await clients.make("subscriber").broadcast(exchange, Notice).subscribe((message) => {
      seen.push(message.id);
    });
    const publisher = clients.make("publisher").broadcast(exchange, Notice);
    await publisher.publish({ id: 1, text: "before" });
    await eventually("the first message", () => seen.includes(1));

    await rabbitmqctl("close_all_connections", "test: connection closed on purpose");
    await eventually(
      "the loss being noticed",
      () => clients.reports.some((line) => line.startsWith("subscriber: connection closed")),
    );
    // Messages published while the subscriber is away are lost (a broadcast keeps nothing): publish until one
    // arrives, which shows it subscribed again, then check that a later one arrives too.
    let id = 100;
    await eventually("a message after the reconnect", async () => {
      await publisher.publish({ id: ++id, text: "after" });
      await sleep(100);
      return seen.some((seenId) => seenId > 100);
    });
    await publisher.publish({ id: 1000, text: "later" });
    await eventually("the later message", () => seen.includes(1000));
    assert.equal(new Set(seen).size, seen.length, `each message once: ${seen}`);
    assert.equal((await queuesNamed(exchange)).length, 1, "the old queue went with its connection");
    await sub.close();
  } finally {
    await clients.close();
  }
});

Deno.test("rabbitmq broadcast: a subscriber whose queue was deleted subscribes again with a new one", async () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  try {
    const seen: number[] = [];
    const sub = await clients.make("subscriber").broadcast(exchange, Notice).subscribe((message) => {
      seen.push(message.id);
    });
    const [queue] = await queuesNamed(exchange);
    await rabbitmqctl("delete_queue", queue);
    await eventually("a new queue", async () => {
      const queues = await queuesNamed(exchange);
      return queues.length === 1 && queues[0] !== queue;
    });
    const publisher = clients.make("publisher").broadcast(exchange, Notice);
    await publisher.publish({ id: 2, text: "after" });
    await eventually("the message", () => seen.includes(2));
    assert.ok(
      clients.reports.some((line) => /cancelled the subscriber/.test(line)),
      clients.reports.join("\n"),
    );
    await sub.close();
  } finally {
    await clients.close();
  }
});

Deno.test("rabbitmq broadcast: an invalid message is reported and dropped; the next one arrives", async () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  try {
    const seen: number[] = [];
    const sub = await clients.make("subscriber").broadcast(exchange, Notice).subscribe((message) => {
      seen.push(message.id);
    });
    const raw = await connect(brokerUrl());
    try {
      const channel = await raw.createChannel();
      channel.publish(exchange, "", Buffer.from('{"id":"not a number"}'));
      channel.publish(exchange, "", Buffer.from([0xff, 0xfe]));
      await channel.close();
    } finally {
      await raw.close();
    }
    await clients.make("publisher").broadcast(exchange, Notice).publish({ id: 3, text: "valid" });
    await eventually("the valid message", () => seen.includes(3));
    assert.deepEqual(seen, [3]);
    assert.equal(
      clients.reports.filter((line) => /invalid message/.test(line)).length,
      2,
      clients.reports.join("\n"),
    );
    await sub.close();
  } finally {
    await clients.close();
  }
});

Deno.test("rabbitmq broadcast: publishing to a name that is a direct exchange fails at once", async () => {
  const clients = brokers();
  const exchange = `test.broadcast.${crypto.randomUUID()}`;
  const raw = await connect(brokerUrl());
  try {
    const channel = await raw.createChannel();
    await channel.assertExchange(exchange, "direct", { durable: false, autoDelete: true });
    const broadcast = clients.make("publisher").broadcast(exchange, Notice);
    const started = Date.now();
    await assert.rejects(broadcast.publish({ id: 1, text: "x" }), /PRECONDITION_FAILED|inequivalent/);
    await assert.rejects(broadcast.subscribe(() => {}), /Subscribing to .* failed/);
    assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
    await channel.deleteExchange(exchange);
  } finally {
    await raw.close().catch(() => {});
    await clients.close();
  }
});
