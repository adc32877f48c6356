import assert from "node:assert/strict";
import { createMemoryBroadcast } from "./memory_broadcast.ts";
import { Notice, testBroadcast } from "./testing/broadcast_contract.ts";

testBroadcast("memory", () => {
  const reports: string[] = [];
  const broadcast = createMemoryBroadcast(Notice, {
    onError: (error, context) =>
      reports.push(`${context}: ${error instanceof Error ? error.message : error}`),
  });
  return Promise.resolve({ open: () => broadcast, reports, close: () => {} });
});

Deno.test("memory broadcast: each subscriber gets its own copy, and publish never waits for a handler", async () => {
  const broadcast = createMemoryBroadcast(Notice);
  const seen: Notice[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const sub1 = await broadcast.subscribe(async (message) => {
    message.text = "changed by the first subscriber";
    await held;
  });
  const sub2 = await broadcast.subscribe((message) => {
    seen.push(message);
  });
  const sent = { id: 1, text: "original" };
  await broadcast.publish(sent);
  await broadcast.publish({ id: 2, text: "second" });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(seen, [{ id: 1, text: "original" }, { id: 2, text: "second" }]);
  assert.equal(sent.text, "original", "the publisher's object is untouched");
  release();
  await sub1.close();
  await sub2.close();
});
