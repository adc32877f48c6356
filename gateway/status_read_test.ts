/**
 * A status read with an API key (GET /v1/jobs/:id) is one call to Metadata: the key check, the rate count and the
 * read together (POST /auth/jobs/:id). The answers are those of the two calls it replaces.
 */
import assert from "node:assert/strict";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";
import { createKvUsageStore } from "@vmp3/adapters/kv-usage";
import { createMetadataApp, createMetadataClient, type MetadataClient } from "@vmp3/metadata";
import { runKeysCommand } from "../metadata/keys_cli.ts";
import { createGatewayApp } from "./app.ts";
import { createDownloadLinks } from "./download_link.ts";

async function setup(options: { twoCalls?: boolean } = {}) {
  const kv = await Deno.openKv(":memory:");
  const keys = createKvKeyStore(kv);
  const metadataApp = createMetadataApp({
    store: createKvJobStore(kv),
    cache: createKvOutputCache(kv),
    log: createKvEventLog(kv),
    access: { keys, usage: createKvUsageStore(kv) },
  });
  /** The paths the Gateway called on Metadata. */
  const calls: string[] = [];
  const client = createMetadataClient((request) => {
    calls.push(`${request.method} ${new URL(request.url).pathname}`);
    return metadataApp.fetch(request);
  });
  // A client without the combined call: the Gateway falls back to /auth, then GET /jobs/:id.
  const { authenticateJob: _, ...withoutCombined } = client;
  const metadata: MetadataClient = options.twoCalls ? withoutCombined : client;
  const gateway = createGatewayApp({
    upload: () => new Response(null, { status: 500 }),
    metadata,
    auth: "required",
    links: createDownloadLinks("s".repeat(32), 300),
  });
  const createKey = async (flags: string[] = []) => {
    const result = await runKeysCommand(keys, ["create", "--name", "test", ...flags]);
    const token = result.out.map((line) => line.trim()).find((line) => line.startsWith("vmp3_"))!;
    return { id: token.split("_")[1], auth: { authorization: `Bearer ${token}` } };
  };
  const newJob = async (owner: string) => {
    const id = crypto.randomUUID();
    const response = await metadataApp.request("/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id, owner, input: { filename: "clip.mp4", size: 5 } }),
    });
    assert.equal(response.status, 201);
    return id;
  };
  return { kv, gateway, calls, createKey, newJob };
}

for (const twoCalls of [false, true]) {
  const calls = twoCalls ? "two calls (a client without authenticateJob)" : "one call";
  Deno.test(`A status read with a key, in ${calls}: the job, 404 for another key's, 429 past the rate`, async () => {
    const product = await setup({ twoCalls });
    const a = await product.createKey(["--requests-per-minute", "2"]);
    const b = await product.createKey();
    const job = await product.newJob(a.id);

    product.calls.length = 0;
    const own = await product.gateway.request(`/v1/jobs/${job}`, { headers: a.auth });
    assert.equal(own.status, 200);
    const body = await own.json();
    assert.deepEqual([body.id, body.status, body.owner], [job, "queued", undefined]);
    assert.deepEqual(body.links, { self: `/v1/jobs/${job}`, events: `/v1/jobs/${job}/events` });
    assert.equal(own.headers.get("ratelimit-limit"), "2");
    assert.deepEqual(
      product.calls,
      twoCalls ? ["POST /auth", `GET /jobs/${job}`] : [`POST /auth/jobs/${job}`],
    );

    // Another key's job, and a job that does not exist: the same 404, with the caller's rate headers.
    for (const id of [job, crypto.randomUUID()]) {
      const other = await product.gateway.request(`/v1/jobs/${id}`, { headers: b.auth });
      assert.equal(other.status, 404);
      assert.equal((await other.json()).error.code, "not_found");
      assert.ok(other.headers.get("ratelimit-remaining"));
    }

    // A's second request of the minute is let in, its third is refused with 429 and Retry-After.
    assert.equal((await product.gateway.request(`/v1/jobs/${job}`, { headers: a.auth })).status, 200);
    const refused = await product.gateway.request(`/v1/jobs/${job}`, { headers: a.auth });
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).error.code, "rate_limited");
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);

    // A wrong token is 401, whatever the job.
    const wrong = await product.gateway.request(`/v1/jobs/${job}`, {
      headers: { authorization: `Bearer vmp3_${"z".repeat(12)}_${"x".repeat(43)}` },
    });
    assert.equal(wrong.status, 401);
    assert.match(wrong.headers.get("www-authenticate") ?? "", /invalid_token/);
    product.kv.close();
  });
}

Deno.test("A done job's status carries a download link, the same one for reads within a second", async () => {
  const links = createDownloadLinks("s".repeat(32), 300);
  const id = crypto.randomUUID();
  const now = new Date(Date.UTC(2026, 0, 1, 0, 0, 0, 100));
  const first = await links.sign(id, now);
  assert.equal(await links.sign(id, new Date(now.getTime() + 800)), first);
  const next = await links.sign(id, new Date(now.getTime() + 1000));
  assert.notEqual(next, first);
  for (const link of [first, next]) {
    const url = new URL(link, "http://x");
    const expires = url.searchParams.get("expires")!;
    assert.ok(await links.verify(id, expires, url.searchParams.get("sig")!, now));
    assert.equal(await links.verify(crypto.randomUUID(), expires, url.searchParams.get("sig")!, now), false);
  }
});
