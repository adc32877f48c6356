/**
 * The client API (API keys, tus, direct and URL uploads, SSE, webhooks, cancel, retry, delete, rate limits, the
 * OpenAPI document) on real infrastructure: the four services as separate processes with their real permission
 * flags (e2e/product.ts), RabbitMQ, Redis and s3rver from scripts/test_servers.sh, real FFmpeg, and official client
 * libraries (tus-js-client, standardwebhooks, an independent OpenAPI validator). One product serves every step:
 * starting one is the slow part.
 *
 *   bash scripts/test_servers.sh deno test -A e2e/client_api_test.ts
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import * as tus from "tus-js-client";
import { Webhook } from "standardwebhooks";
import { Validator } from "@seriousme/openapi-schema-validator";
import { createRedisClient } from "@vmp3/adapters/redis";
import { createRedisKeyStore } from "@vmp3/adapters/redis-keys";
import { blockedClass, newWebhookSecret, parseIp } from "@vmp3/shared";
import { runKeysCommand } from "../metadata/keys_cli.ts";
import { makeMedia, probeJson } from "../convert/testing/media.ts";
import { startProduct } from "./product.ts";
import { assertError, assertMp3, processesMatching, waitForNoProcess } from "./helpers.ts";

type Json = Record<string, unknown>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** An IPv4 address of this machine, not loopback and not public (so URL import refuses it), or null. */
function privateLocalAddress(): string | null {
  for (const iface of Deno.networkInterfaces()) {
    if (iface.family !== "IPv4" || iface.address.startsWith("127.")) continue;
    const ip = parseIp(iface.address);
    if (ip && blockedClass(ip)) return iface.address;
  }
  return null;
}

/**
 * A TCP proxy to `port` on 127.0.0.1 that can be broken (every connection cut, new ones closed at once) and mended:
 * a storage outage for the one process that reaches S3 through it.
 */
function switchableProxy(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let broken = false;
  const closeQuietly = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch { /* closed already */ }
  };
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) return;
      for (let at = 0; at < n;) at += await to.write(buffer.subarray(at, n));
    }
  };
  (async () => {
    for await (const client of listener) {
      if (broken) {
        closeQuietly(client);
        continue;
      }
      Deno.connect({ hostname: "127.0.0.1", port }).then((upstream) => {
        open.add(client);
        open.add(upstream);
        Promise.race([pump(client, upstream), pump(upstream, client)]).catch(() => {}).finally(() => {
          closeQuietly(client);
          closeQuietly(upstream);
        });
      }, () => closeQuietly(client));
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    break() {
      broken = true;
      for (const conn of [...open]) closeQuietly(conn);
    },
    mend() {
      broken = false;
    },
    close() {
      this.break();
      listener.close();
    },
  };
}

/** One Server-Sent Event. */
interface SseEvent {
  event?: string;
  id?: string;
  data: string;
}

/** The events of an SSE response, as they come (comments skipped); stops reading when the consumer stops. */
async function* sseEvents(response: Response): AsyncGenerator<SseEvent> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      for (let at = buffer.indexOf("\n\n"); at !== -1; at = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const event: SseEvent = { data: "" };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line === "" || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(value);
          else if (field === "event") event.event = value;
          else if (field === "id") event.id = value;
        }
        if (data.length === 0) continue;
        event.data = data.join("\n");
        yield event;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** A Redis stream id as a comparable pair. */
function streamId(id: string): [bigint, bigint] {
  const [ms, seq] = id.split("-");
  return [BigInt(ms), BigInt(seq)];
}

function streamIdAfter(a: string, b: string): boolean {
  const [x, y] = [streamId(a), streamId(b)];
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

/**
 * What the webhook listener answers a delivery it takes: 204 No Content, as most receivers do (a body-less answer
 * must count as delivered).
 */
const HOOK_OK: number = 204;

/** A webhook request the listener received. */
interface Received {
  path: string;
  id: string;
  headers: Record<string, string>;
  body: string;
  answered: number;
}

Deno.test("real: the client API end to end — keys, tus, URL import, direct upload, SSE, webhooks, cancel, retry, delete, limits, OpenAPI", async (t) => {
  const media = await Deno.makeTempDir({ prefix: "vmp3-client-api-" });

  // --- Servers of the test's own: webhook listener, a file server for URL import, a canary that must stay unhit.
  const received: Received[] = [];
  let failNextJobHook = true; // the first delivery to /job-hook is answered 503, to see it tried again
  const listener = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = await request.text();
    const path = new URL(request.url).pathname;
    let answered = HOOK_OK;
    if (path === "/job-hook" && failNextJobHook) {
      failNextJobHook = false;
      answered = 503;
    }
    received.push({
      path,
      id: request.headers.get("webhook-id") ?? "",
      headers: Object.fromEntries(request.headers),
      body,
      answered,
    });
    return new Response(answered === 200 ? "ok" : answered === 204 ? null : "busy", { status: answered });
  });
  const hookUrl = (path: string) => `http://127.0.0.1:${listener.addr.port}${path}`;

  // URL import may reach 127.0.0.0/8 here; the canary must be outside what is allowed: a private address of this
  // machine if it has one (reached through its IPv4-mapped IPv6 form), else 127.0.0.2 with only 127.0.0.1 allowed.
  const privateAddress = privateLocalAddress();
  const canaryHost = privateAddress ?? "127.0.0.2";
  const allowCidrs = privateAddress ? "127.0.0.0/8" : "127.0.0.1/32";
  let canaryHits = 0;
  const canary = Deno.serve({ hostname: canaryHost, port: 0, onListen: () => {} }, () => {
    canaryHits++;
    return new Response("secret", { status: 200 });
  });
  const canaryMapped = `http://[::ffff:${canaryHost}]:${canary.addr.port}/latest/meta-data/`;
  const importClip = await makeMedia(media, "mp4", { seconds: 2 });
  const importBytes = await Deno.readFile(importClip);
  const fileServerHits: string[] = [];
  const fileServer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    fileServerHits.push(path);
    if (path === "/videos/imported.mp4") {
      return new Response(importBytes, { headers: { "content-type": "video/mp4" } });
    }
    if (path === "/redirect") return new Response(null, { status: 302, headers: { location: canaryMapped } });
    return new Response("no", { status: 404 });
  });
  const fileUrl = (path: string) => `http://127.0.0.1:${fileServer.addr.port}${path}`;

  const webhookSecret = newWebhookSecret();
  const product = await startProduct(0, {
    AUTH: "required",
    IMPORT_ALLOW_CIDRS: allowCidrs,
    WEBHOOK_ALLOW_CIDRS: allowCidrs,
    WEBHOOK_RETRY_DELAYS_SECONDS: "1,1",
    WEBHOOK_SECRET: webhookSecret,
    DOWNLOAD_LINK_SECRET: `e2e-download-links-${crypto.randomUUID()}`,
  });
  // The one worker reaches S3 through a proxy the test can break (step 7: a passing failure); it fails a job at
  // once on such a failure instead of waiting through its usual retries.
  const s3Proxy = switchableProxy(Number(new URL(Deno.env.get("TEST_S3_ENDPOINT")!).port));
  const workDir = `${product.dir}/work-1`;
  const redis = createRedisClient(Deno.env.get("TEST_REDIS_URL")!);
  try {
    await product.startWorker(1, {
      S3_ENDPOINT: `http://127.0.0.1:${s3Proxy.port}`,
      CONVERT_RETRY_DELAYS_SECONDS: "none",
    });

    // --- Keys, made as an admin does (deno task keys), in the Redis the Metadata service uses.
    await redis.connect();
    const keyStore = createRedisKeyStore(redis);
    const makeKey = async (name: string, ...args: string[]) => {
      const { code, out } = await runKeysCommand(keyStore, ["create", "--name", name, ...args]);
      assert.equal(code, 0, out.join("\n"));
      const token = out.map((line) => line.trim()).find((line) => line.startsWith("vmp3_"));
      assert.ok(token, out.join("\n"));
      const secret = /(whsec_\S+)/.exec(out.join("\n"))?.[1];
      return { token, secret };
    };
    const many = ["--requests-per-minute", "100000"];
    const keyA = await makeKey("alice", ...many);
    const keyB = await makeKey("bob", ...many);
    const keyC = await makeKey("carol", ...many, "--webhook-url", hookUrl("/key-hook"));
    const keyD = await makeKey("dave", "--requests-per-minute", "5");
    assert.ok(keyC.secret && !keyA.secret, "only a key with a webhook URL gets a webhook secret");

    const call = (token: string | null, path: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      if (token) headers.set("authorization", `Bearer ${token}`);
      return fetch(`${product.url}${path}`, { ...init, headers });
    };
    const json = async (response: Response, status: number): Promise<Json> => {
      const text = await response.text();
      assert.equal(response.status, status, text);
      return JSON.parse(text);
    };
    const getJob = async (token: string, id: string) => await json(await call(token, `/v1/jobs/${id}`), 200);
    const waitFor = async (token: string, id: string, timeoutMs = 60_000): Promise<Json> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const job = await getJob(token, id);
        if (["done", "failed", "cancelled"].includes(String(job.status))) return job;
        if (Date.now() > deadline) throw new Error(`Job ${id} still ${job.status} after ${timeoutMs} ms`);
        await sleep(100);
      }
    };
    const waitUntil = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
        await sleep(50);
      }
    };
    const postFile = async (token: string, path: string, filename: string) => {
      const form = new FormData();
      form.append("file", new File([await Deno.readFile(path)], filename));
      return await json(await call(token, "/v1/jobs", { method: "POST", body: form }), 202);
    };
    /** Fetches a done job's signed download link with no key, and checks the MP3 against `source`. */
    const assertDownload = async (job: Json, source: string, name: string) => {
      const link = String((job.links as Json).download);
      assert.match(link, /^\/v1\/jobs\/[^/]+\/download\?.*sig=/);
      await assertMp3(await fetch(`${product.url}${link}`), `${media}/${name}.mp3`, source);
    };
    const stored = async (key: string) => (await product.storage.head(key)) !== null;
    /** A step; the steps after a failed one would only fail for its sake, so the first failure ends the test. */
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!(await t.step(name, fn))) throw new Error(`Step failed: ${name}`);
    };

    let tusJob: Json = {};
    await step(
      "1. no key is 401; a tus upload through the Gateway, cut and resumed, becomes a done job",
      async () => {
        await assertError(await call(null, "/v1/jobs"), 401, "unauthorized");
        await assertError(await call("vmp3_aaaaaaaaaaaa_" + "b".repeat(43), "/v1/jobs"), 401, "unauthorized");
        await assertError(
          await call(null, "/v1/uploads/", {
            method: "POST",
            headers: { "tus-resumable": "1.0.0", "upload-length": "10" },
          }),
          401,
          "unauthorized",
        );

        const clip = await makeMedia(media, "mp4", { seconds: 3 });
        const bytes = await Deno.readFile(clip);
        const chunkSize = Math.ceil(bytes.byteLength / 3);
        const requests: string[] = [];
        let jobHeader: string | null = null;
        let paused!: () => void;
        const pausedAt = new Promise<void>((resolve) => (paused = resolve));
        let finished!: () => void;
        let failed!: (error: unknown) => void;
        const done = new Promise<void>((resolve, reject) => ((finished = resolve), (failed = reject)));
        let chunks = 0;
        const upload = new tus.Upload(Buffer.from(bytes), {
          endpoint: `${product.url}/v1/uploads/`,
          headers: { Authorization: `Bearer ${keyA.token}` },
          metadata: { filename: "tus clip.mp4", filetype: "video/mp4" },
          chunkSize,
          retryDelays: [],
          onBeforeRequest: (request) => void requests.push(request.getMethod()),
          onAfterResponse: (_request, response) => {
            jobHeader = response.getHeader("Vmp3-Job-Id") ?? jobHeader;
          },
          onChunkComplete: () => {
            // The cut: the client stops after its first PATCH, as a closed laptop would.
            if (++chunks === 1) {
              upload.abort();
              paused();
            }
          },
          onError: (error) => failed(error),
          onSuccess: () => finished(),
        });
        upload.start();
        await pausedAt;
        const id = upload.url!.split("/").pop()!;
        assert.equal(new URL(upload.url!).pathname, `/v1/uploads/${id}`);
        const head = (token: string) =>
          call(token, `/v1/uploads/${id}`, { method: "HEAD", headers: { "tus-resumable": "1.0.0" } });
        const half = await head(keyA.token);
        assert.equal(half.status, 200);
        assert.equal(half.headers.get("upload-offset"), String(chunkSize), "the first PATCH was kept");
        assert.equal(half.headers.get("upload-length"), String(bytes.byteLength));
        assert.equal((await head(keyB.token)).status, 404, "another key does not see the upload");

        upload.start(); // resumes: HEAD for the offset, then the rest
        await done;
        assert.deepEqual(
          requests,
          ["POST", "PATCH", "HEAD", "PATCH", "PATCH"],
          "one creation, resumed with HEAD",
        );
        assert.equal(jobHeader, id, "the last PATCH names the job: the upload's id");

        tusJob = await waitFor(keyA.token, id);
        assert.equal(tusJob.status, "done", JSON.stringify(tusJob));
        assert.deepEqual(tusJob.input, {
          ...(tusJob.input as Json),
          filename: "tus clip.mp4",
          size: bytes.byteLength,
          sha256: sha256(bytes),
        });
        await assertDownload(tusJob, clip, "tus");
        // The signature is the permission: a link with another signature is no link, and needs a key.
        const forged = String((tusJob.links as Json).download).replace(/sig=[^&]+/, "sig=AAAA");
        await assertError(await fetch(`${product.url}${forged}`), 401, "unauthorized");
      },
    );

    await step("2. another key sees nothing of it", async () => {
      const id = String(tusJob.id);
      await assertError(await call(keyB.token, `/v1/jobs/${id}`), 404, "not_found");
      await assertError(await call(keyB.token, `/v1/jobs/${id}/events`), 404, "not_found");
      await assertError(await call(keyB.token, `/v1/jobs/${id}/download`), 404, "not_found");
      await assertError(await call(keyB.token, `/v1/jobs/${id}/retry`, { method: "POST" }), 404, "not_found");
      await assertError(await call(keyB.token, `/v1/jobs/${id}`, { method: "DELETE" }), 404, "not_found");
      assert.deepEqual(await json(await call(keyB.token, "/v1/jobs"), 200), { jobs: [], next: null });
      const mine = await json(await call(keyA.token, "/v1/jobs"), 200);
      assert.deepEqual((mine.jobs as Json[]).map((j) => j.id), [id], "A's list has it");
      assert.equal((await getJob(keyA.token, id)).status, "done", "B's DELETE did nothing");
    });

    let importedJob: Json = {};
    await step(
      "3. URL import at 128 kb/s, with signed webhooks (one retried); hostile URLs refused",
      async () => {
        const created = await json(
          await call(keyA.token, "/v1/jobs", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              url: fileUrl("/videos/imported.mp4"),
              bitrate: 128,
              webhook_url: hookUrl("/job-hook"),
            }),
          }),
          202,
        );
        const id = String(created.id);
        importedJob = await waitFor(keyA.token, id);
        assert.equal(importedJob.status, "done", JSON.stringify(importedJob));
        assert.equal((importedJob.input as Json).filename, "imported.mp4");
        assert.equal((importedJob.input as Json).sha256, sha256(importBytes));
        assert.deepEqual(importedJob.options, { bitrate: 128 });
        await assertDownload(importedJob, importClip, "imported");
        const probe = await probeJson(`${media}/imported.mp3`);
        const bitrate = Number(probe.streams[0].bit_rate);
        assert.ok(Math.abs(bitrate - 128_000) <= 1000, `the MP3 is ${bitrate} b/s, not 128 kb/s`);

        // Webhooks: job.created and job.done at least, each verified by a Standard Webhooks library with the
        // deployment's secret (the key has none of its own); the 503 answered to the first was tried again.
        const mine = () =>
          received.filter((r) => r.path === "/job-hook" && JSON.parse(r.body).data?.id === id);
        await waitUntil("the import's webhooks", () => {
          const types = mine().filter((r) => r.answered < 300).map((r) => JSON.parse(r.body).type);
          return types.includes("job.created") && types.includes("job.done");
        });
        const verifier = new Webhook(webhookSecret);
        const other = new Webhook(newWebhookSecret());
        for (const hook of mine()) {
          const payload = verifier.verify(hook.body, hook.headers) as Json;
          assert.equal((payload.data as Json).id, id);
          assert.throws(() => other.verify(hook.body, hook.headers), "another secret does not verify it");
        }
        const types = mine().filter((r) => r.answered < 300).map((r) => JSON.parse(r.body).type);
        assert.equal(types.filter((type) => type === "job.created").length, 1, types.join());
        assert.equal(types.filter((type) => type === "job.done").length, 1, types.join());
        assert.ok(
          types.every((type) => ["job.created", "job.progress", "job.done"].includes(type)),
          types.join(),
        );
        const failed = mine().find((r) => r.answered === 503);
        assert.ok(failed, "the first delivery was refused");
        const again = mine().filter((r) => r.id === failed.id);
        assert.deepEqual(
          again.map((r) => r.answered),
          [503, HOOK_OK],
          "tried again with the same webhook-id",
        );
        let deliveries: Json[] = [];
        await waitUntil("the retried delivery to show on the job", async () => {
          deliveries = ((await getJob(keyA.token, id)).webhooks as Json)?.deliveries as Json[] ?? [];
          const record = deliveries.find((d) => d.id === failed.id);
          return record?.status === "delivered" && record.attempts === 2 && record.lastStatusCode === HOOK_OK;
        }).catch((error) => {
          throw new Error(`${error.message}: ${failed.id} in ${JSON.stringify(deliveries)}`);
        });

        // Hostile URLs: refused before anything is stored, and the canary never hears of them.
        const inputsBefore = (await product.storage.list("inputs/")).length;
        const importing = (url: string) =>
          call(keyA.token, "/v1/jobs", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ url }),
          });
        await assertError(
          await importing("http://169.254.169.254/latest/meta-data/"),
          400,
          "url_not_allowed",
        );
        await assertError(await importing(canaryMapped), 400, "url_not_allowed");
        await assertError(
          await importing(`http://${canaryHost}:${canary.addr.port}/`),
          400,
          "url_not_allowed",
        );
        await assertError(await importing(fileUrl("/redirect")), 400, "url_not_allowed");
        assert.ok(
          fileServerHits.includes("/redirect"),
          "the allowed server was asked, and its redirect refused",
        );
        assert.equal(canaryHits, 0, "no request reached the canary");
        assert.equal((await product.storage.list("inputs/")).length, inputsBefore, "nothing was stored");
      },
    );

    await step(
      "4. direct upload: presign, PUT to S3, complete; the key's own webhooks, signed with its secret",
      async () => {
        const clip = await makeMedia(media, "mp4", { seconds: 4 });
        const bytes = await Deno.readFile(clip);
        const presigned = await json(
          await call(keyC.token, "/v1/uploads/presign", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ filename: "direct.mp4", size: bytes.byteLength }),
          }),
          201,
        );
        assert.equal(presigned.method, "PUT");
        const put = await fetch(String(presigned.url), { method: "PUT", body: bytes });
        assert.equal(put.status, 200, await put.text());
        const id = String(presigned.id);
        await assertError(
          await call(keyA.token, `/v1/uploads/${id}/complete`, { method: "POST" }),
          404,
          "not_found",
        );
        const accepted = await call(keyC.token, `/v1/uploads/${id}/complete`, { method: "POST" });
        assert.equal(accepted.headers.get("location"), `/v1/jobs/${id}`);
        const created = await json(accepted, 202);
        assert.equal(created.id, id);
        const job = await waitFor(keyC.token, id);
        assert.equal(job.status, "done", JSON.stringify(job));
        assert.deepEqual(
          [(job.input as Json).filename, (job.input as Json).size, (job.input as Json).sha256],
          ["direct.mp4", bytes.byteLength, undefined],
          "no sha256: the bytes never passed through vmp3",
        );
        await assertDownload(job, clip, "direct");

        const mine = () =>
          received.filter((r) => r.path === "/key-hook" && JSON.parse(r.body).data?.id === id);
        await waitUntil(
          "the key's webhooks",
          () => mine().some((r) => JSON.parse(r.body).type === "job.done"),
        );
        const verifier = new Webhook(keyC.secret!);
        for (const hook of mine()) {
          assert.equal((verifier.verify(hook.body, hook.headers) as Json).type, JSON.parse(hook.body).type);
          assert.throws(
            () => new Webhook(webhookSecret).verify(hook.body, hook.headers),
            "the key's webhooks are signed with its own secret, not the deployment's",
          );
        }
        const types = mine().map((r) => JSON.parse(r.body).type).sort();
        assert.deepEqual(types.filter((type) => type !== "job.progress"), ["job.created", "job.done"]);
        assert.ok(
          !received.some((r) => r.path === "/key-hook" && JSON.parse(r.body).data?.id !== id),
          "the key's URL hears of its own jobs only",
        );
      },
    );

    await step(
      "5. SSE: two events, a disconnect, then Last-Event-ID gets exactly the rest, in order",
      async () => {
        const flac = await makeMedia(media, "flac", { seconds: 400 });
        const { id } = await postFile(keyA.token, flac, "long.flac");
        const first = new AbortController();
        const response = await call(keyA.token, `/v1/jobs/${id}/events`, { signal: first.signal });
        assert.equal(response.status, 200);
        assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
        const before: SseEvent[] = [];
        for await (const event of sseEvents(response)) {
          before.push(event);
          if (before.length === 2) break;
        }
        first.abort();
        assert.equal(before.length, 2, "two events before the job ended");
        assert.ok(before.every((e) => e.event === "job" && e.id), JSON.stringify(before));
        const lastSeen = before[1].id!;
        // Events go on while the client is away: reconnect once the job's event log holds one it has not seen
        // (progress comes every half second or so, later on a loaded machine, so no fixed pause is enough).
        let missed = "";
        await waitUntil("an event after the last one seen", async () => {
          missed = (await redis.xrange(`vmp3:joblog:${id}`, `(${lastSeen}`, "+"))[0]?.[0] ?? "";
          return missed !== "";
        });
        const resumed = await call(keyA.token, `/v1/jobs/${id}/events`, {
          headers: { "last-event-id": lastSeen },
        });
        assert.equal(resumed.status, 200);
        const after: SseEvent[] = [];
        for await (const event of sseEvents(resumed)) after.push(event); // the stream ends after a final state
        const jobs = [...before, ...after].map((e) => JSON.parse(e.data) as Json);
        assert.equal(jobs.at(-1)!.status, "done", JSON.stringify(jobs.at(-1)));
        const ids = [...before, ...after].map((e) => e.id);
        assert.equal(new Set(ids).size, ids.length, `no id twice: ${ids.join()}`);
        for (let i = 1; i < ids.length; i++) {
          assert.ok(streamIdAfter(ids[i]!, ids[i - 1]!), `ids in order: ${ids.join()}`);
        }
        const order = ["queued", "converting", "done"];
        for (let i = 1; i < jobs.length; i++) {
          assert.ok(order.indexOf(String(jobs[i].status)) >= order.indexOf(String(jobs[i - 1].status)));
          assert.ok(Number(jobs[i].progress) >= Number(jobs[i - 1].progress), "progress only grows");
        }
        // Exactly what the job's event log holds after the last id seen: nothing missed, nothing repeated.
        const log = await redis.xrange(`vmp3:joblog:${id}`, "-", "+");
        const logged = log.map(([entry]) => entry).filter((entry) => streamIdAfter(entry, lastSeen));
        assert.deepEqual(after.map((e) => e.id), logged);
        assert.ok(
          after.some((e) => e.id === missed),
          `the one logged while the client was away (${missed}) is among them`,
        );
      },
    );

    let cancelled: { id: string; at: number } = { id: "", at: 0 };
    await step(
      "6. cancel: a converting job's FFmpeg is gone within seconds, and its files with it",
      async () => {
        const flac = await makeMedia(media, "flac", { seconds: 1500 });
        const { id } = await postFile(keyA.token, flac, "very long.flac");
        const jobId = String(id);
        await waitUntil(
          "the job to convert",
          async () => (await getJob(keyA.token, jobId)).status === "converting",
        );
        // The job's own folder: the worker's command line names ffmpeg and the work folder too.
        const ffmpeg = ["ffmpeg", `${workDir}/${jobId}-`];
        await waitUntil("FFmpeg to run", () => processesMatching(...ffmpeg).length > 0);
        const answer = await json(await call(keyA.token, `/v1/jobs/${jobId}`, { method: "DELETE" }), 200);
        assert.equal(answer.status, "cancelled");
        // The kill reaches the worker through a RabbitMQ fanout: 5 s leaves room for a loaded machine, and the
        // 1500 s conversion would still be running long after that if nothing killed it.
        const left = await waitForNoProcess(ffmpeg, 5000);
        const describe = (pid: number) => {
          try {
            return `${pid} ${Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ")} ${
              Deno.readTextFileSync(`/proc/${pid}/stat`)
            }`;
          } catch (e) {
            return `${pid} gone ${e}`;
          }
        };
        assert.deepEqual(left, [], `FFmpeg was killed within 5 s: ${left.map(describe).join("\n")}`);
        assert.equal(await stored(`outputs/${jobId}.mp3`), false, "no MP3");
        assert.equal(await stored(`inputs/${jobId}`), false, "no video");
        cancelled = { id: jobId, at: Date.now() }; // checked again at the end, 3 s later at least
      },
    );

    await step(
      "7. retry: a storage outage fails a job; retried, it is done; a done job is not retried, and is deleted with its MP3",
      async () => {
        const clip = await makeMedia(media, "mp4", { seconds: 2 });
        s3Proxy.break();
        let failed: Json;
        let id: string;
        try {
          ({ id } = await postFile(keyA.token, clip, "outage.mp4") as { id: string });
          failed = await waitFor(keyA.token, id);
        } finally {
          s3Proxy.mend();
        }
        assert.equal(failed.status, "failed", JSON.stringify(failed));
        assert.equal((failed.error as Json).code, "service_unavailable");
        await assertError(await call(keyA.token, `/v1/jobs/${id}/download`), 409, "not_ready");

        const retried = await json(await call(keyA.token, `/v1/jobs/${id}/retry`, { method: "POST" }), 202);
        assert.equal(retried.status, "queued");
        assert.equal(retried.retries, 1);
        const done = await waitFor(keyA.token, id);
        assert.equal(done.status, "done", JSON.stringify(done));
        assert.equal(done.error, undefined);
        await assertDownload(done, clip, "retried");
        await assertError(
          await call(keyA.token, `/v1/jobs/${id}/retry`, { method: "POST" }),
          409,
          "conflict",
        );

        assert.ok(await stored(`outputs/${id}.mp3`));
        const deleted = await call(keyA.token, `/v1/jobs/${id}`, { method: "DELETE" });
        assert.equal(deleted.status, 204, await deleted.text());
        await assertError(await call(keyA.token, `/v1/jobs/${id}`), 404, "not_found");
        assert.equal(await stored(`outputs/${id}.mp3`), false, "its MP3 is gone");
        assert.equal(await stored(`inputs/${id}`), false, "its video is gone");
        const link = String((done.links as Json).download);
        assert.equal(await fetch(`${product.url}${link}`).then((r) => (r.body?.cancel(), r.status)), 404);
      },
    );

    await step("8. a key past its requests per minute gets 429 rate_limited with Retry-After", async () => {
      for (let i = 0; i < 5; i++) {
        const response = await call(keyD.token, "/v1/jobs");
        await json(response, 200);
        assert.equal(response.headers.get("ratelimit-limit"), "5");
        assert.equal(response.headers.get("ratelimit-remaining"), String(4 - i));
      }
      const refused = await call(keyD.token, "/v1/jobs");
      const retryAfter = Number(refused.headers.get("retry-after"));
      await assertError(refused, 429, "rate_limited");
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`);
      assert.equal(await call(keyA.token, "/v1/jobs").then((r) => (r.body?.cancel(), r.status)), 200);
    });

    await step("9. the running Gateway's /openapi.json is valid OpenAPI", async () => {
      const doc = await json(await fetch(`${product.url}/openapi.json`), 200);
      const validator = new Validator();
      const result = await validator.validate(doc);
      assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
      assert.ok(Object.keys(doc.paths as Json).includes("/v1/uploads/presign"));
    });

    await step("6 (after). the cancelled job is still cancelled 3 s later, with no files", async () => {
      await sleep(Math.max(0, cancelled.at + 3000 - Date.now()));
      assert.equal((await getJob(keyA.token, cancelled.id)).status, "cancelled");
      assert.equal(await stored(`outputs/${cancelled.id}.mp3`), false);
      assert.equal(await stored(`inputs/${cancelled.id}`), false);
    });
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    redis.disconnect();
    s3Proxy.close();
    await product.stop();
    await listener.shutdown();
    await canary.shutdown();
    await fileServer.shutdown();
    await Deno.remove(media, { recursive: true });
  }
});
