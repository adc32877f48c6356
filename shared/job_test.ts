import assert from "node:assert/strict";
import { applyEvent, createJob, isFinal, type Job, publicJob } from "./job.ts";
import type { JobEvent } from "./messages.ts";

const id = "9b2e4f70-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const fresh = (): Job => createJob({ id, input: { filename: "a.mp4", size: 1 } }, new Date(at(0)));
const started: JobEvent = { type: "job.started", version: 1, jobId: id, at: at(1), duration: 4 };
const progress = (p: number, s = 2, detail: { speed?: number; eta?: number } = {}): JobEvent => ({
  type: "job.progress",
  version: 1,
  jobId: id,
  at: at(s),
  progress: p,
  ...detail,
});
const done: JobEvent = {
  type: "job.done",
  version: 1,
  jobId: id,
  at: at(5),
  output: {
    key: "o",
    codec: "mp3",
    size: 9,
    duration: 4,
    bitrate: 1,
    sampleRate: 44100,
    channels: 2,
    sha256: "b".repeat(64),
    method: "encode",
  },
};
const failed: JobEvent = {
  type: "job.failed",
  version: 1,
  jobId: id,
  at: at(6),
  error: { code: "corrupt_input", message: "x" },
};

Deno.test("applyEvent moves queued -> converting -> done and records duration and output", () => {
  let job = applyEvent(fresh(), started);
  assert.deepEqual([job.status, job.input.duration, job.updatedAt], ["converting", 4, at(1)]);
  job = applyEvent(job, progress(0.4));
  assert.deepEqual(job.progress, 0.4);
  job = applyEvent(job, done);
  assert.deepEqual([job.status, job.progress, job.output?.size, isFinal(job.status)], ["done", 1, 9, true]);
});

Deno.test("applyEvent never moves a job back: lower progress, a repeated start, anything after a final state", () => {
  const converting = applyEvent(applyEvent(fresh(), started), progress(0.6));
  assert.deepEqual(applyEvent(converting, progress(0.3, 3)), converting);
  assert.deepEqual(applyEvent(converting, started), converting);
  const finished = applyEvent(converting, done);
  for (const late of [progress(0.9, 7), started, failed]) {
    assert.deepEqual(applyEvent(finished, late), finished);
  }
  const fail = applyEvent(converting, failed);
  assert.deepEqual(applyEvent(fail, done), fail);
});

Deno.test("applyEvent ignores an event for another job, and publicJob hides the storage and cache keys", () => {
  const job = { ...fresh(), cacheKey: "c".repeat(64) };
  assert.deepEqual(applyEvent(job, { ...started, jobId: crypto.randomUUID() }), job);
  const shown = publicJob(applyEvent(job, done));
  assert.equal("key" in (shown.output ?? {}), false);
  assert.equal(shown.output?.sha256, "b".repeat(64));
  assert.equal("cacheKey" in shown, false);
});

Deno.test("progress carries speed and ETA while converting; a final state drops them", () => {
  const job = applyEvent(applyEvent(fresh(), started), progress(0.5, 2, { speed: 8.5, eta: 0.25 }));
  assert.deepEqual([job.progress, job.speed, job.eta], [0.5, 8.5, 0.25]);
  const finished = applyEvent(job, done);
  assert.deepEqual([finished.speed, finished.eta, "eta" in finished], [undefined, undefined, false]);
  const fail = applyEvent(job, failed);
  assert.equal("speed" in fail, false);
});

Deno.test("createJob with a cached output makes a job that is done at once, marked cached", () => {
  if (done.type !== "job.done") throw new Error("unreachable");
  const job = createJob({ id, input: { filename: "a.mp4", size: 1 } }, new Date(at(0)), done.output);
  assert.deepEqual([job.status, job.progress, job.cached, job.output], ["done", 1, true, done.output]);
  assert.equal(fresh().cached, undefined);
});

Deno.test("a start applied after a progress still records the duration, without moving the job back", () => {
  const job = applyEvent(applyEvent(fresh(), progress(0.3)), started);
  assert.deepEqual([job.status, job.progress, job.input.duration], ["converting", 0.3, 4]);
});

Deno.test("a cancel ends an unfinished job and nothing after it moves it; a finished job ignores a cancel", () => {
  const cancel: JobEvent = { type: "job.cancelled", version: 1, jobId: id, at: at(4) };
  const converting = applyEvent(applyEvent(fresh(), started), progress(0.5, 3, { speed: 2, eta: 1 }));
  const cancelled = applyEvent(converting, cancel);
  assert.deepEqual([cancelled.status, cancelled.speed, cancelled.eta, isFinal("cancelled")], [
    "cancelled",
    undefined,
    undefined,
    true,
  ]);
  for (const late of [progress(0.9, 7), done, failed]) {
    assert.deepEqual(applyEvent(cancelled, late), cancelled);
  }
  const finished = applyEvent(converting, done);
  assert.deepEqual(applyEvent(finished, cancel), finished);
});

Deno.test("a retry queues a failed job again, counted, with its error gone; anything else ignores it", () => {
  const retry: JobEvent = { type: "job.retried", version: 1, jobId: id, at: at(9) };
  const fail = applyEvent(applyEvent(fresh(), started), failed);
  const again = applyEvent(fail, retry);
  assert.deepEqual([again.status, again.progress, again.error, again.retries, again.updatedAt], [
    "queued",
    0,
    undefined,
    1,
    at(9),
  ]);
  assert.equal(applyEvent(applyEvent(again, failed), retry).retries, 2);
  for (const job of [fresh(), applyEvent(fresh(), done), { ...fail, expiredAt: at(8) }]) {
    assert.deepEqual(applyEvent(job, retry), job);
  }
});

Deno.test("publicJob hides the owner (an API key id)", () => {
  const shown = publicJob({ ...fresh(), owner: "abcdefghijkl" });
  assert.equal("owner" in shown, false);
});
