/**
 * Faults, end to end in real mode: RabbitMQ, Redis and s3rver started by `deno task test`
 * (scripts/test_servers.sh), stopped and started again mid-flight, and the four services as processes with their
 * real permission flags. Each test drives the product through the Gateway's public API and proves that nothing
 * accepted is lost, that clients get a clear answer quickly, and that no conversion runs twice where it must not.
 *
 * The media is small (lavfi), and the retry waits short (CONVERT_RETRY_DELAYS_SECONDS), to keep them quick.
 */
import assert from "node:assert/strict";
import { makeMedia } from "../convert/testing/media.ts";
import { TEST_CRASH_EXIT_CODE } from "../convert/main.ts";
import { startProduct } from "./product.ts";
import { assertError, postFile, processesMatching, waitForJob, waitForNoProcess } from "./helpers.ts";
import {
  convertWorkers,
  getJob,
  jobBecomes,
  linesWith,
  logOnceWith,
  type Product,
  servers,
  sleep,
  until,
  type Workers,
} from "./faults.ts";

/** Seconds of silent FLAC whose conversion takes about 3 s here (FFmpeg runs at about 170× real time). */
const FLAC_3S = 500;

/** Runs `fn` with the product (no worker: each test starts its own), a media folder, and cleans up. */
async function withProduct(
  fn: (t: { product: Product; workers: Workers; media: string }) => Promise<void>,
): Promise<void> {
  const started = performance.now();
  const media = await Deno.makeTempDir({ prefix: "vmp3-faults-" });
  const product = await startProduct(0).catch(async (error) => {
    await Deno.remove(media, { recursive: true });
    throw error;
  });
  const workers = convertWorkers(product);
  try {
    await fn({ product, workers, media });
  } catch (error) {
    console.error(await product.logs());
    console.error(await workers.logs());
    throw error;
  } finally {
    await workers.stop();
    await product.stop();
    await Deno.remove(media, { recursive: true });
    console.log(`  (${Math.round(performance.now() - started)} ms)`);
  }
}

/** POSTs `path` to /v1/jobs (with `query`), expects a 202, and returns the job's id. */
async function submit(base: string, path: string, filename: string, query = ""): Promise<string> {
  const response = await postFile(`${base}/v1/jobs${query}`, path, filename);
  const body = await response.json();
  assert.equal(response.status, 202, JSON.stringify(body));
  return body.id;
}

/** Waits until job `id` is converting and FFmpeg runs in `workDir`. */
async function converting(base: string, id: string, workDir: string): Promise<void> {
  await jobBecomes(base, id, "converting", 30_000);
  // The job's own work folder (`${workDir}/${id}-…`) in ffmpeg's arguments: the worker's own command line names
  // both "ffmpeg" (--allow-run) and workDir (--allow-read), so matching those alone would find the worker itself.
  await until("FFmpeg to run", () => processesMatching("ffmpeg", `${workDir}/${id}-`).length > 0, 15_000, 20);
}

const outputKey = (id: string) => `outputs/${id}.mp3`;

Deno.test("faults: SIGTERM mid-conversion with time to finish: the worker takes no new task, finishes the one in hand, and exits 0", async () => {
  await withProduct(async ({ product, workers, media }) => {
    const worker = await workers.start("a", { CONVERT_SHUTDOWN_GRACE_SECONDS: "60" });
    const first = await submit(
      product.url,
      await makeMedia(media, "flac", { seconds: FLAC_3S }),
      "first.flac",
    );
    await converting(product.url, first, workers.workDir("a"));
    const second = await submit(product.url, await makeMedia(media, "mp4", { seconds: 1 }), "second.mp4");

    const sent = performance.now();
    worker.process.kill("SIGTERM");
    const status = await worker.process.status;
    const took = performance.now() - sent;
    assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}`);
    assert.ok(took < 30_000, `it took ${took} ms to exit`);
    // No other worker ran: the job in hand was finished by the stopping worker.
    await jobBecomes(product.url, first, "done", 10_000);
    assert.deepEqual(await waitForNoProcess(["ffmpeg", workers.workDir("a")]), [], "no FFmpeg outlives it");
    const log = await workers.log("a");
    assert.equal(linesWith(log, `job ${second}`), 0, "the stopping worker took no new task");
    assert.equal((await getJob(product.url, second)).body.status, "queued");

    await workers.start("b");
    await jobBecomes(product.url, second, "done");
    const logs = await workers.logs();
    assert.equal(linesWith(logs, `job ${first}: task received`), 1, "delivered once");
    assert.equal(linesWith(logs, `job ${first}: done`), 1, "converted once");
    assert.deepEqual(
      (await product.storage.list("outputs/")).sort(),
      [outputKey(first), outputKey(second)].sort(),
    );
    console.log(`  SIGTERM to exit 0: ${Math.round(took)} ms (finished the task in hand)`);
  });
});

Deno.test("faults: SIGTERM mid-conversion without time to finish: FFmpeg is stopped, the task handed back, and another worker converts it once", async () => {
  await withProduct(async ({ product, workers, media }) => {
    const grace = 2;
    const worker = await workers.start("a", { CONVERT_SHUTDOWN_GRACE_SECONDS: String(grace) });
    const source = await makeMedia(media, "flac", { seconds: 2 * FLAC_3S });
    const id = await submit(product.url, source, "long.flac");
    await converting(product.url, id, workers.workDir("a"));

    const sent = performance.now();
    worker.process.kill("SIGTERM");
    const status = await worker.process.status;
    const took = performance.now() - sent;
    assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}`);
    assert.ok(took < grace * 1000 + 3000, `it took ${took} ms to exit with a grace of ${grace} s`);
    assert.deepEqual(await waitForNoProcess(["ffmpeg", workers.workDir("a")]), [], "FFmpeg was stopped");
    const log = await workers.log("a");
    assert.match(log, new RegExp(`job ${id}: stopped and handed back`));
    const job = await getJob(product.url, id);
    assert.equal(job.body.status, "converting", "handed back, not failed");

    await workers.start("b");
    await jobBecomes(product.url, id, "done", 60_000);
    const logs = await logOnceWith(() => workers.logs(), `job ${id}: done`);
    assert.equal(linesWith(logs, `job ${id}: task received`), 2, "delivered to a, then to b");
    assert.equal(linesWith(logs, `job ${id}: task received (delivered before)`), 1);
    assert.equal(linesWith(logs, `job ${id}: done`), 1, "converted once");
    assert.deepEqual(await product.storage.list("outputs/"), [outputKey(id)]);
    console.log(`  SIGTERM to exit 0: ${Math.round(took)} ms (handed the task back)`);
  });
});

Deno.test("faults: RabbitMQ restarted while jobs are submitted: every 202 ends done, the outage answers 503, services reconnect by themselves", async () => {
  await withProduct(async ({ product, workers, media }) => {
    await workers.start("a", { CONVERT_RETRY_DELAYS_SECONDS: "0.5,1,1,2,2,3,3,5,5" });
    await workers.start("b", { CONVERT_RETRY_DELAYS_SECONDS: "0.5,1,1,2,2,3,3,5,5" });
    const clip = await Deno.readFile(await makeMedia(media, "mp4", { seconds: 1 }));
    type Result = { status: number; code?: string; id?: string; phase: string; ms: number };
    const results: Result[] = [];
    let phase = "before";
    let stopping = false;
    const submitter = async (n: number) => {
      for (let i = 0; !stopping; i++) {
        const form = new FormData();
        form.append("file", new File([clip], `s${n}-${i}.mp4`));
        const at = phase;
        const sent = performance.now();
        // A title of its own, so that no submission is done from the content cache.
        const response = await fetch(`${product.url}/v1/jobs?title=s${n}-${i}`, {
          method: "POST",
          body: form,
        });
        const body = await response.json();
        results.push({
          status: response.status,
          code: body?.error?.code,
          id: body?.id,
          phase: `${at}->${phase}`,
          ms: Math.round(performance.now() - sent),
        });
        await sleep(100);
      }
    };
    const submitters = [1, 2, 3, 4].map(submitter);
    try {
      await until(
        "jobs accepted before the outage",
        () => results.filter((r) => r.status === 202).length >= 4,
      );
      phase = "outage";
      await servers.stopRabbit();
      await until(
        "a submission refused during the outage",
        () => results.some((r) => r.status === 503),
        30_000,
      );
      await servers.startRabbit();
      phase = "after";
      await until(
        "jobs accepted after the restart",
        () => results.filter((r) => r.status === 202 && r.phase === "after->after").length >= 4,
        60_000,
        100,
      );
    } finally {
      stopping = true;
      await Promise.all(submitters);
    }
    for (const r of results) {
      assert.ok(
        r.status === 202 || (r.status === 503 && r.code === "service_unavailable"),
        `an answer other than 202 or 503 service_unavailable: ${JSON.stringify(r)}`,
      );
    }
    const accepted = results.filter((r) => r.status === 202).map((r) => r.id!);
    for (const id of accepted) await jobBecomes(product.url, id, "done", 60_000);
    const outputs = new Set(await product.storage.list("outputs/"));
    for (const id of accepted) assert.ok(outputs.has(outputKey(id)), `job ${id} has its MP3`);
    const refused = results.filter((r) => r.status === 503);
    console.log(
      `  ${results.length} submissions: ${accepted.length} accepted (all done), ${refused.length} refused ` +
        `with 503 (slowest ${Math.max(...refused.map((r) => r.ms))} ms)`,
    );
  });
});

Deno.test("faults: Redis stopped: status reads answer 503 within a second, and the events of meanwhile are applied once it is back", async () => {
  await withProduct(async ({ product, workers, media }) => {
    await workers.start("a");
    const source = await makeMedia(media, "flac", { seconds: FLAC_3S / 3 });
    const id = await submit(product.url, source, "clip.flac");
    await servers.stopRedis();
    let resumed = false;
    try {
      const timings: number[] = [];
      const refusal = await postFile(`${product.url}/v1/jobs`, source, "during.flac");
      await assertError(refusal, 503, "service_unavailable");
      // The worker converts meanwhile and reports started, progress and done.
      const deadline = Date.now() + 30_000;
      while (timings.length < 10 || !(await workers.log("a")).includes(`job ${id}: done`)) {
        assert.ok(Date.now() < deadline, "the worker did not finish while Redis was down");
        const sent = performance.now();
        const response = await fetch(`${product.url}/v1/jobs/${id}`);
        timings.push(performance.now() - sent);
        await assertError(response, 503, "service_unavailable");
        await sleep(100);
      }
      const slowest = Math.max(...timings);
      assert.ok(slowest < 1000, `a status read took ${slowest} ms`);
      await servers.resumeRedis();
      resumed = true;
      const job = await jobBecomes(product.url, id, "done", 30_000);
      assert.equal(
        (job.output as { key?: string } | undefined)?.key,
        undefined,
        "the storage key stays internal",
      );
      console.log(`  ${timings.length} status reads during the outage, slowest ${Math.round(slowest)} ms`);
    } finally {
      if (!resumed) await servers.resumeRedis();
    }
  });
});

Deno.test("faults: S3 stopped mid-upload: the client gets 503 service_unavailable and no object is left as if complete", async () => {
  await withProduct(async ({ product }) => {
    let sent = 0;
    let stopped = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 24 * 1024 * 1024) return controller.close();
        if (sent >= 12 * 1024 * 1024 && !stopped) {
          // The first 8 MiB part is on its way to S3 (or there) when the store goes away.
          stopped = true;
          await servers.stopS3();
        }
        sent += 256 * 1024;
        controller.enqueue(new Uint8Array(256 * 1024));
      },
    });
    let started = false;
    try {
      const response = await fetch(`${product.url}/v1/jobs?filename=big.mp4`, {
        method: "POST",
        headers: { "content-type": "video/mp4" },
        body,
      });
      assert.ok(stopped, "S3 was stopped mid-upload");
      await assertError(response, 503, "service_unavailable");
      await servers.startS3();
      started = true;
      // The upload was never completed: no object is listed. (Its multipart upload is aborted, again once the
      // store is back if need be: adapters/s3_blob_store_test.ts; s3rver itself cannot abort one.)
      assert.deepEqual(await product.storage.list(""), [], "no object, complete or not, is listed");
    } finally {
      if (stopped && !started) await servers.startS3();
    }
  });
});

Deno.test("faults: S3 stopped mid-conversion: the worker keeps the task and tries again with backoff, and the job ends done once S3 is back", async () => {
  await withProduct(async ({ product, workers, media }) => {
    const source = await makeMedia(media, "flac", { seconds: FLAC_3S });
    const first = await submit(product.url, source, "first.flac");
    const second = await submit(product.url, await makeMedia(media, "mp4", { seconds: 1 }), "second.mp4");
    await workers.start("a", { CONVERT_RETRY_DELAYS_SECONDS: "0.2,0.5,1,1,2,2,3,3,5" });
    await converting(product.url, first, workers.workDir("a"));
    await servers.stopS3();
    let started = false;
    try {
      await until(
        "the worker to fail storing the MP3 and wait to try again",
        async () => (await workers.log("a")).includes(`Job ${first} failed (try 1); trying again`),
        30_000,
        100,
      );
      // Meanwhile a new upload is refused with a clear error.
      await assertError(
        await postFile(`${product.url}/v1/jobs`, source, "during.flac"),
        503,
        "service_unavailable",
      );
      assert.equal((await getJob(product.url, first)).body.status, "converting", "not failed: tried again");
      await servers.startS3();
      started = true;
    } finally {
      if (!started) await servers.startS3();
    }
    await jobBecomes(product.url, first, "done", 60_000);
    await jobBecomes(product.url, second, "done", 60_000);
    const log = await logOnceWith(() => workers.log("a"), `job ${first}: done`);
    assert.equal(linesWith(log, `job ${first}: task received`), 1, "the task stayed in hand");
    assert.equal(linesWith(log, `job ${first}: done`), 1);
    assert.deepEqual(
      (await product.storage.list("outputs/")).sort(),
      [outputKey(first), outputKey(second)].sort(),
    );
  });
});

Deno.test("faults: a poison task that crashes its worker every time ends in the dead-letter queue after the delivery limit, its job fails with conversion_failed, and other jobs flow", async () => {
  await withProduct(async ({ product, workers, media }) => {
    const crash = { CONVERT_TEST_CRASH_FILENAME: "poison.mp4" };
    const clip = await makeMedia(media, "mp4", { seconds: 1 });
    let n = 0;
    const exits: number[] = [];
    // Not waiting for its health check: a new worker may take the poison task and die before it answers.
    const startOne = async () => {
      const worker = await workers.start(`w${++n}`, crash, { wait: false });
      const slot = { worker, alive: true };
      worker.process.status.then((status) => {
        exits.push(status.code);
        slot.alive = false;
      });
      return slot;
    };
    // Two workers, each started again whenever it dies, as an orchestrator would.
    const slots = [await startOne(), await startOne()];
    let supervising = true;
    const supervisor = (async () => {
      while (supervising) {
        for (let i = 0; i < slots.length; i++) {
          if (!slots[i].alive && supervising) slots[i] = await startOne();
        }
        await sleep(50);
      }
    })();
    try {
      const poison = await submit(product.url, clip, "poison.mp4");
      const good = [];
      for (let i = 0; i < 4; i++) {
        good.push(await submit(product.url, clip, `good-${i}.mp4`, `?title=good-${i}`));
      }
      const failed = await jobBecomes(product.url, poison, "failed", 120_000);
      assert.equal((failed.error as { code: string }).code, "conversion_failed", JSON.stringify(failed));
      for (const id of good) await jobBecomes(product.url, id, "done", 60_000);
    } finally {
      supervising = false;
      await supervisor;
    }
    const crashes = exits.filter((code) => code === TEST_CRASH_EXIT_CODE).length;
    assert.equal(exits.length, crashes, `every exit was the test crash: ${exits}`);
    // x-delivery-limit 5: the first delivery and five more, then the dead-letter queue.
    assert.ok(crashes >= 5 && crashes <= 6, `the poison task was delivered ${crashes} times`);

    // The switch is the operator's alone: a worker without it converts the very same file.
    await workers.stop();
    await workers.start("plain");
    const again = await submit(product.url, clip, "poison.mp4", "?title=again");
    await jobBecomes(product.url, again, "done", 30_000);
    console.log(`  the poison task crashed its worker ${crashes} times before it was dead-lettered`);
  });
});

Deno.test("faults: FFmpeg's cap and the retries fit the broker's consumer timeout, so a long conversion runs once; a worker whose limits do not fit is refused at start", async () => {
  await withProduct(async ({ product, workers, media }) => {
    const sources = Promise.all([
      makeMedia(media, "flac", { seconds: 4 * FLAC_3S }), // about 12 s of FFmpeg
      makeMedia(media, "flac", { seconds: 60 }), // well within the 2 s cap of the worker that fits
    ]);
    // Refused at start, with a message naming the variables, before it connects to anything.
    const refused = await workers.start("refused", {
      BROKER_CONSUMER_TIMEOUT_SECONDS: "5",
      FFMPEG_TIMEOUT_SECONDS: "5",
      CONVERT_RETRY_DELAYS_SECONDS: "1",
    }, { wait: false, flagsFrom: { BROKER_CONSUMER_TIMEOUT_SECONDS: "60" } });
    const status = await refused.process.status;
    assert.equal(status.code, 1);
    const message = await workers.log("refused");
    for (
      const name of [
        "FFMPEG_TIMEOUT_SECONDS",
        "CONVERT_RETRY_DELAYS_SECONDS",
        "BROKER_CONSUMER_TIMEOUT_SECONDS",
      ]
    ) {
      assert.ok(message.includes(name), `${name} is not named in: ${message}`);
    }

    // A broker that takes a task back after 5 s unacked, checked every 0.5 s (channels opened from now on).
    const [timeout, tick] = [
      ...(await servers.rabbitEval(
        "{application:get_env(rabbit, consumer_timeout), application:get_env(rabbit, channel_tick_interval)}.",
      )).matchAll(/\{ok,\s*(\d+)\}/g),
    ].map((match) => Number(match[1]));
    await servers.rabbitEval(
      "application:set_env(rabbit, consumer_timeout, 5000), application:set_env(rabbit, channel_tick_interval, 500).",
    );
    try {
      const [long, shortSource] = await sources;

      // Within the rule: 2 s of FFmpeg and 0.5 s of retry waits fit 90% of the 5 s. (The task is held for the
      // download, the probe and the failure report too: 2 s leaves them room on a loaded machine.)
      await workers.start("fits", {
        BROKER_CONSUMER_TIMEOUT_SECONDS: "5",
        FFMPEG_TIMEOUT_SECONDS: "2",
        CONVERT_RETRY_DELAYS_SECONDS: "0.5",
      });
      const cut = await submit(product.url, long, "long.flac");
      const failed = await jobBecomes(product.url, cut, "failed", 30_000);
      const cutFailed = performance.now(); // after its delivery, however late that came
      const error = failed.error as { code: string; message: string };
      assert.equal(error.code, "conversion_failed");
      assert.match(error.message, /timed out after [\d.]+ s/);
      const short = await submit(product.url, shortSource, "short.flac");
      await jobBecomes(product.url, short, "done", 30_000);
      // Past the broker's 5 s and a check after the long task's delivery: it never comes back.
      await sleep(Math.max(0, cutFailed + 6_500 - performance.now()));
      const log = await workers.log("fits");
      assert.equal(linesWith(log, `job ${cut}: task received`), 1, "the long conversion ran once");
      assert.equal(linesWith(log, `job ${short}: task received`), 1);
      // Neither of this test's tasks came back (a task left on the shared broker by an earlier test may, for
      // another job: it is not this rule's concern).
      assert.equal(linesWith(log, `job ${cut}: task received (delivered before)`), 0);
      assert.equal(linesWith(log, `job ${short}: task received (delivered before)`), 0);
      await workers.stop();

      // Against the rule (workers told the broker waits 10 minutes): the broker takes the task back mid-way and
      // delivers it again, to the other worker, so the conversion runs twice. This is what the rule prevents.
      const misled = { BROKER_CONSUMER_TIMEOUT_SECONDS: "600", FFMPEG_TIMEOUT_SECONDS: "60" };
      await Promise.all([workers.start("misled-a", misled), workers.start("misled-b", misled)]);
      const twice = await submit(product.url, long, "long-again.flac", "?title=again");
      const submitted = performance.now();
      await until(
        "the broker to deliver the long task again",
        async () => (await workers.logs()).includes(`job ${twice}: task received (delivered before)`),
        30_000,
        200,
      );
      console.log(
        `  the broker delivered the task again ${Math.round(performance.now() - submitted)} ms after it`,
      );
    } finally {
      await workers.stop();
      await servers.rabbitEval(
        `application:set_env(rabbit, consumer_timeout, ${timeout ?? 1800000}), ` +
          `application:set_env(rabbit, channel_tick_interval, ${tick ?? 60000}).`,
      );
    }
  });
});

Deno.test("faults: Upload dies between recording a job and publishing its task; the reconciler of the restarted Upload publishes it, and the job ends done", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct(1, {
    UPLOAD_TEST_CRASH_FILENAME: "crash.mp4",
    RECONCILE_SECONDS: "1",
    RECONCILE_GRACE_SECONDS: "2",
  });
  try {
    const source = await makeMedia(media, "mp4");
    const upload = product.services.find((s) => s.name === "upload")!;
    // The client's request dies with the service: it never got a 202, but its job was recorded.
    const response = await postFile(`${product.url}/v1/jobs`, source, "crash.mp4").catch(() => null);
    assert.notEqual(response?.status, 202);
    await response?.body?.cancel();
    assert.equal((await upload.process.status).code, 70, "the Upload service died on purpose");
    const [inputKey] = await product.storage.list("inputs/");
    assert.ok(inputKey, "the video was stored before the crash");
    const id = inputKey.slice("inputs/".length);
    assert.equal((await (await fetch(`${product.url}/v1/jobs/${id}`)).json()).status, "queued");

    await product.restart("upload", { UPLOAD_TEST_CRASH_FILENAME: undefined });
    const done = await waitForJob(product.url, id, 60_000);
    assert.equal(done.status, "done", JSON.stringify(done));
    const download = await fetch(`${product.url}/v1/jobs/${id}/download`);
    assert.equal(download.status, 200);
    await download.body?.cancel();
    assert.match(
      await Deno.readTextFile(`${product.dir}/upload.log`),
      /Reconciler: published the task of job/,
    );
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});
