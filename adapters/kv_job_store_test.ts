import assert from "node:assert/strict";
import { applyEvent, createJob, type Job } from "@vmp3/shared";
import { createKvJobStore } from "./kv_job_store.ts";
import { testJobStore } from "./testing/job_store_contract.ts";

const id = "6f1c2a5e-8a7b-4c1d-9e2f-0a1b2c3d4e5f";
const job = (): Job =>
  createJob({ id, input: { filename: "clip.mp4", size: 10 } }, new Date("2026-01-01T00:00:00Z"));

Deno.test("KV job store inserts once, reads back, and answers null for an unknown id", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  assert.deepEqual(await store.insert(job()), true);
  assert.deepEqual(await store.insert({ ...job(), status: "done" }), false);
  assert.deepEqual(await store.get(id), job());
  assert.deepEqual(await store.get(crypto.randomUUID()), null);
  assert.deepEqual(await store.update(crypto.randomUUID(), (j) => j), null);
  kv.close();
});

Deno.test("KV job store loses no update when many run at once", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  await store.insert(job());
  await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      store.update(id, (j) =>
        applyEvent(j, {
          type: "job.progress",
          version: 1,
          jobId: id,
          at: new Date().toISOString(),
          progress: (i + 1) / 100,
        }))),
  );
  assert.deepEqual((await store.get(id))?.progress, 0.5);
  kv.close();
});

Deno.test("KV job store keeps queued jobs in the outbox until published or final, oldest first", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  const make = (s: number) =>
    createJob(
      { id: crypto.randomUUID(), input: { filename: "a.mp4", size: 1 } },
      new Date(Date.UTC(2026, 0, 1, 0, 0, s)),
    );
  const [a, b, c] = [make(1), make(2), make(3)];
  for (const j of [c, a, b]) await store.insert(j);
  await store.insert({ ...make(0), status: "done", progress: 1 }); // a job done at once from the cache
  assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 1, 0, 0, 3)), 10), [a.id, b.id]);
  assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 2)), 1), [a.id]);
  await store.markPublished(a.id);
  await store.update(b.id, (j) => ({ ...j, status: "failed", error: { code: "internal", message: "x" } }));
  assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 2)), 10), [c.id]);
  kv.close();
});

testJobStore("KV", async () => {
  const kv = await Deno.openKv(":memory:");
  return { store: createKvJobStore(kv), close: () => kv.close() };
});

Deno.test("KV job store keeps no index entry of a removed job", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createKvJobStore(kv);
  const other = { ...job(), id: crypto.randomUUID(), owner: "k2" };
  await store.insert({ ...job(), owner: "k1", expiresAt: "2026-01-02T00:00:00.000Z" });
  await store.insert(other);
  await store.update(id, (j) => ({ ...j, status: "converting" }));
  await store.remove(id);
  const keys = [];
  for await (const entry of kv.list({ prefix: [] })) keys.push(entry.key);
  assert.deepEqual(keys.filter((key) => key.includes(id)), []);
  assert.ok(keys.some((key) => key.includes(other.id)), "the other job is still there");
  kv.close();
});
