/**
 * The client API's access rules, through the real Gateway, Upload and Metadata apps in one process (see
 * gateway/testing/in_process.ts): API keys, each key seeing only its own jobs, the rate limit and the quotas,
 * open mode, download links, and the per-key content cache.
 */
import assert from "node:assert/strict";
import { jobKeys } from "@vmp3/shared";
import type { MetadataClient } from "@vmp3/metadata";
import { runKeysCommand } from "../metadata/keys_cli.ts";
import { heldBody, type Product, withProduct } from "./testing/in_process.ts";

const json = { "content-type": "application/json" };

async function errorCode(response: Response): Promise<string> {
  return (await response.json()).error.code;
}

/** Uploads as `auth` and answers the new job's id (the upload must be accepted). */
async function newJob(
  product: Product,
  auth: Record<string, string>,
  bytes = "video bytes",
): Promise<string> {
  const response = await product.upload(auth, bytes);
  assert.equal(response.status, 202, await response.clone().text());
  return (await response.json()).id;
}

Deno.test(
  "A call without a key is 401 with WWW-Authenticate; malformed, unknown, wrong-secret and revoked keys are 401",
  withProduct({}, async (product) => {
    const noKey = await product.gateway.request("/v1/jobs");
    assert.equal(noKey.status, 401);
    assert.match(noKey.headers.get("www-authenticate") ?? "", /^Bearer realm="vmp3"/);
    assert.equal(await errorCode(noKey), "unauthorized");

    const key = await product.createKey();
    const [, id, secret] = key.token.split("_");
    const wrongSecret = `vmp3_${id}_${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`;
    const unknown = `vmp3_${"z".repeat(12)}_${secret}`;
    for (
      const authorization of [
        `Bearer ${wrongSecret}`,
        `Bearer ${unknown}`,
        "Bearer not-a-token",
        `Basic ${btoa("user:pass")}`,
        `Bearer ${key.token} extra`,
        "Bearer",
        "",
      ]
    ) {
      const response = await product.gateway.request("/v1/jobs", { headers: { authorization } });
      assert.equal(response.status, 401, authorization);
      assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer/, authorization);
      assert.equal(await errorCode(response), "unauthorized");
    }

    const ok = await product.gateway.request("/v1/jobs", { headers: key.auth });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();

    const revoked = await runKeysCommand(product.keys, ["revoke", key.id]);
    assert.equal(revoked.code, 0);
    const after = await product.gateway.request("/v1/jobs", { headers: key.auth });
    assert.equal(after.status, 401);
    assert.equal(await errorCode(after), "unauthorized");
  }),
);

Deno.test(
  "Another key's job is 404 on GET, DELETE, retry, events and download; GET /v1/jobs lists only the caller's",
  withProduct({}, async (product) => {
    const a = await product.createKey();
    const b = await product.createKey();
    const doneJob = await newJob(product, a.auth, "first video");
    await product.finish(doneJob);
    const failedJob = await newJob(product, a.auth, "second video");
    await product.fail(failedJob);
    const bJob = await newJob(product, b.auth, "b's video");

    for (const jobId of [doneJob, failedJob]) {
      for (
        const [method, path] of [
          ["GET", `/v1/jobs/${jobId}`],
          ["GET", `/v1/jobs/${jobId}/events`],
          ["GET", `/v1/jobs/${jobId}/download`],
          ["POST", `/v1/jobs/${jobId}/retry`],
          ["DELETE", `/v1/jobs/${jobId}`],
        ]
      ) {
        const response = await product.gateway.request(path, { method, headers: b.auth });
        assert.equal(response.status, 404, `${method} ${path}`);
        assert.equal(await errorCode(response), "not_found");
      }
    }
    // Nothing of A's was touched by B's attempts.
    const stillDone = await product.gateway.request(`/v1/jobs/${doneJob}`, { headers: a.auth });
    assert.equal((await stillDone.json()).status, "done");
    assert.ok(await product.stored(jobKeys(doneJob).outputKey));
    const stillFailed = await product.gateway.request(`/v1/jobs/${failedJob}`, { headers: a.auth });
    assert.equal((await stillFailed.json()).status, "failed");

    const listA = await (await product.gateway.request("/v1/jobs", { headers: a.auth })).json();
    assert.deepEqual(listA.jobs.map((job: { id: string }) => job.id).sort(), [doneJob, failedJob].sort());
    const listB = await (await product.gateway.request("/v1/jobs", { headers: b.auth })).json();
    assert.deepEqual(listB.jobs.map((job: { id: string }) => job.id), [bJob]);
    // The owner is internal: never shown.
    assert.equal(listA.jobs[0].owner, undefined);
  }),
);

Deno.test(
  "A key of 3 requests a minute gets 3 answers then 429 rate_limited with Retry-After and RateLimit headers",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--requests-per-minute", "3"]);
    const remaining: string[] = [];
    for (let i = 0; i < 3; i++) {
      // Errors count too, and carry the headers: the second call is a 404.
      const path = i === 1 ? `/v1/jobs/${crypto.randomUUID()}` : "/v1/jobs";
      const response = await product.gateway.request(path, { headers: key.auth });
      assert.equal(response.status, i === 1 ? 404 : 200);
      await response.body?.cancel();
      assert.equal(response.headers.get("ratelimit-limit"), "3");
      assert.match(response.headers.get("ratelimit-reset") ?? "", /^[1-9]\d*$/);
      remaining.push(response.headers.get("ratelimit-remaining") ?? "");
    }
    assert.deepEqual(remaining, ["2", "1", "0"]);

    const refused = await product.gateway.request("/v1/jobs", { headers: key.auth });
    assert.equal(refused.status, 429);
    assert.equal(await errorCode(refused), "rate_limited");
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, String(retryAfter));
    assert.equal(refused.headers.get("ratelimit-limit"), "3");
    assert.equal(refused.headers.get("ratelimit-remaining"), "0");
    assert.equal(refused.headers.get("ratelimit-reset"), String(retryAfter));

    // A refused upload stores nothing, and another key is not affected.
    const upload = await product.upload(key.auth);
    assert.equal(upload.status, 429);
    await upload.body?.cancel();
    assert.deepEqual(await product.jobIds(), []);
    const other = await product.createKey(["--requests-per-minute", "3"]);
    const fine = await product.gateway.request("/v1/jobs", { headers: other.auth });
    assert.equal(fine.status, 200);
    await fine.body?.cancel();
  }),
);

Deno.test(
  "concurrentJobs 1: a second upload while the first is queued is 429 quota_exceeded and stores nothing",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--concurrent-jobs", "1"]);
    const first = await newJob(product, key.auth, "first video");

    const refused = await product.upload(key.auth, "second video");
    assert.equal(refused.status, 429);
    assert.equal(await errorCode(refused), "quota_exceeded");
    assert.deepEqual(await product.jobIds(), [first]);
    assert.deepEqual(await product.blobs.list("inputs/"), [jobKeys(first).inputKey]);

    // Converting still counts; done does not.
    await product.event(first, { type: "job.started", duration: 1 });
    const stillRefused = await product.upload(key.auth, "second video");
    assert.equal(stillRefused.status, 429);
    await stillRefused.body?.cancel();

    await product.finish(first);
    const accepted = await newJob(product, key.auth, "second video");
    assert.notEqual(accepted, first);
    assert.equal((await product.jobIds()).length, 2);
  }),
);

Deno.test(
  "concurrentJobs 1: of 3 uploads at once, exactly one is accepted, even when all are admitted before any is recorded",
  async () => {
    // Each job is recorded only once the three admissions are settled: the widest gap between count and insert.
    let settled = 0;
    let allSettled: () => void = () => {};
    const admissions = new Promise<void>((resolve) => allSettled = resolve);
    const wrap = (metadata: MetadataClient): MetadataClient => ({
      ...metadata,
      admit: (...args) =>
        metadata.admit(...args).finally(() => {
          if (++settled === 3) allSettled();
        }),
      async createJob(job) {
        await Promise.race([admissions, new Promise((resolve) => setTimeout(resolve, 500))]);
        return await metadata.createJob(job);
      },
    });
    await withProduct({ wrapUploadMetadata: wrap }, async (product) => {
      const key = await product.createKey(["--concurrent-jobs", "1"]);
      const responses = await Promise.all(
        ["one", "two", "three"].map((name) => product.upload(key.auth, `video ${name}`)),
      );
      const statuses = responses.map((response) => response.status);
      const bodies = await Promise.all(responses.map((response) => response.json()));
      assert.deepEqual([...statuses].sort(), [202, 429, 429], JSON.stringify(bodies));
      for (const [i, body] of bodies.entries()) {
        if (statuses[i] === 429) assert.equal(body.error.code, "quota_exceeded");
      }
      const accepted = bodies[statuses.indexOf(202)].id;
      assert.deepEqual(await product.jobIds(), [accepted]);
      assert.deepEqual(await product.blobs.list("inputs/"), [jobKeys(accepted).inputKey]);

      // The refused ones held no slot after: once the job is done, the next upload is accepted at once.
      await product.finish(accepted);
      await newJob(product, key.auth, "video four");
    })();
  },
);

Deno.test(
  "bytesPerDay: an upload that would pass the day's bytes is 429 quota_exceeded and stores nothing",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--bytes-per-day", "20"]);
    const first = await newJob(product, key.auth, "0123456789"); // 10 of 20 bytes
    const refused = await product.upload(key.auth, "0123456789a"); // 21 > 20
    assert.equal(refused.status, 429);
    assert.equal(await errorCode(refused), "quota_exceeded");
    assert.deepEqual(await product.jobIds(), [first]);
    assert.deepEqual(await product.blobs.list("inputs/"), [jobKeys(first).inputKey]);
    // Exactly up to the limit is fine.
    await newJob(product, key.auth, "abcdefghij");
  }),
);

/** `response`, or a failure if it has not come within `ms`. */
async function within<T>(ms: number, response: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([response, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test(
  "Over quota, an upload is refused at once, before its body is read: jobs at once, and declared bytes per day",
  withProduct({}, async (product) => {
    const busy = await product.createKey(["--concurrent-jobs", "1"]);
    await newJob(product, busy.auth, "keeps the key busy");
    const held = heldBody("the start of a video", " that never comes");
    try {
      const refused = await within(1000, product.uploadStream(busy.auth, held.body), "jobs at once");
      assert.equal(refused.status, 429);
      assert.equal(await errorCode(refused), "quota_exceeded");
    } finally {
      held.finish();
    }

    const small = await product.createKey(["--bytes-per-day", "20"]);
    await newJob(product, small.auth, "0123456789"); // 10 of 20 bytes
    const large = heldBody("0123456789", "0123456789a");
    try {
      const refused = await within(
        1000,
        product.uploadStream({ ...small.auth, "content-length": "21" }, large.body),
        "declared bytes",
      );
      assert.equal(refused.status, 429);
      assert.equal(await errorCode(refused), "quota_exceeded");
    } finally {
      large.finish();
    }
    // Up to the limit is still read, stored and accepted; the exact check after storing stays.
    const fits = heldBody("01234", "56789");
    const accepted = product.uploadStream({ ...small.auth, "content-length": "10" }, fits.body);
    fits.finish();
    assert.equal((await accepted).status, 202);
    const over = await product.upload(small.auth, "x"); // nothing declared: refused once stored
    assert.equal(over.status, 429);
    await over.body?.cancel();
    assert.equal((await product.jobIds()).length, 3);
  }),
);

Deno.test(
  "A done job's links.download works without a key until it expires, only for its job, and not if tampered",
  withProduct({ linkSeconds: 2 }, async (product) => {
    const key = await product.createKey();
    const id = await newJob(product, key.auth, "video one");
    const other = await newJob(product, key.auth, "video two");
    await product.finish(id, "the mp3 of one");
    await product.finish(other, "the mp3 of two");

    const job = await (await product.gateway.request(`/v1/jobs/${id}`, { headers: key.auth })).json();
    const link: string = job.links.download;
    assert.match(link, new RegExp(`^/v1/jobs/${id}/download\\?expires=\\d+&sig=[\\w-]+$`));

    const followed = await product.gateway.request(link);
    assert.equal(followed.status, 200);
    assert.equal(await followed.text(), "the mp3 of one");
    // No key was used: no rate-limit headers.
    assert.equal(followed.headers.get("ratelimit-limit"), null);

    // The same expiry and signature for another job of the same key.
    const forOther = await product.gateway.request(link.replace(id, other));
    assert.equal(forOther.status, 401);
    assert.equal(await errorCode(forOther), "unauthorized");

    const url = new URL(link, "http://x");
    const sig = url.searchParams.get("sig")!;
    const tampered = `${url.pathname}?expires=${url.searchParams.get("expires")}&sig=${
      sig[0] === "A" ? "B" : "A"
    }${sig.slice(1)}`;
    assert.equal((await product.gateway.request(tampered)).status, 401);
    const later = `${url.pathname}?expires=${Number(url.searchParams.get("expires")) + 60}&sig=${sig}`;
    assert.equal((await product.gateway.request(later)).status, 401);
    assert.equal((await product.gateway.request(url.pathname)).status, 401);
    // The link lets its holder download, nothing more.
    const read = await product.gateway.request(`/v1/jobs/${id}?${url.searchParams}`);
    assert.equal(read.status, 401);
    await read.body?.cancel();

    // Expired: waits until the link's time is past.
    const expiresMs = Number(url.searchParams.get("expires")) * 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresMs - Date.now()) + 20));
    const expired = await product.gateway.request(link);
    assert.equal(expired.status, 401);
    assert.equal(await errorCode(expired), "unauthorized");

    // A queued job shows no download link.
    const queued = await newJob(product, key.auth, "video three");
    const queuedJob = await (await product.gateway.request(`/v1/jobs/${queued}`, { headers: key.auth }))
      .json();
    assert.equal(queuedJob.links.download, undefined);
    assert.equal(queuedJob.links.self, `/v1/jobs/${queued}`);
  }),
);

Deno.test(
  "Open mode lets a call without a key in; its jobs are not visible to a key, nor a key's to it",
  withProduct({ auth: "open" }, async (product) => {
    const open = await newJob(product, {}, "anonymous video");
    const key = await product.createKey();
    const owned = await newJob(product, key.auth, "keyed video");

    const read = await product.gateway.request(`/v1/jobs/${open}`);
    assert.equal(read.status, 200);
    assert.equal((await read.json()).id, open);
    assert.equal((await product.gateway.request(`/v1/jobs/${open}`, { headers: key.auth })).status, 404);
    assert.equal((await product.gateway.request(`/v1/jobs/${owned}`)).status, 404);

    const anonymousList = await (await product.gateway.request("/v1/jobs")).json();
    assert.deepEqual(anonymousList.jobs.map((job: { id: string }) => job.id), [open]);
    const keyList = await (await product.gateway.request("/v1/jobs", { headers: key.auth })).json();
    assert.deepEqual(keyList.jobs.map((job: { id: string }) => job.id), [owned]);

    // A key given in open mode is still checked.
    const bad = await product.gateway.request("/v1/jobs", { headers: { authorization: "Bearer nope" } });
    assert.equal(bad.status, 401);
    await bad.body?.cancel();
  }),
);

Deno.test(
  "The content cache is per key: the same bytes and options from another key are converted again",
  withProduct({}, async (product) => {
    const a = await product.createKey();
    const b = await product.createKey();
    const first = await newJob(product, a.auth, "same bytes");
    await product.finish(first);

    // The same key again: done at once from the cache.
    const again = await product.upload(a.auth, "same bytes");
    assert.equal(again.status, 202);
    const againJob = await again.json();
    assert.equal(againJob.status, "done");
    assert.equal(againJob.cached, true);

    const other = await product.upload(b.auth, "same bytes");
    assert.equal(other.status, 202);
    const otherJob = await other.json();
    assert.equal(otherJob.status, "queued");
    assert.equal(otherJob.cached, undefined);
    assert.ok(await product.stored(jobKeys(otherJob.id).inputKey));
  }),
);

Deno.test(
  "Metadata's /auth refuses a token body that is not a string, and never answers the key's hash",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const { key: info } = await product.metadata.authenticate(key.token);
    assert.deepEqual(Object.keys(info).sort(), ["id", "limits", "name"]);
    await assert.rejects(product.metadata.authenticate(""), /not valid/);
    const response = await product.gateway.request("/v1/jobs", {
      headers: { ...json, authorization: `Bearer ${key.token.toUpperCase()}` },
    });
    assert.equal(response.status, 401);
    await response.body?.cancel();
  }),
);

Deno.test(
  "RateLimit headers are on answers relayed from Upload over HTTP too (their headers come immutable)",
  withProduct({ uploadOverHttp: true }, async (product) => {
    const key = await product.createKey(["--requests-per-minute", "10", "--concurrent-jobs", "1"]);
    const created = await product.upload(key.auth, "video");
    assert.equal(created.status, 202);
    const { id } = await created.json();
    assert.equal(created.headers.get("ratelimit-remaining"), "9");

    const refused = await product.upload(key.auth, "another video"); // relayed as Upload answered it
    assert.equal(refused.status, 429);
    assert.equal(await errorCode(refused), "quota_exceeded");
    assert.equal(refused.headers.get("ratelimit-limit"), "10");

    const cancelled = await product.gateway.request(`/v1/jobs/${id}`, {
      method: "DELETE",
      headers: key.auth,
    });
    assert.equal(cancelled.status, 200);
    assert.equal((await cancelled.json()).status, "cancelled");
    assert.equal(cancelled.headers.get("ratelimit-limit"), "10");
    assert.match(cancelled.headers.get("ratelimit-remaining") ?? "", /^\d+$/);
  }),
);
