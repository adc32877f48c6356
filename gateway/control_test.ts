/**
 * The client API's job control, through the real Gateway, Upload and Metadata apps in one process (see
 * gateway/testing/in_process.ts): listing, cancel and delete, retry, Idempotency-Key, and expiry.
 */
import assert from "node:assert/strict";
import { jobKeys, parseCidrList } from "@vmp3/shared";
import { createPublicHttp } from "@vmp3/adapters/public-http";
import type { MetadataClient } from "@vmp3/metadata";
import { createReconciler, createSweeper } from "@vmp3/upload";
import { heldBody, type Product, type TestKey, withProduct } from "./testing/in_process.ts";

async function errorCode(response: Response): Promise<string> {
  return (await response.json()).error.code;
}

/** Uploads as `auth` and answers the new job's id (the upload must be accepted). */
async function newJob(
  product: Product,
  auth: Record<string, string>,
  bytes = "video bytes",
  query = "",
): Promise<string> {
  const response = await product.upload(auth, bytes, query);
  assert.equal(response.status, 202, await response.clone().text());
  return (await response.json()).id;
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function getJob(product: Product, key: TestKey, id: string): Promise<Json> {
  const response = await product.gateway.request(`/v1/jobs/${id}`, { headers: key.auth });
  assert.equal(response.status, 200);
  return await response.json();
}

function deleteJob(product: Product, key: TestKey, id: string): Promise<Response> {
  return Promise.resolve(product.gateway.request(`/v1/jobs/${id}`, { method: "DELETE", headers: key.auth }));
}

function retryJob(product: Product, key: TestKey, id: string): Promise<Response> {
  return Promise.resolve(
    product.gateway.request(`/v1/jobs/${id}/retry`, { method: "POST", headers: key.auth }),
  );
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 3));

Deno.test(
  "GET /v1/jobs pages newest first, each job once, filters by status, and refuses a bad limit or cursor",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await newJob(product, key.auth, `video ${i}`));
      await tick(); // distinct creation times, so that "newest first" is the order they were made in, reversed
    }
    await product.fail(ids[1]);
    await product.fail(ids[3]);
    await product.finish(ids[4]);

    const seen: string[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const query: string = next === null ? "?limit=2" : `?limit=2&cursor=${encodeURIComponent(next)}`;
      const response = await product.gateway.request(`/v1/jobs${query}`, { headers: key.auth });
      assert.equal(response.status, 200);
      const page: Json = await response.json();
      assert.ok(page.jobs.length <= 2);
      for (const job of page.jobs) {
        seen.push(job.id);
        assert.equal(job.links.self, `/v1/jobs/${job.id}`);
      }
      next = page.next;
      pages++;
    } while (next !== null);
    assert.deepEqual(seen, [...ids].reverse());
    assert.equal(pages, 3);

    const failed: Json =
      await (await product.gateway.request("/v1/jobs?status=failed", { headers: key.auth }))
        .json();
    assert.deepEqual(failed.jobs.map((job: Json) => job.id), [ids[3], ids[1]]);
    assert.equal(failed.next, null);
    const done: Json = await (await product.gateway.request("/v1/jobs?status=done", { headers: key.auth }))
      .json();
    assert.deepEqual(done.jobs.map((job: Json) => job.id), [ids[4]]);
    assert.ok(done.jobs[0].links.download);

    for (
      const query of ["limit=0", "limit=101", "limit=abc", "limit=", "limit=1.5", "limit=-1", "status=bogus"]
    ) {
      const response = await product.gateway.request(`/v1/jobs?${query}`, { headers: key.auth });
      assert.equal(response.status, 400, query);
      assert.equal(await errorCode(response), "invalid_request", query);
    }
    for (const cursor of ["not a cursor", "abc", btoa("12:not-a-uuid"), "x".repeat(300)]) {
      const response = await product.gateway.request(`/v1/jobs?cursor=${encodeURIComponent(cursor)}`, {
        headers: key.auth,
      });
      assert.equal(response.status, 400, cursor);
      assert.equal(await errorCode(response), "invalid_request", cursor);
    }
    const all = await (await product.gateway.request("/v1/jobs?limit=100", { headers: key.auth })).json();
    assert.equal(all.jobs.length, 5);
  }),
);

Deno.test(
  "DELETE of a queued job cancels it and removes its input; a late job.done does not revive it; DELETE again removes it",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth);
    assert.ok(await product.stored(jobKeys(id).inputKey));

    const cancelled = await deleteJob(product, key, id);
    assert.equal(cancelled.status, 200);
    assert.equal((await cancelled.json()).status, "cancelled");
    assert.equal(await product.stored(jobKeys(id).inputKey), false);

    // A worker that finished just as it was cancelled reports done: the job stays cancelled.
    await product.finish(id);
    const after = await getJob(product, key, id);
    assert.equal(after.status, "cancelled");
    assert.equal(after.links.download, undefined);
    const download = await product.gateway.request(`/v1/jobs/${id}/download`, { headers: key.auth });
    assert.equal(download.status, 409);
    await download.body?.cancel();

    const removed = await deleteJob(product, key, id);
    assert.equal(removed.status, 204);
    assert.equal(await removed.text(), "");
    const gone = await product.gateway.request(`/v1/jobs/${id}`, { headers: key.auth });
    assert.equal(gone.status, 404);
    await gone.body?.cancel();
    assert.deepEqual(await product.jobIds(), []);
    const again = await deleteJob(product, key, id);
    assert.equal(again.status, 404);
    await again.body?.cancel();
  }),
);

Deno.test(
  "DELETE of a converting job cancels it; DELETE of a done job answers 204 and removes its MP3 and input",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const converting = await newJob(product, key.auth, "one");
    await product.event(converting, { type: "job.progress", progress: 0.5 });
    const cancelled = await deleteJob(product, key, converting);
    assert.equal(cancelled.status, 200);
    assert.equal((await cancelled.json()).status, "cancelled");

    const done = await newJob(product, key.auth, "two");
    await product.finish(done);
    assert.ok(await product.stored(jobKeys(done).outputKey));
    const removed = await deleteJob(product, key, done);
    assert.equal(removed.status, 204);
    await removed.body?.cancel();
    assert.equal(await product.stored(jobKeys(done).outputKey), false);
    assert.equal(await product.stored(jobKeys(done).inputKey), false);
    const gone = await product.gateway.request(`/v1/jobs/${done}`, { headers: key.auth });
    assert.equal(gone.status, 404);
    await gone.body?.cancel();

    // A failed job is deleted the same way.
    const failed = await newJob(product, key.auth, "three");
    await product.fail(failed);
    const removedFailed = await deleteJob(product, key, failed);
    assert.equal(removedFailed.status, 204);
    assert.equal(await product.stored(jobKeys(failed).inputKey), false);
  }),
);

Deno.test(
  "A shared MP3 (a cached job) stays while one of its jobs remains, and goes with the last",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    for (const order of [["first", "second"], ["second", "first"]]) {
      const bytes = `shared bytes ${order[0]}`;
      const first = await newJob(product, key.auth, bytes, "?title=x");
      await product.finish(first, "the shared mp3");
      const response = await product.upload(key.auth, bytes, "?title=x");
      assert.equal(response.status, 202);
      const cached: Json = await response.json();
      assert.equal(cached.status, "done");
      assert.equal(cached.cached, true);
      const jobs: Record<string, string> = { first, second: cached.id };
      const mp3 = jobKeys(first).outputKey;

      assert.equal((await deleteJob(product, key, jobs[order[0]])).status, 204);
      assert.ok(await product.stored(mp3), `${order}: the MP3 stays for the other job`);
      const other = jobs[order[1]];
      const download = await product.gateway.request(`/v1/jobs/${other}/download`, { headers: key.auth });
      assert.equal(download.status, 200);
      assert.equal(await download.text(), "the shared mp3");

      assert.equal((await deleteJob(product, key, other)).status, 204);
      assert.equal(await product.stored(mp3), false, `${order}: the last job took the MP3`);
      // No cache entry points at the removed MP3: the same upload is converted again.
      const fresh: Json = await (await product.upload(key.auth, bytes, "?title=x")).json();
      assert.equal(fresh.status, "queued");
      await product.finish(fresh.id);
    }
  }),
);

Deno.test(
  "A job that finishes just as DELETE cancels it keeps a consistent MP3: deleted with its cache entry, or kept",
  withProduct({
    // Convert reports the job done between the Upload service's read of it and its cancel.
    wrapUploadMetadata: (metadata): MetadataClient => ({
      ...metadata,
      async cancelJob(id, scope) {
        await raceDone?.(id);
        return await metadata.cancelJob(id, scope);
      },
    }),
  }, async (product) => {
    raceDone = (id) => product.finish(id, "finished at the last moment");
    try {
      const key = await product.createKey();
      const id = await newJob(product, key.auth, "racy bytes");
      const response = await deleteJob(product, key, id);
      assert.ok(response.status === 200 || response.status === 204, String(response.status));
      await response.body?.cancel();
      raceDone = undefined;

      const read = await product.gateway.request(`/v1/jobs/${id}`, { headers: key.auth });
      if (read.status === 200) {
        // Still there: then it must be whole, its MP3 downloadable.
        const job: Json = await read.json();
        const download = await product.gateway.request(`/v1/jobs/${id}/download`, { headers: key.auth });
        assert.equal(job.status === "done" ? download.status : 409, download.status);
        await download.body?.cancel();
      } else {
        assert.equal(read.status, 404);
        await read.body?.cancel();
      }
      // Whatever happened, the same upload is never done at once from an MP3 that is gone.
      const again: Json = await (await product.upload(key.auth, "racy bytes")).json();
      if (again.status === "done") {
        const download = await product.gateway.request(`/v1/jobs/${again.id}/download`, {
          headers: key.auth,
        });
        assert.equal(download.status, 200, "a cached job whose MP3 was removed");
        assert.equal(await download.text(), "finished at the last moment");
      }
    } finally {
      raceDone = undefined;
    }
  }),
);
let raceDone: ((id: string) => Promise<void>) | undefined;

Deno.test(
  "Retry: a failed job is queued again with a new task; done, queued and video-less jobs are 409",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth, "to retry");
    await product.tasksTaken(1);
    await product.fail(id);

    const retried = await retryJob(product, key, id);
    assert.equal(retried.status, 202);
    assert.equal(retried.headers.get("location"), `/v1/jobs/${id}`);
    const job: Json = await retried.json();
    assert.equal(job.status, "queued");
    assert.equal(job.retries, 1);
    assert.equal(job.error, undefined);
    assert.equal(job.links.self, `/v1/jobs/${id}`);
    const tasks = await product.tasksTaken(2);
    assert.deepEqual(tasks.map((task) => task.jobId), [id, id]);
    assert.equal(tasks[1].inputKey, jobKeys(id).inputKey);

    // Queued now: 409.
    const queued = await retryJob(product, key, id);
    assert.equal(queued.status, 409);
    assert.equal(await errorCode(queued), "conflict");

    await product.finish(id);
    const done = await retryJob(product, key, id);
    assert.equal(done.status, 409);
    assert.equal(await errorCode(done), "conflict");

    // A second failure and retry counts 2.
    const other = await newJob(product, key.auth, "to retry twice");
    await product.fail(other);
    assert.equal((await (await retryJob(product, key, other)).json()).retries, 1);
    await product.fail(other);
    assert.equal((await (await retryJob(product, key, other)).json()).retries, 2);

    // Its video gone: 409, and the job stays failed.
    const lost = await newJob(product, key.auth, "video that goes");
    await product.fail(lost);
    await product.blobs.delete(jobKeys(lost).inputKey);
    const refused = await retryJob(product, key, lost);
    assert.equal(refused.status, 409);
    assert.equal(await errorCode(refused), "conflict");
    assert.equal((await getJob(product, key, lost)).status, "failed");

    const unknown = await retryJob(product, key, crypto.randomUUID());
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
  }),
);

Deno.test(
  "Retries sent at once queue the job once: one 202, one new task",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth, "to retry at once");
    await product.tasksTaken(1);
    await product.fail(id);
    const responses = await Promise.all(Array.from({ length: 6 }, () => retryJob(product, key, id)));
    const statuses = responses.map((response) => response.status).sort();
    await Promise.all(responses.map((response) => response.body?.cancel()));
    assert.deepEqual(statuses, [202, 409, 409, 409, 409, 409]);
    await product.tasksTaken(2);
    await new Promise((resolve) => setTimeout(resolve, 100)); // for a wrong third task to show too
    assert.equal(product.published.length, 2);
    assert.equal((await getJob(product, key, id)).retries, 1);
  }),
);

Deno.test(
  "A retry whose Upload process dies before publishing its task is published by the reconciler",
  withProduct({
    wrapUploadMetadata: (metadata): MetadataClient => ({
      ...metadata,
      async retryJob(id, scope, options) {
        const job = await metadata.retryJob(id, scope, options);
        if (dieAfterRetry) throw new Error("the Upload process died here");
        return job;
      },
    }),
  }, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth, "retried, then lost");
    await product.tasksTaken(1);
    await product.fail(id);
    dieAfterRetry = true;
    try {
      const response = await retryJob(product, key, id);
      assert.equal(response.status, 500);
      await response.body?.cancel();
    } finally {
      dieAfterRetry = false;
    }
    assert.equal((await getJob(product, key, id)).status, "queued");
    assert.equal(product.published.length, 1, "no task was published for the retry");

    const reconciler = createReconciler({
      blobs: product.blobs,
      tasks: product.tasks,
      metadata: product.metadata,
      graceMs: 0,
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(await reconciler.runOnce(), { published: [id], failed: [] });
    const tasks = await product.tasksTaken(2);
    assert.equal(tasks[1].jobId, id);
    assert.deepEqual(await reconciler.runOnce(), { published: [], failed: [] }, "published once");

    // A retry that went well leaves nothing for the reconciler.
    await product.fail(id);
    assert.equal((await retryJob(product, key, id)).status, 202);
    await product.tasksTaken(3);
    assert.deepEqual(await reconciler.runOnce(), { published: [], failed: [] });
  }),
);
let dieAfterRetry = false;

Deno.test(
  "A job retried close to its expiry keeps its files a day longer; one expiring later keeps its expiry",
  withProduct({ filesTtlMs: 2 * 86_400_000 }, async (product) => {
    const key = await product.createKey();
    const soon = await newJob(product, key.auth, "expires soon");
    const later = await newJob(product, key.auth, "expires later");
    for (const id of [soon, later]) await product.fail(id);
    // As if `soon` had been made two days ago: a minute left.
    const inAMinute = new Date(Date.now() + 60_000).toISOString();
    await product.store.update(soon, (job) => ({ ...job, expiresAt: inAMinute }));
    const laterExpiry = (await getJob(product, key, later)).expiresAt;

    const before = Date.now();
    const retried: Json = await (await retryJob(product, key, soon)).json();
    assert.equal(retried.status, "queued");
    const kept = Date.parse(retried.expiresAt) - before;
    assert.ok(kept >= 86_400_000 - 1000 && kept <= 86_400_000 + 5000, `kept ${kept} ms`);
    assert.equal((await getJob(product, key, soon)).expiresAt, retried.expiresAt);

    const retriedLater: Json = await (await retryJob(product, key, later)).json();
    assert.equal(retriedLater.expiresAt, laterExpiry);
  }),
);

Deno.test(
  "Idempotency-Key: the same key and body give the same job; a different body is 422; keys are per API key",
  withProduct({}, async (product) => {
    const a = await product.createKey();
    const b = await product.createKey();
    const headers = { ...a.auth, "idempotency-key": "order-42" };

    const first = await product.upload(headers, "the video", "?title=t");
    assert.equal(first.status, 202);
    assert.equal(first.headers.get("idempotent-replayed"), null);
    const job: Json = await first.json();

    const repeat = await product.upload(headers, "the video", "?title=t");
    assert.equal(repeat.status, 202);
    assert.equal(repeat.headers.get("idempotent-replayed"), "true");
    assert.equal(repeat.headers.get("location"), `/v1/jobs/${job.id}`);
    assert.equal((await repeat.json()).id, job.id);
    assert.deepEqual(await product.jobIds(), [job.id]);
    assert.deepEqual(await product.blobs.list("inputs/"), [jobKeys(job.id).inputKey]);
    await product.tasksTaken(1);

    // Still the same job after it is done.
    await product.finish(job.id);
    const later = await product.upload(headers, "the video", "?title=t");
    assert.equal(later.status, 202);
    const laterJob: Json = await later.json();
    assert.equal(laterJob.id, job.id);
    assert.equal(laterJob.status, "done");
    assert.ok(laterJob.links.download);

    for (
      const [bytes, query] of [["other video", "?title=t"], ["the video", "?title=u"], ["the video", ""]]
    ) {
      const reused = await product.upload(headers, bytes, query);
      assert.equal(reused.status, 422, `${bytes} ${query}`);
      assert.equal(await errorCode(reused), "idempotency_key_reused");
    }

    const other = await product.upload({ ...b.auth, "idempotency-key": "order-42" }, "the video", "?title=t");
    assert.equal(other.status, 202);
    const otherJob: Json = await other.json();
    assert.notEqual(otherJob.id, job.id);
    assert.equal(other.headers.get("idempotent-replayed"), null);

    assert.equal((await product.jobIds()).length, 2);
    await product.tasksTaken(2);
    assert.equal(product.published.length, 2);

    for (const bad of ["has spaces", "x".repeat(300), "é"]) {
      const response = await product.upload({ ...a.auth, "idempotency-key": bad }, "the video");
      assert.equal(response.status, 400, bad);
      assert.equal(await errorCode(response), "invalid_request");
    }
    assert.equal((await product.jobIds()).length, 2);
  }),
);

Deno.test(
  "Idempotency-Key: a first request that was refused frees the key for the next",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--concurrent-jobs", "1"]);
    const busy = await newJob(product, key.auth, "keeps the key busy");
    const headers = { ...key.auth, "idempotency-key": "retry-me" };
    const refused = await product.upload(headers, "the video");
    assert.equal(refused.status, 429);
    await refused.body?.cancel();

    await product.finish(busy);
    const accepted = await product.upload(headers, "the video");
    assert.equal(accepted.status, 202);
    assert.equal(accepted.headers.get("idempotent-replayed"), null);
    const { id } = await accepted.json();
    const replayed = await product.upload(headers, "the video");
    assert.equal(replayed.headers.get("idempotent-replayed"), "true");
    assert.equal((await replayed.json()).id, id);
  }),
);

Deno.test(
  "Idempotency-Key: a repeat while the first is still uploading is 409 at once; after it, the same job",
  withProduct({
    // Tells the test when a request has made the key busy (upload/idempotency.ts), past the Gateway's steps.
    wrapUploadMetadata: (metadata): MetadataClient => ({
      ...metadata,
      async reserve(name, value, ttlSeconds) {
        const holder = await metadata.reserve(name, value, ttlSeconds);
        if (name.startsWith("idempotency-busy:") && holder === value) keyBusy?.resolve();
        return holder;
      },
    }),
  }, async (product) => {
    const key = await product.createKey();
    const headers = { ...key.auth, "idempotency-key": "slow-one" };
    const held = heldBody("the ", "video");
    keyBusy = Promise.withResolvers<void>();
    const first = product.uploadStream(headers, held.body);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        keyBusy.promise,
        first.then((response) => {
          throw new Error(`the first request ended (${response.status}) before it held its key`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("the first request never held its key")), 5000);
        }),
      ]);
    } catch (error) {
      held.finish(); // not to leave the first request hanging
      throw error;
    } finally {
      clearTimeout(timer);
      keyBusy = undefined;
    }

    const during = await product.upload(headers, "the video");
    assert.equal(during.status, 409);
    assert.equal(await errorCode(during), "conflict");

    held.finish();
    const created = await first;
    assert.equal(created.status, 202);
    const { id } = await created.json();
    const after = await product.upload(headers, "the video");
    assert.equal(after.status, 202);
    assert.equal(after.headers.get("idempotent-replayed"), "true");
    assert.equal((await after.json()).id, id);
    assert.deepEqual(await product.jobIds(), [id]);
  }),
);
/** Resolved once a request of the test above holds its Idempotency-Key. */
let keyBusy: PromiseWithResolvers<void> | undefined;

Deno.test(
  "Idempotency-Key: once its job is deleted, or its first request died mid-upload, a repeat makes a new job",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const headers = { ...key.auth, "idempotency-key": "order-7" };
    const first = await newJob(product, headers, "the video");
    await product.finish(first);
    assert.equal((await deleteJob(product, key, first)).status, 204);

    const again = await product.upload(headers, "the video");
    assert.equal(again.status, 202, await again.clone().text());
    assert.equal(again.headers.get("idempotent-replayed"), null);
    const second: Json = await again.json();
    assert.notEqual(second.id, first);
    // The key names the new job now.
    const replayed = await product.upload(headers, "the video");
    assert.equal(replayed.headers.get("idempotent-replayed"), "true");
    assert.equal((await replayed.json()).id, second.id);

    // A first request that died after reserving its key (the Upload process was killed mid-upload) left the key
    // naming a job that was never made, and nobody busy with it.
    const crashed = { ...key.auth, "idempotency-key": "order-8" };
    await product.metadata.reserve(`idempotency:${key.id}:order-8`, crypto.randomUUID(), 86_400);
    const resent = await product.upload(crashed, "another video");
    assert.equal(resent.status, 202, await resent.clone().text());
    assert.equal(resent.headers.get("idempotent-replayed"), null);
    const third: Json = await resent.json();
    assert.deepEqual((await product.jobIds()).sort(), [second.id, third.id].sort());
  }),
);

Deno.test(
  "Idempotency-Key: the webhook_url is part of the request; another one with the same key is 422",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const headers = { ...key.auth, "idempotency-key": "hooked" };
    const query = "?webhook_url=https%3A%2F%2Fexample.com%2Fa";
    const id = await newJob(product, headers, "the video", query);
    const same = await product.upload(headers, "the video", query);
    assert.equal(same.status, 202);
    assert.equal((await same.json()).id, id);
    for (const other of ["?webhook_url=https%3A%2F%2Fexample.com%2Fb", ""]) {
      const response = await product.upload(headers, "the video", other);
      assert.equal(response.status, 422, other);
      assert.equal(await errorCode(response), "idempotency_key_reused");
    }
  }),
);

/** A public-address client allowed to fetch from 127.0.0.1, and a server there counting its requests. */
function videoServer() {
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    requests++;
    return new Response(`video at ${new URL(request.url).pathname}`, {
      headers: { "content-type": "video/mp4" },
    });
  });
  return {
    url: (path: string) => `http://127.0.0.1:${server.addr.port}${path}`,
    requests: () => requests,
    close: () => server.shutdown(),
  };
}

Deno.test("Idempotency-Key on URL imports: the same URL, options and webhook URL make one job", async () => {
  const videos = videoServer();
  try {
    const publicHttp = createPublicHttp({ allow: parseCidrList("127.0.0.1/32") });
    await withProduct({ publicHttp }, async (product) => {
      const key = await product.createKey();
      const send = (body: Record<string, unknown>, idempotencyKey = "import-1") =>
        Promise.resolve(product.gateway.request("/v1/jobs", {
          method: "POST",
          headers: { ...key.auth, "content-type": "application/json", "idempotency-key": idempotencyKey },
          body: JSON.stringify(body),
        }));
      const body = { url: videos.url("/a.mp4"), bitrate: 128, webhook_url: "https://example.com/hook" };
      const first = await send(body);
      assert.equal(first.status, 202, await first.clone().text());
      assert.equal(first.headers.get("idempotent-replayed"), null);
      const { id } = await first.json();

      const repeat = await send({ ...body });
      assert.equal(repeat.status, 202);
      assert.equal(repeat.headers.get("idempotent-replayed"), "true");
      assert.equal((await repeat.json()).id, id);
      assert.equal(videos.requests(), 1, "a repeat fetches nothing");

      for (
        const other of [
          { ...body, url: videos.url("/b.mp4") },
          { ...body, bitrate: 192 },
          { ...body, webhook_url: "https://example.com/other" },
          { url: body.url, bitrate: 128 },
        ]
      ) {
        const response = await send(other);
        assert.equal(response.status, 422, JSON.stringify(other));
        assert.equal(await errorCode(response), "idempotency_key_reused");
      }
      // An upload under a key an import used is another request too.
      const upload = await product.upload({ ...key.auth, "idempotency-key": "import-1" }, "video at /a.mp4");
      assert.equal(upload.status, 422);
      await upload.body?.cancel();

      assert.equal((await send(body, "import-2")).status, 202);
      assert.equal(videos.requests(), 2);
      assert.equal((await product.jobIds()).length, 2);
    })();
  } finally {
    await videos.close();
  }
});

Deno.test(
  "Expiry: the sweeper removes the files and marks the job expired; download and retry answer 410, GET still works",
  withProduct({ filesTtlMs: 1 }, async (product) => {
    const key = await product.createKey();
    const done = await newJob(product, key.auth, "done video");
    await product.finish(done);
    const failed = await newJob(product, key.auth, "failed video");
    await product.fail(failed);
    const queued = await newJob(product, key.auth, "queued video");
    const before: Json = await getJob(product, key, done);
    assert.ok(Date.parse(before.expiresAt) - Date.parse(before.createdAt) <= 1);
    await new Promise((resolve) => setTimeout(resolve, 10));

    const expired = await product.sweeper.runOnce();
    assert.deepEqual(expired.sort(), [done, failed, queued].sort());
    for (const id of [done, failed, queued]) {
      assert.equal(await product.stored(jobKeys(id).inputKey), false);
      assert.equal(await product.stored(jobKeys(id).outputKey), false);
      const job: Json = await getJob(product, key, id);
      assert.ok(job.expiredAt, id);
      assert.equal(job.links.download, undefined);
      const download = await product.gateway.request(`/v1/jobs/${id}/download`, { headers: key.auth });
      assert.equal(download.status, 410, id);
      assert.equal(await errorCode(download), "expired");
    }
    assert.equal((await getJob(product, key, queued)).status, "cancelled");
    for (const id of [failed, done]) {
      const retry = await retryJob(product, key, id);
      assert.equal(retry.status, 410, id);
      assert.equal(await errorCode(retry), "expired");
    }
    // A second pass has nothing to do; an expired job can still be deleted.
    assert.deepEqual(await product.sweeper.runOnce(), []);
    assert.equal((await deleteJob(product, key, done)).status, 204);
    assert.deepEqual((await product.jobIds()).sort(), [failed, queued].sort());
  }),
);

Deno.test(
  "Expiry of a shared MP3: it stays until the last job using it expires",
  withProduct({ filesTtlMs: 60_000 }, async (product) => {
    const key = await product.createKey();
    const first = await newJob(product, key.auth, "shared video");
    await product.finish(first, "shared mp3");
    await new Promise((resolve) => setTimeout(resolve, 20));
    const response = await product.upload(key.auth, "shared video");
    const cached: Json = await response.json();
    assert.equal(cached.cached, true);
    const mp3 = jobKeys(first).outputKey;

    const firstExpiry = Date.parse((await getJob(product, key, first)).expiresAt);
    const at = (ms: number) =>
      createSweeper({ blobs: product.blobs, metadata: product.metadata, now: () => new Date(ms) });
    assert.deepEqual(await at(firstExpiry + 1).runOnce(), [first]);
    assert.ok(await product.stored(mp3));
    const download = await product.gateway.request(`/v1/jobs/${cached.id}/download`, { headers: key.auth });
    assert.equal(download.status, 200);
    assert.equal(await download.text(), "shared mp3");

    assert.deepEqual(await at(Date.parse(cached.expiresAt) + 1).runOnce(), [cached.id]);
    assert.equal(await product.stored(mp3), false);
  }),
);

Deno.test(
  "The sweeper cancels an expiring converting job and tells the workers, and removes the MP3 it may have left",
  withProduct({ filesTtlMs: 1 }, async (product) => {
    const key = await product.createKey();
    const converting = await newJob(product, key.auth, "converting video");
    await product.event(converting, { type: "job.progress", progress: 0.5 });
    const done = await newJob(product, key.auth, "done video");
    await product.finish(done);
    // The worker's MP3 of the converting job, stored just before its cancel.
    await product.blobs.put(jobKeys(converting).outputKey, ReadableStream.from([new Uint8Array([1])]));
    const heard: string[] = [];
    const subscription = await product.cancels.subscribe((message) => void heard.push(message.jobId));
    try {
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual((await product.sweeper.runOnce()).sort(), [converting, done].sort());
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(heard, [converting], "only the unfinished job is cancelled");
      assert.equal((await getJob(product, key, converting)).status, "cancelled");
      assert.equal(await product.stored(jobKeys(converting).outputKey), false);
      assert.equal(await product.stored(jobKeys(converting).inputKey), false);
    } finally {
      await subscription.close();
    }
  }),
);

Deno.test(
  "A sweeper pass that dies after Metadata's expire leaves no orphan file: the next pass removes them",
  withProduct({ filesTtlMs: 60_000 }, async (product) => {
    const key = await product.createKey();
    const first = await newJob(product, key.auth, "shared video");
    await product.finish(first, "shared mp3");
    const own = await newJob(product, key.auth, "own video");
    await product.finish(own, "own mp3");
    await new Promise((resolve) => setTimeout(resolve, 20));
    const cached: Json = await (await product.upload(key.auth, "shared video")).json();
    assert.equal(cached.cached, true);
    const mp3 = jobKeys(first).outputKey;

    const latest = Math.max(
      ...await Promise.all(
        [first, own].map(async (id) => Date.parse((await getJob(product, key, id)).expiresAt)),
      ),
    );
    const at = (ms: number, metadata = product.metadata) =>
      createSweeper({ blobs: product.blobs, metadata, now: () => new Date(ms) });
    // The Upload process dies right after Metadata answered, before any file is removed.
    const dying: MetadataClient = {
      ...product.metadata,
      async expireJob(id, options) {
        await product.metadata.expireJob(id, options);
        throw new Error("the Upload process died here");
      },
    };
    await assert.rejects(at(latest + 1, dying).runOnce(), /died here/);
    await assert.rejects(at(latest + 1, dying).runOnce(), /died here/, "it dies again, on the same job");

    assert.deepEqual((await at(latest + 1).runOnce()).sort(), [first, own].sort());
    for (const id of [first, own]) {
      assert.ok((await getJob(product, key, id)).expiredAt, id);
      assert.equal(await product.stored(jobKeys(id).inputKey), false, id);
    }
    assert.equal(await product.stored(jobKeys(own).outputKey), false, "the orphan MP3 was removed");
    // The shared MP3 was let go of by `first` once, however often its expiry began: `cached` still has it.
    assert.ok(await product.stored(mp3));
    const download = await product.gateway.request(`/v1/jobs/${cached.id}/download`, { headers: key.auth });
    assert.equal(download.status, 200);
    assert.equal(await download.text(), "shared mp3");
    assert.deepEqual(await at(Date.parse(cached.expiresAt) + 1).runOnce(), [cached.id]);
    assert.equal(await product.stored(mp3), false);
  }),
);

Deno.test(
  "The sweeper leaves alone a job retried (and given a later expiry) after it was listed",
  withProduct({ filesTtlMs: 1 }, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth, "fails, then is retried");
    await product.fail(id);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const metadata: MetadataClient = {
      ...product.metadata,
      async expiring(before, limit) {
        const found = await product.metadata.expiring(before, limit);
        await product.metadata.retryJob(id, { owner: key.id }, {
          keepUntil: new Date(Date.now() + 60_000).toISOString(),
        });
        return found;
      },
    };
    assert.deepEqual(await createSweeper({ blobs: product.blobs, metadata }).runOnce(), []);
    const job: Json = await getJob(product, key, id);
    assert.equal(job.status, "queued");
    assert.equal(job.expiredAt, undefined);
    assert.ok(await product.stored(jobKeys(id).inputKey));
  }),
);

Deno.test(
  "A job deleted while the sweeper runs does not stop the pass",
  withProduct({ filesTtlMs: 1 }, async (product) => {
    const key = await product.createKey();
    const ids = [await newJob(product, key.auth, "one"), await newJob(product, key.auth, "two")];
    await new Promise((resolve) => setTimeout(resolve, 10));
    // The sweeper learns of both, then one is deleted before it is expired.
    const metadata: MetadataClient = {
      ...product.metadata,
      async expiring(before, limit) {
        const found = await product.metadata.expiring(before, limit);
        await product.store.remove(ids[0]);
        return found;
      },
    };
    const sweeper = createSweeper({ blobs: product.blobs, metadata });
    const expired = await sweeper.runOnce().catch((error) => error);
    assert.ok(Array.isArray(expired), `the pass failed: ${expired}`);
    assert.deepEqual(expired, [ids[1]]);
    assert.ok((await getJob(product, key, ids[1])).expiredAt);
  }),
);

Deno.test(
  "A retry counts against the key's jobs at once like a new job",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--concurrent-jobs", "1"]);
    const failed = await newJob(product, key.auth, "fails");
    await product.fail(failed);
    const running = await newJob(product, key.auth, "runs");
    const refused = await retryJob(product, key, failed);
    assert.equal(refused.status, 429);
    assert.equal(await errorCode(refused), "quota_exceeded");
    assert.equal((await getJob(product, key, failed)).status, "failed");

    await product.finish(running);
    const retried = await retryJob(product, key, failed);
    assert.equal(retried.status, 202);
    assert.equal((await retried.json()).status, "queued");
  }),
);
