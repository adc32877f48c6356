/**
 * @module
 * The behaviour every JobEventLog must have, as tests any adapter's test file registers with its own factory.
 */
import assert from "node:assert/strict";
import type { JobEventLog, JobLogEntry } from "@vmp3/shared";

/** A log under test, with settings small enough to test trimming and expiry. */
export interface OpenedLog {
  log: JobEventLog;
  close: () => Promise<void> | void;
  /** The log was opened to keep about this many entries per job. */
  maxLen: number;
  /** The log was opened to forget a job this many ms after its final entry. */
  finalTtlMs: number;
}

function entry(n: number, status = "converting"): Omit<JobLogEntry, "id"> {
  return { type: "job.progress", job: { id: "j", status, progress: n / 10 } };
}

/** Registers the JobEventLog tests for `name`, each run on a fresh log from `open`. */
export function testJobEventLog(name: string, open: () => Promise<OpenedLog>): void {
  const test = (title: string, fn: (opened: OpenedLog, jobId: string) => Promise<void>) =>
    Deno.test(`${name} event log: ${title}`, async () => {
      const opened = await open();
      try {
        await fn(opened, crypto.randomUUID());
      } finally {
        await opened.close();
      }
    });

  test("reads entries in order, from the first or after an id", async ({ log }, jobId) => {
    assert.equal(await log.lastId(jobId), null);
    assert.deepEqual(await log.read(jobId, undefined, { blockMs: 0 }), []);
    const ids = [];
    for (let n = 1; n <= 4; n++) ids.push(await log.append(jobId, entry(n)));
    assert.equal(new Set(ids).size, 4, "ids are unique");
    const all = await log.read(jobId, undefined, { blockMs: 0 });
    assert.deepEqual(all.map((e) => e.id), ids);
    assert.deepEqual(all.map((e) => e.job.progress), [0.1, 0.2, 0.3, 0.4]);
    assert.deepEqual(all[0], { id: ids[0], ...entry(1) });
    const after = await log.read(jobId, ids[1], { blockMs: 0 });
    assert.deepEqual(after.map((e) => e.id), ids.slice(2));
    assert.deepEqual(
      (await log.read(jobId, ids[0], { blockMs: 0, limit: 2 })).map((e) => e.id),
      ids.slice(1, 3),
    );
    assert.equal(await log.lastId(jobId), ids[3]);
    assert.deepEqual(await log.read(jobId, ids[3], { blockMs: 0 }), []);
  });

  test(
    "knows its own ids only: another job's, a malformed or a made-up one is not in it",
    async ({ log }, jobId) => {
      const id = await log.append(jobId, entry(1));
      const other = await log.append(crypto.randomUUID(), entry(1));
      assert.equal(await log.has(jobId, id), true);
      assert.equal(await log.has(jobId, "not an id"), false);
      assert.equal(await log.has(jobId, ""), false);
      assert.equal(await log.has(jobId, "1-999999"), false);
      if (other !== id) assert.equal(await log.has(jobId, other), false);
      await assert.rejects(log.read(jobId, "garbage", { blockMs: 0 }));
    },
  );

  test("a blocked read answers as soon as an entry is appended", async ({ log }, jobId) => {
    const first = await log.append(jobId, entry(1));
    const started = Date.now();
    const reading = log.read(jobId, first, { blockMs: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = await log.append(jobId, entry(2));
    const got = await reading;
    assert.deepEqual(got.map((e) => e.id), [second]);
    assert.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
  });

  test("a blocked read with nothing new answers empty after its wait", async ({ log }, jobId) => {
    const first = await log.append(jobId, entry(1));
    const started = Date.now();
    assert.deepEqual(await log.read(jobId, first, { blockMs: 200 }), []);
    const waited = Date.now() - started;
    assert.ok(waited >= 150 && waited < 3000, `waited ${waited} ms`);
  });

  test("keeps about maxLen entries, the newest", async ({ log, maxLen }, jobId) => {
    const ids = [];
    for (let n = 0; n < maxLen * 3; n++) ids.push(await log.append(jobId, entry(n % 10)));
    const kept = await log.read(jobId, undefined, { blockMs: 0, limit: maxLen * 3 });
    assert.ok(kept.length >= maxLen && kept.length < maxLen * 3, `kept ${kept.length}`);
    assert.deepEqual(kept.map((e) => e.id), ids.slice(-kept.length), "the newest, in order");
    assert.equal(await log.has(jobId, ids[0]), false, "the first is gone");
    assert.equal(await log.lastId(jobId), ids.at(-1));
  });

  test("is forgotten some time after its final entry", async ({ log, finalTtlMs }, jobId) => {
    const first = await log.append(jobId, entry(1));
    await log.append(jobId, entry(10, "done"), { final: true });
    assert.equal(await log.has(jobId, first), true, "still there right after");
    const deadline = Date.now() + finalTtlMs + 10_000;
    while (await log.lastId(jobId) !== null) {
      assert.ok(Date.now() < deadline, "still there long after its expiry");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(await log.has(jobId, first), false);
  });
}
