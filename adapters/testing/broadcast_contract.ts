/**
 * @module
 * The behaviour every Broadcast must have, as tests any adapter's test file registers with its own factory.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import type { Broadcast } from "@vmp3/shared";

/** The message the contract tests send. */
export const Notice = z.object({ id: z.number().int(), text: z.string() });
/** The message the contract tests send. */
export type Notice = z.infer<typeof Notice>;

/** What the factory of {@linkcode testBroadcast} gives each test. */
export interface BroadcastFixture {
  /**
   * Broadcasts of `Notice` on one fresh channel name (the same for every call of one fixture); each call may be a
   * separate client (another worker), where the adapter has clients.
   */
  open(): Broadcast<Notice>;
  /** What the adapter reported (handler failures, invalid messages), one line each. */
  reports: string[];
  close(): Promise<void> | void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function eventually(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Registers the Broadcast tests for `name`, each on a fresh fixture from `setup`. */
export function testBroadcast(name: string, setup: () => Promise<BroadcastFixture>): void {
  const test = (title: string, fn: (fixture: BroadcastFixture) => Promise<void>) =>
    Deno.test(`${name} broadcast: ${title}`, async () => {
      const fixture = await setup();
      try {
        await fn(fixture);
      } finally {
        await fixture.close();
      }
    });

  test("every subscriber receives every message, in order", async ({ open }) => {
    const publisher = open();
    const [a, b] = [open(), open()];
    const seenA: Notice[] = [];
    const seenB: Notice[] = [];
    const subA = await a.subscribe((message) => {
      seenA.push(message);
    });
    const subB = await b.subscribe((message) => {
      seenB.push(message);
    });
    for (let id = 1; id <= 3; id++) await publisher.publish({ id, text: `n${id}` });
    await eventually("both subscribers to get all three", () => seenA.length === 3 && seenB.length === 3);
    const expected = [1, 2, 3].map((id) => ({ id, text: `n${id}` }));
    assert.deepEqual(seenA, expected);
    assert.deepEqual(seenB, expected);
    await subA.close();
    await subB.close();
  });

  test("publishing with nobody subscribed succeeds, and is not kept for a later subscriber", async ({ open }) => {
    const broadcast = open();
    await broadcast.publish({ id: 1, text: "nobody listens" });
    const seen: number[] = [];
    const sub = await broadcast.subscribe((message) => {
      seen.push(message.id);
    });
    await broadcast.publish({ id: 2, text: "heard" });
    await eventually("the message published after subscribing", () => seen.includes(2));
    await sleep(100);
    assert.deepEqual(seen, [2]);
    await sub.close();
  });

  test("a closed subscription receives nothing more, and close waits for the handler in hand", async ({ open }) => {
    const broadcast = open();
    const seen: number[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    let finished = false;
    const sub = await broadcast.subscribe(async (message) => {
      seen.push(message.id);
      await held;
      finished = true;
    });
    await broadcast.publish({ id: 1, text: "slow" });
    await eventually("the handler to start", () => seen.length === 1);
    let closed = false;
    const closing = sub.close().then(() => closed = true);
    await sleep(50);
    assert.equal(closed, false, "close waits for the handler");
    release();
    await closing;
    assert.equal(finished, true);
    await broadcast.publish({ id: 2, text: "after close" });
    await sleep(200);
    assert.deepEqual(seen, [1]);
  });

  test("a handler that throws is reported, and later messages still arrive", async ({ open, reports }) => {
    const broadcast = open();
    const seen: number[] = [];
    const sub = await broadcast.subscribe((message) => {
      seen.push(message.id);
      if (message.id === 1) throw new Error("handler broke on purpose");
    });
    await broadcast.publish({ id: 1, text: "breaks" });
    await broadcast.publish({ id: 2, text: "fine" });
    await eventually("the second message", () => seen.includes(2));
    assert.deepEqual(seen, [1, 2]);
    await eventually("the report", () => reports.some((line) => line.includes("handler broke on purpose")));
    await sub.close();
  });

  test("publish refuses a message its schema refuses", async ({ open }) => {
    const broadcast = open();
    const seen: unknown[] = [];
    const sub = await broadcast.subscribe((message) => {
      seen.push(message);
    });
    await assert.rejects(broadcast.publish({ id: "one", text: 1 } as unknown as Notice), {
      name: "ZodError",
    });
    await broadcast.publish({ id: 1, text: "valid" });
    await eventually("the valid message", () => seen.length === 1);
    assert.deepEqual(seen, [{ id: 1, text: "valid" }]);
    await sub.close();
  });
}
