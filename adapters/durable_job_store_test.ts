import assert from "node:assert/strict";
import { applyEvent, type BlobStore, createJob, type Job, type JobEvent } from "@vmp3/shared";
import { createFsBlobStore } from "./fs_blob_store.ts";
import { createKvJobStore } from "./kv_job_store.ts";
import { createDurableJobStore, jobRecordKey } from "./durable_job_store.ts";
import { testJobStore } from "./testing/job_store_contract.ts";

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const event = (jobId: string, type: "job.started" | "job.progress" | "job.done", s: number): JobEvent =>
  type === "job.started"
    ? { type, version: 1, jobId, at: at(s), duration: 3 }
    : type === "job.progress"
    ? { type, version: 1, jobId, at: at(s), progress: 0.5 }
    : {
      type,
      version: 1,
      jobId,
      at: at(s),
      output: {
        key: `outputs/${jobId}.mp3`,
        codec: "mp3",
        size: 10,
        duration: 3,
        bitrate: 128000,
        sampleRate: 44100,
        channels: 2,
        sha256: "a".repeat(64),
        method: "encode",
      },
    };

async function setup() {
  const root = await Deno.makeTempDir();
  const files = createFsBlobStore(root);
  let puts = 0;
  let failPuts = 0;
  const records: BlobStore = {
    ...files,
    put(key, body, options) {
      puts++;
      if (failPuts > 0) {
        failPuts--;
        return body.cancel().then(() => Promise.reject(new Error("S3 is down")));
      }
      return files.put(key, body, options);
    },
  };
  let kv = await Deno.openKv(":memory:");
  const open = () => createDurableJobStore(createKvJobStore(kv), records);
  return {
    records,
    open,
    puts: () => puts,
    failNextPut: () => failPuts++,
    /** Loses the fast store, as a Redis restarted empty would. */
    async wipe() {
      kv.close();
      kv = await Deno.openKv(":memory:");
      return open();
    },
    async close() {
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

const newJob = (): Job =>
  createJob({ id: crypto.randomUUID(), input: { filename: "a.mp4", size: 1 } }, new Date(at(0)));

Deno.test("durable store: a job lost by the fast store is rebuilt from its record, done and all", async () => {
  const t = await setup();
  let store = t.open();
  const job = newJob();
  assert.equal(await store.insert(job), true);
  assert.ok(await t.records.head(jobRecordKey(job.id)), "recorded when created");
  for (const [type, s] of [["job.started", 1], ["job.progress", 2], ["job.done", 3]] as const) {
    await store.update(job.id, (j) => applyEvent(j, event(job.id, type, s)));
  }
  const done = await store.get(job.id);
  store = await t.wipe();
  assert.deepEqual(await store.get(job.id), done, "rebuilt from the record");
  assert.equal(await store.get(crypto.randomUUID()), null, "an unknown job is still unknown");
  for (const id of ["../../etc/passwd", "jobs/x", ""]) {
    assert.equal(await store.get(id), null, `${id}: not a job id, and no storage key is made of it`);
  }
  await t.close();
});

Deno.test("durable store: an event for a job in flight finds it after the fast store lost it", async () => {
  const t = await setup();
  let store = t.open();
  const job = newJob();
  await store.insert(job);
  await store.update(job.id, (j) => applyEvent(j, event(job.id, "job.started", 1)));
  store = await t.wipe();
  const done = await store.update(job.id, (j) => applyEvent(j, event(job.id, "job.done", 3)));
  assert.equal(done?.status, "done");
  assert.equal((await (await t.wipe()).get(job.id))?.status, "done", "and its final state is recorded");
  await t.close();
});

Deno.test("durable store: only creation and the final state are written, not every progress", async () => {
  const t = await setup();
  const store = t.open();
  const job = newJob();
  await store.insert(job);
  for (let i = 1; i <= 5; i++) {
    const progress: JobEvent = {
      type: "job.progress",
      version: 1,
      jobId: job.id,
      at: at(i),
      progress: i / 10,
    };
    await store.update(job.id, (j) => applyEvent(j, progress));
  }
  assert.equal(t.puts(), 1);
  await store.update(job.id, (j) => applyEvent(j, event(job.id, "job.done", 9)));
  await store.update(job.id, (j) => applyEvent(j, event(job.id, "job.done", 10)));
  assert.equal(t.puts(), 2, "a repeated final event writes nothing more");
  await t.close();
});

Deno.test("durable store: a final state whose record could not be written is written when the event comes again", async () => {
  const t = await setup();
  let store = t.open();
  const job = newJob();
  await store.insert(job);
  t.failNextPut();
  await assert.rejects(
    store.update(job.id, (j) => applyEvent(j, event(job.id, "job.done", 3))),
    /S3 is down/,
  );
  await store.update(job.id, (j) => applyEvent(j, event(job.id, "job.done", 3))); // the redelivered event
  store = await t.wipe();
  assert.equal((await store.get(job.id))?.status, "done");
  await t.close();
});

testJobStore("durable over KV", async () => {
  const t = await setup();
  return { store: t.open(), close: () => t.close() };
});

Deno.test("durable store: remove deletes the record too, so a lost fast store cannot bring the job back", async () => {
  const t = await setup();
  let store = t.open();
  const job = newJob();
  await store.insert(job);
  await store.remove(job.id);
  assert.equal(await t.records.head(jobRecordKey(job.id)), null);
  assert.equal(await store.get(job.id), null);
  store = await t.wipe();
  assert.equal(await store.get(job.id), null);
  await store.remove("../../etc/passwd"); // not a job id: no storage key is made of it, and nothing fails
  await t.close();
});

Deno.test("durable store: after the fast store is lost, list and expiring show only the jobs rebuilt so far", async () => {
  const t = await setup();
  let store = t.open();
  const expiresAt = new Date(at(10)).toISOString();
  const [a, b] = [{ ...newJob(), owner: "k1", expiresAt }, { ...newJob(), owner: "k1", expiresAt }];
  await store.insert(a);
  await store.insert(b);
  store = await t.wipe();
  assert.deepEqual((await store.list({ owner: "k1", limit: 10 })).jobs, []);
  assert.deepEqual(await store.expiring(new Date(at(20)), 10), []);
  await store.get(a.id); // rebuilt on first use
  assert.deepEqual((await store.list({ owner: "k1", limit: 10 })).jobs, [a]);
  assert.deepEqual(await store.expiring(new Date(at(20)), 10), [a.id]);
  await t.close();
});

Deno.test("durable store: a change of expiry is recorded, so a rebuilt job knows its files are gone", async () => {
  const t = await setup();
  let store = t.open();
  const job = { ...newJob(), status: "done" as const, progress: 1, expiresAt: at(10) };
  await store.insert(job);
  const expiredAt = at(11);
  await store.update(job.id, (j) => ({ ...j, expiredAt }));
  assert.equal(t.puts(), 2);
  store = await t.wipe();
  assert.equal((await store.get(job.id))?.expiredAt, expiredAt);
  assert.deepEqual(await store.expiring(new Date(at(20)), 10), []);
  await t.close();
});
