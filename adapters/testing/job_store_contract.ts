/**
 * @module
 * The behaviour every JobStore must have in listing, expiry and removal, as tests any adapter's test file
 * registers with its own factory.
 */
import assert from "node:assert/strict";
import { AppError, createJob, type Job, type JobQuery, type JobStore } from "@vmp3/shared";
import { MAX_LIST_SCAN } from "../job_page.ts";

/** `s` seconds into 2026 (to the millisecond). */
const at = (s: number) => new Date(Date.UTC(2026, 0, 1) + Math.round(s * 1000));

/** A queued job created `s` seconds into 2026, with a fresh id. */
function make(s: number, extra: Partial<Job> = {}): Job {
  return {
    ...createJob({ id: crypto.randomUUID(), input: { filename: "a.mp4", size: 1 } }, at(s)),
    ...extra,
  };
}

/** Every page of `query`, followed from cursor to cursor. */
async function allPages(store: JobStore, query: JobQuery): Promise<Job[][]> {
  const pages: Job[][] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 1000; i++) {
    const page = await store.list({ ...query, cursor });
    pages.push(page.jobs);
    if (page.next === null) return pages;
    cursor = page.next;
  }
  throw new Error("list never ended");
}

const ids = (jobs: Job[]) => jobs.map((j) => j.id);

/** Newest first by createdAt, ties broken by id (descending). */
const listOrder = (a: Job, b: Job) =>
  b.createdAt.localeCompare(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

async function insertAll(store: JobStore, jobs: Job[]): Promise<void> {
  for (let i = 0; i < jobs.length; i += 50) {
    const done = await Promise.all(jobs.slice(i, i + 50).map((j) => store.insert(j)));
    assert.ok(done.every(Boolean));
  }
}

/** Registers the JobStore tests for `name`, each run on a fresh store from `open` (closed with `close`). */
export function testJobStore(
  name: string,
  open: () => Promise<{ store: JobStore; close: () => Promise<void> | void }>,
): void {
  const test = (title: string, fn: (store: JobStore) => Promise<void>) =>
    Deno.test(`${name} job store: ${title}`, async () => {
      const { store, close } = await open();
      try {
        await fn(store);
      } finally {
        await close();
      }
    });

  test("lists an owner's jobs newest first, ties by id, in pages ending with a null cursor", async (store) => {
    const mine = [make(1, { owner: "k1" }), make(2, { owner: "k1" }), make(3, { owner: "k1" })];
    const tied = Array.from({ length: 4 }, () => make(2, { owner: "k1" })); // same createdAt: ordered by id
    const theirs = [make(4, { owner: "k2" })];
    const ownerless = [make(5), make(6)];
    await insertAll(store, [...mine, ...tied, ...theirs, ...ownerless]);
    const expected = [...mine, ...tied].sort(listOrder);

    const pages = await allPages(store, { owner: "k1", limit: 3 });
    assert.deepEqual(pages.map((p) => p.length), [3, 3, 1]);
    assert.deepEqual(pages.flat(), expected);
    assert.deepEqual(await allPages(store, { owner: "k1", limit: 7 }), [expected], "an exact fit: one page");
    assert.deepEqual(await allPages(store, { owner: "k2", limit: 10 }), [theirs]);
    assert.deepEqual(ids((await store.list({ limit: 10 })).jobs), [ownerless[1].id, ownerless[0].id]);
    assert.deepEqual(await store.list({ owner: "nobody", limit: 10 }), { jobs: [], next: null });
  });

  test("a job created after the first page does not shift the next", async (store) => {
    const jobs = Array.from({ length: 6 }, (_, i) => make(i, { owner: "k1" }));
    await insertAll(store, jobs);
    const first = await store.list({ owner: "k1", limit: 3 });
    assert.deepEqual(ids(first.jobs), ids([jobs[5], jobs[4], jobs[3]]));
    assert.ok(first.next);
    await insertAll(store, [make(10, { owner: "k1" }), make(11, { owner: "k1" })]);
    await store.remove(jobs[5].id); // nor does one removed from the page already seen
    const second = await store.list({ owner: "k1", limit: 3, cursor: first.next });
    assert.deepEqual(ids(second.jobs), ids([jobs[2], jobs[1], jobs[0]]));
    assert.equal(second.next, null);
  });

  test("a status filter fills its pages, and follows status changes", async (store) => {
    const statuses = ["queued", "done", "failed", "done", "converting"] as const;
    const jobs = Array.from({ length: 25 }, (_, i) => make(i, { owner: "k1", status: statuses[i % 5] }));
    await insertAll(store, jobs);
    const done = jobs.filter((j) => j.status === "done").sort(listOrder);
    const pages = await allPages(store, { owner: "k1", status: "done", limit: 4 });
    assert.deepEqual(pages.map((p) => p.length), [4, 4, 2]);
    assert.deepEqual(pages.flat(), done);

    const oldest = jobs[0];
    const cancelled = await store.update(
      oldest.id,
      (j) => ({ ...j, status: "cancelled", updatedAt: at(30).toISOString() }),
    );
    assert.equal(cancelled?.status, "cancelled");
    assert.deepEqual(ids((await store.list({ owner: "k1", status: "cancelled", limit: 10 })).jobs), [
      oldest.id,
    ]);
    assert.ok(
      !ids((await store.list({ owner: "k1", status: "queued", limit: 10 })).jobs).includes(oldest.id),
    );
    const all = (await allPages(store, { owner: "k1", limit: 10 })).flat();
    assert.deepEqual(ids(all), ids([...jobs].sort(listOrder)), "a status change keeps the job in its place");
    assert.deepEqual(all.find((j) => j.id === oldest.id), cancelled, "and the page shows it as it is now");
  });

  test(`a filtered page scans at most ${MAX_LIST_SCAN} entries, then hands a cursor on`, async (store) => {
    const match = make(0, { owner: "k1", status: "failed", error: { code: "internal", message: "x" } });
    const others = Array.from({ length: MAX_LIST_SCAN + 5 }, (_, i) => make(1 + i / 1000, { owner: "k1" }));
    await insertAll(store, [match, ...others]);
    const first = await store.list({ owner: "k1", status: "failed", limit: 10 });
    assert.deepEqual(first.jobs, [], "nothing failed among the newest entries scanned");
    assert.ok(first.next, "but the scan stopped at its bound, so there may be more");
    const second = await store.list({ owner: "k1", status: "failed", limit: 10, cursor: first.next });
    assert.deepEqual(second, { jobs: [match], next: null });
  });

  test("a cursor that is not one it handed out, or a bad limit, is an invalid_request", async (store) => {
    await insertAll(store, [make(1, { owner: "k1" })]);
    const bad = [
      "",
      "not a cursor!",
      "abc",
      btoa("1:not-a-uuid"),
      btoa("x:" + crypto.randomUUID()),
      "A".repeat(500),
    ];
    for (const cursor of bad) {
      await assert.rejects(
        store.list({ owner: "k1", limit: 10, cursor }),
        (e) => e instanceof AppError && e.code === "invalid_request",
        JSON.stringify(cursor),
      );
    }
    for (const limit of [0, 101, 1.5]) {
      await assert.rejects(
        store.list({ owner: "k1", limit }),
        (e) => e instanceof AppError && e.code === "invalid_request",
        `limit ${limit}`,
      );
    }
  });

  test("expiring lists the jobs past their expiry and not yet expired, oldest expiry first", async (store) => {
    const a = make(1, { expiresAt: at(100).toISOString() });
    const b = make(2, { owner: "k1", expiresAt: at(50).toISOString() });
    const c = make(3, { expiresAt: at(200).toISOString() });
    const gone = make(4, { expiresAt: at(10).toISOString(), expiredAt: at(11).toISOString() });
    const never = make(5);
    await insertAll(store, [a, b, c, gone, never]);
    assert.deepEqual(await store.expiring(at(150), 10), [b.id, a.id]);
    assert.deepEqual(await store.expiring(at(150), 1), [b.id]);
    assert.deepEqual(await store.expiring(at(100), 10), [b.id], "expiresAt must be before now");
    assert.deepEqual(await store.expiring(at(0), 10), []);

    await store.update(b.id, (j) => ({ ...j, expiredAt: at(151).toISOString() }));
    await store.update(c.id, (j) => ({ ...j, expiresAt: at(20).toISOString() }));
    await store.update(never.id, (j) => ({ ...j, expiresAt: at(120).toISOString() }));
    assert.deepEqual(await store.expiring(at(150), 10), [c.id, a.id, never.id]);
    await store.update(a.id, (j) => {
      const { expiresAt: _, ...rest } = j;
      return rest;
    });
    assert.deepEqual(await store.expiring(at(1000), 10), [c.id, never.id]);
  });

  test("remove takes a job out of every index; removing a missing job is fine", async (store) => {
    const job = make(1, { owner: "k1", expiresAt: at(5).toISOString() });
    const other = make(2, { owner: "k1", expiresAt: at(6).toISOString() });
    await insertAll(store, [job, other]);
    assert.deepEqual(await store.unpublished(at(100), 10), [job.id, other.id]);
    await store.remove(job.id);
    assert.equal(await store.get(job.id), null);
    assert.deepEqual(ids((await store.list({ owner: "k1", limit: 10 })).jobs), [other.id]);
    assert.deepEqual(await store.expiring(at(100), 10), [other.id]);
    assert.deepEqual(await store.unpublished(at(100), 10), [other.id]);
    assert.equal(await store.update(job.id, (j) => ({ ...j, progress: 0.5 })), null);
    await store.remove(job.id);
    await store.remove(crypto.randomUUID());
    assert.equal(await store.insert(job), true, "the id is free again");
    assert.deepEqual(await store.get(job.id), job);
  });

  test("an update that changes a job's owner moves it between lists", async (store) => {
    const job = make(1);
    await insertAll(store, [job]);
    const moved = await store.update(job.id, (j) => ({ ...j, owner: "k9" }));
    assert.deepEqual((await store.list({ limit: 10 })).jobs, []);
    assert.deepEqual((await store.list({ owner: "k9", limit: 10 })).jobs, [moved]);
  });

  test("updates racing a removal leave no job and no index entry behind", async (store) => {
    for (let round = 0; round < 5; round++) {
      const job = make(round, { owner: "race", expiresAt: at(1).toISOString() });
      await insertAll(store, [job]);
      await Promise.all([
        ...Array.from(
          { length: 5 },
          (_, i) => store.update(job.id, (j) => ({ ...j, status: "converting", progress: (i + 1) / 10 })),
        ),
        store.remove(job.id),
      ]);
      assert.equal(await store.get(job.id), null, `round ${round}`);
    }
    assert.deepEqual(await store.list({ owner: "race", limit: 10 }), { jobs: [], next: null });
    assert.deepEqual(await store.expiring(at(100), 10), []);
    assert.deepEqual(await store.unpublished(at(100), 10), []);
  });

  test("a failed job queued again re-enters the outbox as of then, until published or final", async (store) => {
    const job = make(1);
    await insertAll(store, [job]);
    await store.markPublished(job.id);
    const failed = await store.update(
      job.id,
      (j) => ({ ...j, status: "failed", updatedAt: at(5).toISOString() }),
    );
    assert.equal(failed?.status, "failed");
    assert.deepEqual(await store.unpublished(at(100), 10), []);
    await store.update(job.id, (j) => ({ ...j, status: "queued", updatedAt: at(10).toISOString() }));
    assert.deepEqual(
      await store.unpublished(at(10), 10),
      [],
      "in the outbox from its retry, not its creation",
    );
    assert.deepEqual(await store.unpublished(at(10.001), 10), [job.id]);
    // Progress of a queued job does not move it in the outbox.
    await store.update(job.id, (j) => ({ ...j, progress: 0.1, updatedAt: at(20).toISOString() }));
    assert.deepEqual(await store.unpublished(at(10.001), 10), [job.id]);
    await store.markPublished(job.id);
    assert.deepEqual(await store.unpublished(at(100), 10), []);

    // Retried again, then failed before it was published: it leaves the outbox, as any final job.
    await store.update(job.id, (j) => ({ ...j, status: "failed", updatedAt: at(30).toISOString() }));
    await store.update(job.id, (j) => ({ ...j, status: "queued", updatedAt: at(40).toISOString() }));
    assert.deepEqual(await store.unpublished(at(100), 10), [job.id]);
    await store.update(job.id, (j) => ({ ...j, status: "failed", updatedAt: at(50).toISOString() }));
    assert.deepEqual(await store.unpublished(at(100), 10), []);
    // And a removed one.
    await store.update(job.id, (j) => ({ ...j, status: "queued", updatedAt: at(60).toISOString() }));
    await store.remove(job.id);
    assert.deepEqual(await store.unpublished(at(100), 10), []);
  });
}
