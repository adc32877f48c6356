/**
 * @module
 * The behaviour every UsageStore must have, as tests any adapter's test file registers with its own factory.
 * Some tests wait for a window or a reservation to pass (1-2 s each).
 */
import assert from "node:assert/strict";
import type { UsageStore } from "@vmp3/shared";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Registers the UsageStore tests for `name`, each run on a fresh, empty store from `open` (closed with `close`). */
export function testUsageStore(
  name: string,
  open: () => Promise<{ store: UsageStore; close: () => Promise<void> | void }>,
): void {
  const test = (title: string, fn: (store: UsageStore) => Promise<void>) =>
    Deno.test(`${name} usage store: ${title}`, async () => {
      const { store, close } = await open();
      try {
        await fn(store);
      } finally {
        await close();
      }
    });

  test("hit allows exactly `limit` requests, counting `remaining` down, then refuses", async (store) => {
    const decisions = [];
    for (let i = 0; i < 7; i++) decisions.push(await store.hit("k1", 5, 60));
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true, true, true, true, false, false]);
    assert.deepEqual(decisions.map((d) => d.remaining), [4, 3, 2, 1, 0, 0, 0]);
    for (const d of decisions) {
      assert.equal(d.limit, 5);
      assert.ok(Number.isInteger(d.resetSeconds), `resetSeconds ${d.resetSeconds} is whole`);
      assert.ok(d.resetSeconds >= 1 && d.resetSeconds <= 60, `resetSeconds ${d.resetSeconds} in 1..60`);
    }
    const other = await store.hit("k2", 5, 60);
    assert.deepEqual([other.allowed, other.remaining], [true, 4], "another subject has its own limit");
  });

  test("a limit of 1 allows one request per window", async (store) => {
    const first = await store.hit("one", 1, 60);
    assert.deepEqual([first.allowed, first.remaining], [true, 0]);
    const second = await store.hit("one", 1, 60);
    assert.deepEqual([second.allowed, second.remaining], [false, 0]);
    assert.ok(second.resetSeconds >= 1 && second.resetSeconds <= 60, `resetSeconds ${second.resetSeconds}`);
  });

  test("hit allows the whole limit again once the window has passed", async (store) => {
    for (let i = 0; i < 3; i++) assert.equal((await store.hit("k1", 3, 1)).allowed, true, `hit ${i + 1}`);
    const refused = await store.hit("k1", 3, 1);
    assert.equal(refused.allowed, false);
    assert.equal(refused.resetSeconds, 1);
    await sleep(1100);
    const again = [];
    for (let i = 0; i < 4; i++) again.push(await store.hit("k1", 3, 1));
    assert.deepEqual(again.map((d) => d.allowed), [true, true, true, false]);
    assert.deepEqual(again.map((d) => d.remaining), [2, 1, 0, 0]);
  });

  test("a refused caller that waits resetSeconds is allowed", async (store) => {
    assert.equal((await store.hit("k1", 2, 2)).allowed, true);
    assert.equal((await store.hit("k1", 2, 2)).allowed, true);
    const refused = await store.hit("k1", 2, 2);
    assert.equal(refused.allowed, false);
    assert.ok(refused.resetSeconds >= 1 && refused.resetSeconds <= 2, `resetSeconds ${refused.resetSeconds}`);
    await sleep(refused.resetSeconds * 1000 + 50);
    assert.equal((await store.hit("k1", 2, 2)).allowed, true);
  });

  test("concurrent hits never pass the limit, and each allowed one sees its own remaining", async (store) => {
    const decisions = await Promise.all(Array.from({ length: 60 }, () => store.hit("busy", 20, 600)));
    const allowed = decisions.filter((d) => d.allowed);
    assert.equal(allowed.length, 20);
    assert.deepEqual(
      allowed.map((d) => d.remaining).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i),
    );
    assert.ok(decisions.filter((d) => !d.allowed).every((d) => d.remaining === 0));
  });

  test("hit rejects a limit or window that is not positive", async (store) => {
    await assert.rejects(store.hit("k1", 0, 60), RangeError);
    await assert.rejects(store.hit("k1", 1.5, 60), RangeError);
    await assert.rejects(store.hit("k1", 5, 0), RangeError);
  });

  test("addBytes adds up to the limit, refuses past it without adding, and starts each day at 0", async (store) => {
    assert.equal(await store.addBytes("k1", "2026-01-01", 60, 100), 60);
    assert.equal(await store.addBytes("k1", "2026-01-01", 50, 100), null, "60 + 50 passes 100");
    assert.equal(await store.addBytes("k1", "2026-01-01", 40, 100), 100, "the refused 50 was not added");
    assert.equal(await store.addBytes("k1", "2026-01-01", 1, 100), null);
    assert.equal(await store.addBytes("k1", "2026-01-01", 0, 100), 100);
    assert.equal(await store.addBytes("k1", "2026-01-02", 100, 100), 100, "a new day starts at 0");
    assert.equal(await store.addBytes("k2", "2026-01-01", 30, 100), 30, "another subject has its own total");
    assert.equal(await store.addBytes("k3", "2026-01-01", 101, 100), null, "one addition past the limit");
    assert.equal(await store.addBytes("k3", "2026-01-01", 1, 100), 1);
  });

  test("addBytes counts large totals exactly", async (store) => {
    const gib = 1024 ** 3;
    assert.equal(await store.addBytes("k1", "2026-01-01", 40 * gib + 1, 50 * gib), 40 * gib + 1);
    assert.equal(await store.addBytes("k1", "2026-01-01", 10 * gib, 50 * gib), null);
    assert.equal(await store.addBytes("k1", "2026-01-01", 10 * gib - 1, 50 * gib), 50 * gib);
  });

  test("concurrent addBytes never pass the limit", async (store) => {
    const totals = await Promise.all(
      Array.from({ length: 25 }, () => store.addBytes("k1", "2026-01-01", 10, 100)),
    );
    const added = totals.filter((t): t is number => t !== null).sort((a, b) => a - b);
    assert.deepEqual(added, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  });

  test("addBytes rejects a malformed day or a negative count", async (store) => {
    await assert.rejects(store.addBytes("k1", "2026-1-1", 1, 100), RangeError);
    await assert.rejects(store.addBytes("k1", "2026-01-01", -1, 100), RangeError);
  });

  test("reserve hands a name to its first caller and tells the others who holds it", async (store) => {
    assert.equal(await store.reserve("idem-1", "job-a", 60), "job-a");
    assert.equal(await store.reserve("idem-1", "job-b", 60), "job-a");
    assert.equal(await store.reserve("idem-1", "job-a", 60), "job-a", "the holder asking again");
    assert.equal(await store.reserve("idem-2", "job-b", 60), "job-b", "another name is free");
  });

  test("unreserve by a non-holder does nothing; by the holder frees the name", async (store) => {
    assert.equal(await store.reserve("idem-1", "job-a", 60), "job-a");
    await store.unreserve("idem-1", "job-b");
    assert.equal(await store.reserve("idem-1", "job-c", 60), "job-a");
    await store.unreserve("idem-1", "job-a");
    assert.equal(await store.reserve("idem-1", "job-c", 60), "job-c");
    await store.unreserve("never-reserved", "job-a"); // not an error
  });

  test("a reservation expires after its ttl", async (store) => {
    assert.equal(await store.reserve("idem-1", "job-a", 1), "job-a");
    assert.equal(await store.reserve("idem-1", "job-b", 60), "job-a");
    await sleep(1100);
    assert.equal(await store.reserve("idem-1", "job-b", 60), "job-b");
    await store.unreserve("idem-1", "job-a"); // the expired holder cannot free the new one
    assert.equal(await store.reserve("idem-1", "job-c", 60), "job-b");
  });

  test("of concurrent reservations of one name, one wins and every caller is told the same holder", async (store) => {
    const holders = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.reserve("idem", `job-${i}`, 60)),
    );
    assert.equal(new Set(holders).size, 1);
    assert.match(holders[0], /^job-\d+$/);
  });

  test("the holder reserving again keeps its reservation for the new ttl", async (store) => {
    assert.equal(await store.reserve("idem-1", "job-a", 1), "job-a");
    await sleep(600);
    assert.equal(await store.reserve("idem-1", "job-a", 2), "job-a", "renewed for 2 s from now");
    await sleep(700); // 1.3 s after the first reservation: past its first ttl, within the renewed one
    assert.equal(await store.reserve("idem-1", "job-b", 60), "job-a");
    await sleep(1500);
    assert.equal(await store.reserve("idem-1", "job-b", 60), "job-b", "the renewed ttl ended too");
  });

  test("claimSlot hands out `limit` slots, answers their holders, and refuses the next without change", async (store) => {
    assert.deepEqual(await store.claimSlot("k1", "job-a", 2, 60), ["job-a"]);
    assert.deepEqual((await store.claimSlot("k1", "job-b", 2, 60))?.sort(), ["job-a", "job-b"]);
    assert.equal(await store.claimSlot("k1", "job-c", 2, 60), null);
    assert.deepEqual(
      (await store.claimSlot("k1", "job-a", 2, 60))?.sort(),
      ["job-a", "job-b"],
      "a holder claiming again keeps its slot",
    );
    assert.deepEqual(
      (await store.claimSlot("k1", "job-a", 1, 60))?.sort(),
      ["job-a", "job-b"],
      "whatever the limit",
    );
    assert.deepEqual(
      await store.claimSlot("k2", "job-c", 2, 60),
      ["job-c"],
      "another subject has its own slots",
    );
  });

  test("releaseSlot frees the holder's slot; releasing a slot not held does nothing", async (store) => {
    assert.deepEqual(await store.claimSlot("k1", "job-a", 1, 60), ["job-a"]);
    await store.releaseSlot("k1", "job-b");
    await store.releaseSlot("never", "job-a");
    assert.equal(await store.claimSlot("k1", "job-b", 1, 60), null);
    await store.releaseSlot("k1", "job-a");
    assert.deepEqual(await store.claimSlot("k1", "job-b", 1, 60), ["job-b"]);
    await store.releaseSlot("k1", "job-a"); // released already: not an error, and job-b keeps its slot
    assert.equal(await store.claimSlot("k1", "job-c", 1, 60), null);
  });

  test("a slot is free once its ttl has passed, and a renewed one lasts its new ttl", async (store) => {
    assert.deepEqual(await store.claimSlot("k1", "job-a", 2, 1), ["job-a"]);
    assert.deepEqual((await store.claimSlot("k1", "job-b", 2, 1))?.sort(), ["job-a", "job-b"]);
    await sleep(500);
    assert.ok(await store.claimSlot("k1", "job-b", 2, 3), "job-b renewed for 3 s");
    await sleep(700);
    assert.deepEqual(
      (await store.claimSlot("k1", "job-c", 2, 60))?.sort(),
      ["job-b", "job-c"],
      "job-a's slot ended, job-b's did not",
    );
  });

  test("of concurrent claims, exactly `limit` win and each winner sees the holders up to then", async (store) => {
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => store.claimSlot("busy", `job-${i}`, 5, 60)),
    );
    const won = results.flatMap((holders, i) => holders ? [`job-${i}`] : []);
    assert.equal(won.length, 5);
    for (const holders of results) {
      if (!holders) continue;
      assert.ok(holders.length >= 1 && holders.length <= 5, `${holders}`);
      assert.ok(holders.every((holder) => won.includes(holder)), `${holders} are all winners`);
    }
    assert.deepEqual(new Set(results.filter((h) => h).map((h) => h!.length)), new Set([1, 2, 3, 4, 5]));
  });

  test("claimSlot rejects a limit or ttl that is not a positive whole number", async (store) => {
    await assert.rejects(store.claimSlot("k1", "job-a", 0, 60), RangeError);
    await assert.rejects(store.claimSlot("k1", "job-a", 1.5, 60), RangeError);
    await assert.rejects(store.claimSlot("k1", "job-a", 1, 0), RangeError);
  });
}
