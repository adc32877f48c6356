import assert from "node:assert/strict";
import { ConversionRequested, DEFAULT_KEY_LIMITS, parseCidrList, TASK_QUEUE } from "@vmp3/shared";
import { createFsBlobStore } from "@vmp3/adapters/fs";
import { createKvQueue } from "@vmp3/adapters/kv-queue";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";
import { createKvUsageStore } from "@vmp3/adapters/kv-usage";
import { createPublicHttp, type PublicHttpOptions } from "@vmp3/adapters/public-http";
import { createMetadataApp, createMetadataClient } from "@vmp3/metadata";
import {
  lengthResponse,
  redirectResponse,
  startCanary,
  startRawServer,
  writeAll,
} from "../adapters/testing/raw_http.ts";
import { makeMedia } from "../convert/testing/media.ts";
import { createUploadApp } from "./app.ts";
import { tasksTaken } from "./testing/wait.ts";

const LOCAL = parseCidrList("127.0.0.1/32");
/** The API key id the Gateway names as the owner of imports. */
const OWNER = "key000000123";

/** The Upload app on in-memory adapters, importing through a client made with `http`. */
async function setup(http: PublicHttpOptions | null, maxUploadBytes = 10_000_000) {
  const root = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const blobs = createFsBlobStore(root);
  const tasks = createKvQueue(kv, TASK_QUEUE, ConversionRequested, { pollMs: 10 });
  const store = createKvJobStore(kv);
  // API keys, as the Gateway's callers have: a job with an owner is admitted against its key's quotas.
  const keys = createKvKeyStore(kv);
  await keys.insert({
    id: OWNER,
    name: "importer",
    secretSha256: "0".repeat(64),
    limits: DEFAULT_KEY_LIMITS,
    createdAt: new Date().toISOString(),
  });
  const metadataApp = createMetadataApp({
    store,
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
    access: { keys, usage: createKvUsageStore(kv) },
  });
  const metadata = createMetadataClient((r) => metadataApp.fetch(r));
  const app = createUploadApp({
    blobs,
    tasks,
    metadata,
    maxUploadBytes,
    publicHttp: http ? createPublicHttp(http) : undefined,
  });
  const published: ConversionRequested[] = [];
  const sub = await tasks.consume((task) => {
    published.push(task);
    return Promise.resolve("ack");
  });
  return {
    app,
    blobs,
    store,
    published,
    /** Every object in storage, partial files included. */
    async files(): Promise<string[]> {
      const found: string[] = [];
      const walk = async (dir: string) => {
        for await (const entry of Deno.readDir(dir)) {
          if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
          else found.push(entry.name);
        }
      };
      await walk(root).catch(() => {});
      return found;
    },
    importUrl(body: Record<string, unknown>, headers: Record<string, string> = {}) {
      return app.request("/imports", {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
    },
    async close() {
      await sub.close();
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

async function errorOf(response: Response): Promise<[number, string, string]> {
  const body = await response.json();
  return [response.status, body.error?.code, body.error?.message];
}

Deno.test("POST /imports refuses every private, loopback or odd URL with 400 url_not_allowed and never connects", async () => {
  const canary = startCanary("127.0.0.1");
  const redirector = startRawServer(
    "127.0.0.2",
    (_, conn) => writeAll(conn, redirectResponse(`http://127.0.0.1:${canary.port}/video.mp4`)),
  );
  const t = await setup({});
  // Only the redirector's own address is allowed: where it points is not.
  const viaRedirect = await setup({ allow: parseCidrList("127.0.0.2/32") });
  try {
    const P = canary.port;
    const hostile = [
      `http://127.0.0.1:${P}/`,
      `http://localhost:${P}/`,
      `http://2130706433:${P}/`,
      `http://0x7f000001:${P}/`,
      `http://0177.0.0.1:${P}/`,
      `http://127.1:${P}/`,
      `http://[::1]:${P}/`,
      `http://[::ffff:127.0.0.1]:${P}/`,
      `http://0.0.0.0:${P}/`,
      "http://169.254.169.254/latest/meta-data/",
      "http://10.0.0.1/",
      "http://100.64.0.1/",
      "http://[fd00::1]/",
      "file:///etc/passwd",
      "ftp://example.com/video.mp4",
      "gopher://example.com/",
      "http://user:pass@example.com/video.mp4",
    ];
    for (const url of hostile) {
      const [status, code] = await errorOf(await t.importUrl({ url }));
      assert.deepEqual([status, code], [400, "url_not_allowed"], url);
    }
    const [status, code, message] = await errorOf(
      await viaRedirect.importUrl({ url: `${redirector.origin}/a` }),
    );
    assert.deepEqual([status, code], [400, "url_not_allowed"]);
    assert.match(message, /redirects to one that cannot be fetched.*loopback/);
    assert.equal(redirector.hits, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(canary.hits, 0);
    assert.deepEqual(await t.files(), []);
    assert.deepEqual(await viaRedirect.files(), []);
    assert.equal(t.published.length + viaRedirect.published.length, 0);
  } finally {
    canary.close();
    redirector.close();
    await t.close();
    await viaRedirect.close();
  }
});

Deno.test("POST /imports turns a real video served over HTTP into a job, named from the URL, owner and webhook kept", async () => {
  const dir = await Deno.makeTempDir();
  const video = await Deno.readFile(await makeMedia(dir, "mp4", { seconds: 1 }));
  const server = startRawServer("127.0.0.1", (request, conn) => {
    if (request.target.startsWith("/hop")) {
      return writeAll(conn, redirectResponse("/media/My%20clip.mp4", 307));
    }
    return writeAll(conn, lengthResponse(video, { "content-type": "video/mp4" }));
  });
  const t = await setup({ allow: LOCAL });
  try {
    const res = await t.importUrl(
      {
        url: `${server.origin}/hop`,
        bitrate: 128,
        title: "From the web",
        webhook_url: "https://hooks.example/x",
      },
      { "x-vmp3-owner": OWNER },
    );
    assert.equal(res.status, 202, await res.clone().text());
    const job = await res.json();
    const sha256 = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", video)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    assert.equal(job.status, "queued");
    assert.deepEqual(job.input, { filename: "My clip.mp4", size: video.byteLength, sha256 });
    assert.deepEqual(job.options, { bitrate: 128, title: "From the web" });
    const stored = await t.blobs.get(`inputs/${job.id}`);
    assert.ok(stored);
    assert.deepEqual(new Uint8Array(await new Response(stored.body).arrayBuffer()), video);
    const recorded = await t.store.get(job.id);
    assert.equal(recorded?.owner, OWNER);
    assert.equal(recorded?.webhookUrl, "https://hooks.example/x");
    await tasksTaken(t.published, 1);
    assert.deepEqual(t.published.map((task) => task.jobId), [job.id]);
  } finally {
    server.close();
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("POST /imports reads a chunked body, and takes the name from Content-Disposition", async () => {
  const server = startRawServer("127.0.0.1", async (_, conn) => {
    await writeAll(
      conn,
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" +
        "Content-Disposition: attachment; filename*=UTF-8''%C3%A9t%C3%A9.webm\r\n\r\n",
    );
    for (let i = 0; i < 5; i++) await writeAll(conn, `64\r\n${"v".repeat(100)}\r\n`);
    await writeAll(conn, "0\r\n\r\n");
  });
  const t = await setup({ allow: LOCAL });
  try {
    const res = await t.importUrl({ url: `${server.origin}/download?id=7` });
    assert.equal(res.status, 202);
    const job = await res.json();
    assert.deepEqual([job.input.filename, job.input.size], ["été.webm", 500]);
    assert.equal((await t.blobs.head(`inputs/${job.id}`))?.size, 500);
  } finally {
    server.close();
    await t.close();
  }
});

Deno.test("POST /imports over the size cap answers 413 and keeps nothing, declared or streamed", async () => {
  const server = startRawServer("127.0.0.1", async (request, conn) => {
    if (request.target === "/declared") return await writeAll(conn, lengthResponse(new Uint8Array(5000)));
    await writeAll(conn, "HTTP/1.1 200 OK\r\n\r\n"); // no length: ends when the connection does
    for (let i = 0; i < 50; i++) await writeAll(conn, new Uint8Array(200));
  });
  const t = await setup({ allow: LOCAL }, 4000);
  try {
    for (const path of ["/declared", "/streamed"]) {
      const [status, code] = await errorOf(await t.importUrl({ url: `${server.origin}${path}` }));
      assert.deepEqual([status, code], [413, "payload_too_large"], path);
    }
    assert.deepEqual(await t.files(), []);
    assert.equal(t.published.length, 0);
  } finally {
    server.close();
    await t.close();
  }
});

Deno.test("POST /imports cuts a stalled server off with 422 url_fetch_failed and keeps nothing", async () => {
  const hang = Promise.withResolvers<void>();
  const server = startRawServer("127.0.0.1", async (_, conn) => {
    await writeAll(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    await writeAll(conn, new Uint8Array(1000));
    await hang.promise;
  });
  const t = await setup({ allow: LOCAL, stallTimeoutMs: 300 });
  try {
    const started = Date.now();
    const [status, code, message] = await errorOf(await t.importUrl({ url: `${server.origin}/slow.mp4` }));
    assert.deepEqual([status, code], [422, "url_fetch_failed"]);
    assert.match(message, /sent nothing for 0\.3 s/);
    assert.ok(Date.now() - started < 3000);
    assert.deepEqual(await t.files(), []);
  } finally {
    hang.resolve();
    server.close();
    await t.close();
  }
});

Deno.test("POST /imports answers 422 url_fetch_failed for an error status, and 400 for a bad body or option", async () => {
  const server = startRawServer("127.0.0.1", (_, conn) => writeAll(conn, lengthResponse("gone", {}, 404)));
  const t = await setup({ allow: LOCAL });
  const disabled = await setup(null);
  try {
    const [status, code, message] = await errorOf(await t.importUrl({ url: `${server.origin}/clip.mp4` }));
    assert.deepEqual([status, code], [422, "url_fetch_failed"]);
    assert.match(message, /answered 404/);
    const bad: [unknown, string, RegExp][] = [
      [{ url: `${server.origin}/a`, bitrate: 129 }, "invalid_option", /bitrate/],
      [{ url: `${server.origin}/a`, colour: "red" }, "invalid_option", /colour/],
      [{ url: `${server.origin}/a`, title: { x: 1 } }, "invalid_option", /title/],
      [{ url: `${server.origin}/a`, webhook_url: "ftp://x" }, "invalid_option", /webhook_url/],
      [{ bitrate: 128 }, "invalid_request", /"url"/],
      [["https://example.com/a.mp4"], "invalid_request", /object/],
    ];
    for (const [body, expectedCode, expectedMessage] of bad) {
      const [s, c, m] = await errorOf(await t.importUrl(body as Record<string, unknown>));
      assert.deepEqual([s, c], [400, expectedCode], JSON.stringify(body));
      assert.match(m, expectedMessage);
    }
    const notJson = await t.app.request("/imports", { method: "POST", body: "url=https://example.com" });
    assert.deepEqual((await errorOf(notJson)).slice(0, 2), [400, "invalid_request"]);
    // Bad options are refused before anything is fetched.
    assert.equal(server.hits, 1);
    const off = await errorOf(await disabled.importUrl({ url: "https://example.com/a.mp4" }));
    assert.deepEqual(off.slice(0, 2), [501, "not_implemented"]);
    assert.deepEqual(await t.files(), []);
  } finally {
    server.close();
    await t.close();
    await disabled.close();
  }
});
