/**
 * Where the time of figure 3 (an upload through the Gateway and Upload, against `curl -T` straight to S3) goes:
 * the same file sent every way in between, each the median of RUNS alternating runs, against the test s3rver.
 *
 *   bash scripts/test_servers.sh deno run -A bench/upload_breakdown.ts     # RUNS=3, UPLOAD_MB=285
 *   MEMORY=20 ONLY=none bash scripts/test_servers.sh deno run -A bench/upload_breakdown.ts   # peak RSS only
 *   ONLY=reference,Gateway bash scripts/test_servers.sh deno run -A bench/upload_breakdown.ts   # some cases
 *
 * @module
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { createS3BlobStore } from "@vmp3/adapters/s3";
import { sha256Tap } from "@vmp3/shared";
import { Readable } from "node:stream";
import { startProduct } from "../e2e/product.ts";
import { median, sh, timed } from "./measure.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 3);
/** How many raw uploads (`curl -T`) to send at once through the Gateway while the RSS of it and Upload is sampled. */
const MEMORY = Number(Deno.env.get("MEMORY") ?? 0);
const MB = Number(Deno.env.get("UPLOAD_MB") ?? 285);

const dir = await Deno.makeTempDir({ prefix: "vmp3-upload-breakdown-" });
const file = `${dir}/big.bin`;
await sh(`head -c ${MB * 1_000_000} /dev/urandom > '${file}'`);
const size = (await Deno.stat(file)).size;
const open = async () => (await Deno.open(file)).readable;

const product = await startProduct(0);
const bucket = product.bucket;
const s3 = new S3Client({
  endpoint: Deno.env.get("TEST_S3_ENDPOINT"),
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});
const store = createS3BlobStore({
  endpoint: Deno.env.get("TEST_S3_ENDPOINT"),
  bucket,
  region: "us-east-1",
  accessKeyId: "S3RVER",
  secretAccessKey: "S3RVER",
  forcePathStyle: true,
  checksum: "when_required",
});

/** A multipart upload straight from the file with the SDK: parts of `partMb`, `queue` in flight. */
async function sdkMultipart(key: string, partMb: number, queue: number): Promise<void> {
  const partSize = partMb * 1024 * 1024;
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const f = await Deno.open(file);
  const parts: { PartNumber: number; ETag?: string }[] = [];
  const inFlight = new Set<Promise<void>>();
  let n = 0;
  for (let offset = 0; offset < size; offset += partSize) {
    while (inFlight.size >= queue) await Promise.race(inFlight);
    const buffer = new Uint8Array(Math.min(partSize, size - offset));
    let read = 0;
    while (read < buffer.byteLength) read += (await f.read(buffer.subarray(read))) ?? 0;
    const PartNumber = ++n;
    const p: Promise<void> = s3.send(
      new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber, Body: buffer }),
    ).then((out) => {
      parts.push({ PartNumber, ETag: out.ETag });
    }).finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  f.close();
  parts.sort((a, b) => a.PartNumber - b.PartNumber);
  const complete = performance.now();
  await s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
  completeTimes.push((performance.now() - complete) / 1000);
}
const completeTimes: number[] = [];

const cases: Record<string, (run: number) => Promise<unknown>> = {
  "curl -T presigned PUT to s3rver (reference)": async (run) => {
    const url = await getSignedUrl(s3, new PutObjectCommand({ Bucket: bucket, Key: `direct-${run}` }), {
      expiresIn: 600,
    });
    await sh(`curl -sS -f -T '${file}' '${url}' -o /dev/null`);
  },
  "SDK PutObject, file stream, ContentLength": async (run) => {
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `sdk-put-${run}`,
        Body: Readable.fromWeb(await open() as never),
        ContentLength: size,
      }),
    );
  },
  "SDK multipart from the file, 8 MiB x 2": (run) => sdkMultipart(`mp8-${run}`, 8, 2),
  "SDK multipart from the file, 16 MiB x 4": (run) => sdkMultipart(`mp16-${run}`, 16, 4),
  "S3BlobStore.put, file stream": async (run) => await store.put(`store-${run}`, await open()),
  "S3BlobStore.put, file stream, size hint": async (run) =>
    await (store.put as (k: string, b: ReadableStream<Uint8Array>, o: unknown) => Promise<unknown>)(
      `store-sized-${run}`,
      await open(),
      { size },
    ),
  "S3BlobStore.put, file stream through sha256 tap": async (run) => {
    const tap = sha256Tap();
    await store.put(`store-tap-${run}`, (await open()).pipeThrough(tap.stream));
  },
  "sha256 tap alone (file -> tap -> discard)": async () => {
    const tap = sha256Tap();
    await (await open()).pipeThrough(tap.stream).pipeTo(new WritableStream());
  },
  "curl -T to Upload's POST /uploads (no Gateway)": () =>
    sh(
      `curl -sS -f -X POST -T '${file}' -H 'content-type: video/mp4' '${product.uploadUrl}/uploads?filename=big.mp4' ` +
        "-o /dev/null",
    ),
  "curl -T through Gateway and Upload (figure 3)": () =>
    sh(
      `curl -sS -f -X POST -T '${file}' -H 'content-type: video/mp4' '${product.url}/v1/jobs?filename=big.mp4' ` +
        "-o /dev/null",
    ),
  "curl -F through Gateway and Upload (a form)": () =>
    sh(`curl -sS -f -F 'file=@${file};type=video/mp4' '${product.url}/v1/jobs' -o /dev/null`),
};
/** Comma-separated parts of case names: only those cases run. */
function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** `MEMORY` raw uploads at once through the Gateway: the time they took and the peak RSS of Gateway and Upload. */
async function memoryRun(form: boolean): Promise<string> {
  const watched = product.services.filter((s) => s.name === "gateway" || s.name === "upload");
  const start = Object.fromEntries(watched.map((s) => [s.name, rssMb(s.process.pid)]));
  const peak = { ...start };
  const timer = setInterval(() => {
    for (const s of watched) peak[s.name] = Math.max(peak[s.name], rssMb(s.process.pid));
  }, 100);
  const began = performance.now();
  const send = form
    ? (i: number) => `curl -sS -f -F 'file=@${file};type=video/mp4' '${product.url}/v1/jobs?comment=m${i}'`
    : (i: number) =>
      `curl -sS -f -X POST -T '${file}' -H 'content-type: video/mp4' '${product.url}/v1/jobs?comment=m${i}'`;
  try {
    await Promise.all(Array.from({ length: MEMORY }, (_, i) => sh(`${send(i)} -o /dev/null`)));
  } finally {
    clearInterval(timer);
  }
  const seconds = (performance.now() - began) / 1000;
  return `${MEMORY} ${form ? "form (-F)" : "raw (-T)"} uploads at once: ${seconds.toFixed(1)} s; ` +
    watched.map((s) => `${s.name} RSS ${start[s.name].toFixed(0)} → peak ${peak[s.name].toFixed(0)} MB`)
      .join(", ");
}

const memory: string[] = [];
const only = Deno.env.get("ONLY")?.split(",");
const times: Record<string, number[]> = {};
try {
  for (let run = 0; run < RUNS; run++) {
    for (const [name, fn] of Object.entries(cases)) {
      if (only && !only.some((part) => name.includes(part))) continue;
      console.error(`run ${run + 1}/${RUNS}: ${name}`);
      (times[name] ??= []).push(await timed(() => fn(run)));
    }
  }
  if (MEMORY > 0) {
    console.error(`${MEMORY} raw uploads at once`);
    memory.push(await memoryRun(false));
    if (Deno.env.get("MEMORY_FORM")) memory.push(await memoryRun(true));
  }
} finally {
  store.close();
  s3.destroy();
  await product.stop();
  await Deno.remove(dir, { recursive: true });
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
console.log(`Median of ${RUNS} runs, ${(size / 1e6).toFixed(0)} MB of random bytes, load after: ${load}\n`);
console.log("| path | time | MB/s |\n|---|---|---|");
for (const [name, values] of Object.entries(times)) {
  const t = median(values);
  console.log(`| ${name} | ${t.toFixed(2)} s | ${(size / 1e6 / t).toFixed(0)} |`);
}
for (const line of memory) console.log(`\n${line}`);
if (completeTimes.length) {
  console.log(
    `\nCompleteMultipartUpload alone (SDK multipart cases): median ${median(completeTimes).toFixed(2)} s`,
  );
}
