/**
 * Where the memory of many concurrent uploads goes: the Upload service's receiving path (upload/receive.ts, the
 * sha256 tap, the S3 store's put) in this process, fed by N curl clients at once, with RSS and
 * Deno.memoryUsage() {heapUsed, external} sampled every 100 ms. Each switch removes one suspect, so a peak can be
 * compared with and without it. Needs V8's gc exposed, as the services have it:
 *
 *   bash scripts/test_servers.sh deno run -A --v8-flags=--expose-gc bench/upload_rss.ts
 *   UPLOADS=20 UPLOAD_MB=200 SINK=discard bash scripts/test_servers.sh deno run -A --v8-flags=--expose-gc bench/upload_rss.ts
 *
 *   UPLOADS    concurrent uploads (default 10)
 *   UPLOAD_MB  size of each (default 200)
 *   MODE       form (curl -F, multipart through busboy, as bench/load.ts) | raw (curl -T, no busboy)
 *   SINK       s3 (the real store, S3 from scripts/test_servers.sh) | discard (read and drop: no store at all) |
 *              stall (read a chunk, wait 5 s as a blocked upload does, then drop the rest: reports what the blocked
 *              uploads held, after a full GC)
 *   TAP        1 (sha256 tap, as upload/app.ts) | 0
 *   DISCARD_GC 1: with SINK=discard, the chunks read are told to adapters/chunk_collector.ts, as the S3 store does
 *   PROXY      1: the clients send through a proxy process that streams the body on with fetch, chunked, as the
 *              Gateway does (gateway/app.ts), rather than straight to this process; its peak RSS is reported too
 *   PROXY_TRANSFORM 1: the proxy passes the body through a JS TransformStream first, as the Gateway's
 *              collectingGarbage does (each 64 KiB chunk then reaches Upload as a 65527-byte and a 9-byte one)
 *   TRACE      1: print the samples over time, not only the peaks
 * @module
 */
import { sha256Tap } from "@vmp3/shared";
import { createS3BlobStore } from "../adapters/s3_blob_store.ts";
import { collectSpentChunks } from "../adapters/chunk_collector.ts";
import { receiveUpload } from "../upload/receive.ts";

const UPLOADS = Number(Deno.env.get("UPLOADS") ?? 10);
const UPLOAD_MB = Number(Deno.env.get("UPLOAD_MB") ?? 200);
const MODE = Deno.env.get("MODE") ?? "form";
const SINK = Deno.env.get("SINK") ?? "s3";
const TAP = Deno.env.get("TAP") !== "0";
const TRACE = Deno.env.get("TRACE") === "1";

if (!(globalThis as { gc?: unknown }).gc) {
  console.error("warning: run with --v8-flags=--expose-gc, as the services");
}

const mb = (bytes: number) => bytes / (1024 * 1024);
function rssMb(pid: number | "self" = "self"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

const file = `/tmp/vmp3-upload-rss-${UPLOAD_MB}.bin`;
if ((await Deno.stat(file).catch(() => null))?.size !== UPLOAD_MB * 1024 * 1024) {
  const out = await new Deno.Command("bash", {
    args: ["-c", `head -c ${UPLOAD_MB * 1024 * 1024} /dev/urandom > ${file}`],
  }).output();
  if (!out.success) throw new Error("could not make the test file");
}

const store = SINK === "s3"
  ? createS3BlobStore({
    endpoint: Deno.env.get("TEST_S3_ENDPOINT"),
    bucket: `rss-${crypto.randomUUID().slice(0, 8)}`,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
    uploadBuffers: Number(Deno.env.get("S3_UPLOAD_BUFFERS") ?? 12),
  })
  : undefined;
await store?.ensureBucket();

const DISCARD_GC = Deno.env.get("DISCARD_GC") === "1";

/** Reads and drops `stream`; DISCARD_GC=1: tells the chunk collector, as the S3 store does. */
async function discard(stream: ReadableStream<Uint8Array>): Promise<{ size: number }> {
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.byteLength;
    if (DISCARD_GC) collectSpentChunks(chunk.byteLength);
  }
  return { size };
}

/**
 * Reads one chunk, then stops reading for 5 s (as an upload waiting for a part buffer does), then drops the rest:
 * what a blocked upload holds in its queues shows as external memory meanwhile.
 */
async function stall(stream: ReadableStream<Uint8Array>): Promise<{ size: number }> {
  const reader = stream.getReader();
  let size = (await reader.read()).value?.byteLength ?? 0;
  await new Promise((resolve) => setTimeout(resolve, 5000));
  const g = (globalThis as { gc?: () => void }).gc;
  g?.();
  held.push(Deno.memoryUsage().external);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { size };
    size += value.byteLength;
    collectSpentChunks(value.byteLength);
  }
}
const held: number[] = [];

const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
  const { result } = await receiveUpload(request, async (incoming) => {
    const tap = TAP ? sha256Tap() : undefined;
    const stream = tap ? incoming.stream.pipeThrough(tap.stream) : incoming.stream;
    const key = `inputs/${crypto.randomUUID()}`;
    const { size } = store
      ? await store.put(key, stream)
      : SINK === "stall"
      ? await stall(stream)
      : await discard(stream);
    if (store) await store.delete(key);
    return { size, sha256: tap?.digest() };
  }, { maxBytes: 2 * UPLOAD_MB * 1024 * 1024 });
  return Response.json(result);
});

let proxy: Deno.ChildProcess | undefined;
const idle = { ...Deno.memoryUsage(), rss: rssMb() };
const peak = { rss: 0, heapUsed: 0, external: 0, heapTotal: 0, proxyRss: 0 };
const began = performance.now();
const sampler = setInterval(() => {
  const m = Deno.memoryUsage();
  const rss = rssMb();
  peak.rss = Math.max(peak.rss, rss);
  peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed);
  peak.heapTotal = Math.max(peak.heapTotal, m.heapTotal);
  peak.external = Math.max(peak.external, m.external);
  if (proxy) peak.proxyRss = Math.max(peak.proxyRss, rssMb(proxy.pid));
  if (TRACE) {
    console.error(
      `${((performance.now() - began) / 1000).toFixed(1)} s rss ${rss.toFixed(0)} heapUsed ${
        mb(m.heapUsed).toFixed(0)
      } heapTotal ${mb(m.heapTotal).toFixed(0)} external ${mb(m.external).toFixed(0)}`,
    );
  }
}, 100);

/** The Gateway's hop, alone in its own process: the body streamed on with fetch (chunked). */
const PROXY = `
const target = Deno.args[0];
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(port) }, (req) =>
  fetch(target, {
    method: "POST",
    headers: { "content-type": req.headers.get("content-type") ?? "" },
    body: Deno.args[1] === "transform" ? req.body?.pipeThrough(new TransformStream()) : req.body,
    duplex: "half",
  }));
`;
let url = `http://127.0.0.1:${server.addr.port}/uploads`;
if (Deno.env.get("PROXY") === "1") {
  proxy = new Deno.Command(Deno.execPath(), {
    args: ["eval", PROXY, url, Deno.env.get("PROXY_TRANSFORM") === "1" ? "transform" : "direct"],
    stdout: "piped",
  }).spawn();
  const reader = proxy.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  url = `http://127.0.0.1:${Number(value)}/uploads`;
}
const client = MODE === "form"
  ? `curl -sS -f -F file=@${file} '${url}'`
  : `curl -sS -f -X POST -T ${file} -H 'content-type: application/octet-stream' '${url}'`;
const results = await Promise.all(Array.from({ length: UPLOADS }, async () => {
  const out = await new Deno.Command("bash", { args: ["-c", client], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)) as { size: number };
}));
const seconds = (performance.now() - began) / 1000;
clearInterval(sampler);
for (const r of results) {
  if (r.size !== UPLOAD_MB * 1024 * 1024) throw new Error(`received ${r.size} bytes`);
}
proxy?.kill();
await proxy?.status;
await server.shutdown();
store?.close();

if (held.length) {
  console.log(
    `with all ${UPLOADS} blocked, after a full GC: external ${mb(Math.max(...held)).toFixed(1)} MiB ` +
      `(${mb(idle.external).toFixed(1)} idle): ${
        ((mb(Math.max(...held)) - mb(idle.external)) / UPLOADS).toFixed(2)
      } MiB per upload`,
  );
}
console.log(
  `${UPLOADS} x ${UPLOAD_MB} MiB, MODE=${MODE} SINK=${SINK} TAP=${TAP ? 1 : 0} S3_UPLOAD_BUFFERS=${
    Deno.env.get("S3_UPLOAD_BUFFERS") ?? 12
  }${proxy ? " PROXY=1" : ""}: ${seconds.toFixed(1)} s (${
    (UPLOADS * UPLOAD_MB / seconds).toFixed(0)
  } MiB/s); ` +
    `idle rss ${idle.rss.toFixed(0)} MB; peak rss ${peak.rss.toFixed(0)} MB, heapUsed ${
      mb(peak.heapUsed).toFixed(0)
    }, heapTotal ${mb(peak.heapTotal).toFixed(0)}, external ${mb(peak.external).toFixed(0)} MiB` +
    (proxy ? `; the proxy's peak rss ${peak.proxyRss.toFixed(0)} MB` : ""),
);
