/**
 * Side-by-side ratios (issue 6): our pipeline against plain FFmpeg on the same file, and our upload against a
 * direct PUT to the same S3 server, in one run on one machine, each the median of RUNS alternating runs. Real mode:
 * RabbitMQ, Redis and s3rver from scripts/test_servers.sh, the services as their own processes (e2e/product.ts).
 *
 *   deno task bench                      # RUNS=5, BIG_SECONDS=300 (a 5-minute 720p h264/aac mp4, ~285 MB)
 *   RUNS=3 BIG_SECONDS=60 deno task bench
 *   RUNS=3 ONLY=upload deno task bench   # figure 3 alone (prints its row; docs/benchmarks.json is left alone)
 *   RUNS=5 ONLY=small TIMELINE=1 deno task bench   # figure 2 alone, then where a small job's time goes
 *
 * ONLY=small runs figure 2 alone (ONLY=big, figure 1 alone); neither then writes docs/benchmarks.json. TIMELINE=1
 * then follows RUNS small jobs step by step (202, converting, done, download) next to the worker's own step times,
 * and prints the worker's step times of each big job.
 *
 * Prints a Markdown table and writes its figures into docs/benchmarks.json (keeping the file's other keys).
 * @module
 */
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { startProduct } from "../e2e/product.ts";
import { median, sh, timed } from "./measure.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 5);
const BIG_SECONDS = Number(Deno.env.get("BIG_SECONDS") ?? 300);
const ONLY = Deno.env.get("ONLY");
// "upload": figure 3 alone.
if (ONLY !== undefined && ONLY !== "small" && ONLY !== "big" && ONLY !== "upload") {
  throw new Error("ONLY is small, big or upload");
}
const TIMELINE = Deno.env.get("TIMELINE") === "1";

async function makeVideo(path: string, seconds: number): Promise<void> {
  await sh(
    `ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=1280x720:r=30:d=${seconds} ` +
      `-f lavfi -i sine=f=440:sample_rate=48000:d=${seconds} -c:v libx264 -preset ultrafast -pix_fmt yuv420p ` +
      `-c:a aac -b:a 160k -shortest '${path}'`,
  );
}

/** What a user would run instead of us: FFmpeg alone, same options (192k CBR MP3). */
const plainFfmpeg = (input: string, output: string) =>
  sh(`ffmpeg -nostdin -v error -y -i '${input}' -vn -c:a libmp3lame -b:a 192k '${output}'`);

async function waitDone(base: string, id: string): Promise<void> {
  for (;;) {
    const job = await (await fetch(`${base}/v1/jobs/${id}`)).json();
    if (job.status === "done") return;
    if (job.status === "failed") throw new Error(`job ${id} failed: ${JSON.stringify(job.error)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const dir = await Deno.makeTempDir({ prefix: "vmp3-bench-" });
const big = `${dir}/big.mp4`;
const small = `${dir}/small.mp4`;
console.error(`Making a ${BIG_SECONDS} s 720p video and a 10 s one…`);
if (ONLY !== "small") await makeVideo(big, BIG_SECONDS);
await makeVideo(small, 10);
const bigMb = ONLY === "small" ? 0 : (await Deno.stat(big)).size / 1e6;

const mp3Source = `${dir}/source.mp3`;
await sh(
  `ffmpeg -nostdin -v error -y -f lavfi -i sine=f=440:sample_rate=44100:d=${BIG_SECONDS} -ac 2 ` +
    `-c:a libmp3lame -b:a 192k '${mp3Source}'`,
);

const figures: Record<string, { ours: number[]; reference: number[] }> = {
  bigJob: { ours: [], reference: [] },
  smallConvert: { ours: [], reference: [] },
  upload: { ours: [], reference: [] },
  // 6. Fast paths: "ours" is the fast path, "reference" the slow one.
  copyVsEncode: { ours: [], reference: [] },
  cacheHitVsFresh: { ours: [], reference: [] },
};

/** Time from an accepted upload (its 202) to the job being done. */
async function jobTime(base: string, file: string, options: string): Promise<number> {
  const created = JSON.parse(await sh(`curl -sS -f -F file=@${file} '${base}/v1/jobs?${options}'`));
  return await timed(() => waitDone(base, created.id));
}

/** The worker's last log line of job `id`: its step times (written just after the job is reported done). */
async function workerSteps(workerLog: string, id: string): Promise<string | undefined> {
  for (let tries = 0; tries < 40; tries++) {
    const line = (await Deno.readTextFile(workerLog)).split("\n").find((l) =>
      l.startsWith(`job ${id}: done`)
    );
    if (line) return line.replace(/^job \S+ /, "");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * One small job step by step, from the client's side (ms since its upload started): the 202, first seen
 * converting, first seen done (status read every few ms), the MP3 downloaded; and the worker's own steps.
 */
async function timeline(base: string, workerLog: string, run: number): Promise<string> {
  const start = performance.now();
  const since = () => Math.round(performance.now() - start);
  const created = JSON.parse(
    await sh(`curl -sS -f -F file=@${small} '${base}/v1/jobs?bitrate=192&comment=timeline-${run}'`),
  );
  const accepted = since();
  let converting: number | undefined;
  for (;;) {
    const job = await (await fetch(`${base}/v1/jobs/${created.id}`)).json();
    if (job.status === "converting") converting ??= since();
    if (job.status === "done") break;
    if (job.status === "failed") throw new Error(`job ${created.id} failed: ${JSON.stringify(job.error)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  const done = since();
  await sh(`curl -sS -f '${base}/v1/jobs/${created.id}/download' -o /dev/null`);
  const downloaded = since();
  const steps = await workerSteps(workerLog, created.id);
  return `202 ${accepted} ms, converting seen ${converting ?? "-"} ms, done seen ${done} ms, ` +
    `downloaded ${downloaded} ms; worker ${steps}`;
}

// 1 and 2: conversions, with one worker.
let product = await startProduct(ONLY === "upload" ? 0 : 1);
try {
  for (let run = 0; run < (ONLY === "upload" ? 0 : RUNS); run++) {
    console.error(`conversion run ${run + 1}/${RUNS}`);
    if (ONLY === "small") {
      figures.smallConvert.reference.push(await timed(() => plainFfmpeg(small, `${dir}/plain-small.mp3`)));
      figures.smallConvert.ours.push(
        await timed(() =>
          sh(
            `curl -sS -f -F file=@${small} '${product.url}/v1/convert?bitrate=192&comment=bench-run-${run}' -o /dev/null`,
          )
        ),
      );
      continue;
    }
    figures.bigJob.reference.push(await timed(() => plainFfmpeg(big, `${dir}/plain.mp3`)));
    // Upload finished (the 202) -> MP3 ready.
    // The plain ffmpeg's options (192k CBR), and a tag that differs per run, or the content cache would answer
    // every run after the first without converting.
    const options = `bitrate=192&comment=bench-run-${run}`;
    const created = JSON.parse(await sh(`curl -sS -F file=@${big} '${product.url}/v1/jobs?${options}'`));
    figures.bigJob.ours.push(await timed(() => waitDone(product.url, created.id)));
    if (TIMELINE) {
      const workerLog = product.services.find((s) => s.name === "convert-1")!.log;
      console.log(
        `- big job: 202 → done ${figures.bigJob.ours.at(-1)!.toFixed(2)} s; worker ${await workerSteps(
          workerLog,
          created.id,
        )}`,
      );
    }
    if (ONLY === "big") continue;

    figures.smallConvert.reference.push(await timed(() => plainFfmpeg(small, `${dir}/plain-small.mp3`)));
    figures.smallConvert.ours.push(
      await timed(() =>
        sh(`curl -sS -f -F file=@${small} '${product.url}/v1/convert?${options}' -o ${dir}/ours-small.mp3`)
      ),
    );

    // 6. An MP3 source: copied (auto) against encoded (an explicit bitrate), 202 -> done.
    figures.copyVsEncode.ours.push(await jobTime(product.url, mp3Source, `comment=copy-${run}`));
    figures.copyVsEncode.reference.push(
      await jobTime(product.url, mp3Source, `bitrate=192&comment=enc-${run}`),
    );
    // 6. The same small clip and options as a job already done (a cache hit) against new options (a conversion).
    const convert = (options: string) =>
      timed(() => sh(`curl -sS -f -F file=@${small} '${product.url}/v1/convert?${options}' -o /dev/null`));
    if (run === 0) await convert("comment=cached");
    figures.cacheHitVsFresh.ours.push(await convert("comment=cached"));
    figures.cacheHitVsFresh.reference.push(await convert(`comment=fresh-${run}`));
  }
  if (TIMELINE && ONLY !== "big") {
    const workerLog = product.services.find((s) => s.name === "convert-1")!.log;
    for (let run = 0; run < RUNS; run++) console.log(`- ${await timeline(product.url, workerLog, run)}`);
  }
} finally {
  await product.stop();
}
if (ONLY === "small" || ONLY === "big") {
  const [name, key] = ONLY === "small"
    ? ["2. small file, whole /v1/convert", "smallConvert"]
    : ["1. big file, 202 → done", "bigJob"];
  const { ours, reference } = figures[key];
  console.log(
    `${name}: ours ${median(ours).toFixed(2)} s, plain ffmpeg ${median(reference).toFixed(2)} s, ratio ` +
      `**${(median(ours) / median(reference)).toFixed(2)}** (median of ${RUNS}; ours ${
        ours.map((v) => v.toFixed(2)).join(" ")
      })`,
  );
  await Deno.remove(dir, { recursive: true });
  Deno.exit(0);
}

// 3: uploads, with no worker converting meanwhile. A raw body with its Content-Length, as `curl -T` sends it:
// Upload streams it into one PutObject (adapters/s3_blob_store.ts).
product = await startProduct(0);
try {
  const s3 = new S3Client({
    endpoint: Deno.env.get("TEST_S3_ENDPOINT"),
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  });
  for (let run = 0; run < RUNS; run++) {
    console.error(`upload run ${run + 1}/${RUNS}`);
    const url = await getSignedUrl(
      s3,
      new PutObjectCommand({ Bucket: product.bucket, Key: `direct-${run}` }),
      {
        expiresIn: 600,
      },
    );
    figures.upload.reference.push(await timed(() => sh(`curl -sS -f -T ${big} '${url}' -o /dev/null`)));
    figures.upload.ours.push(
      await timed(() =>
        sh(
          `curl -sS -f -X POST -T ${big} -H 'content-type: video/mp4' '${product.url}/v1/jobs?filename=big.mp4' ` +
            "-o /dev/null",
        )
      ),
    );
  }
  s3.destroy();
} finally {
  await product.stop();
  await Deno.remove(dir, { recursive: true });
}

const row = (name: string, ours: number, reference: number, ratio: number, goal: string) =>
  `| ${name} | ${ours.toFixed(2)} s | ${reference.toFixed(2)} s | **${ratio.toFixed(2)}** | ${goal} |`;
const m = Object.fromEntries(
  Object.entries(figures).map(([k, v]) => [k, { ours: median(v.ours), reference: median(v.reference) }]),
);
if (ONLY === "upload") {
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(`Median of ${RUNS} runs, ${bigMb.toFixed(0)} MB, load after: ${load}`);
  console.log(
    row("3. upload", m.upload.ours, m.upload.reference, m.upload.reference / m.upload.ours, "≥ 0.8"),
  );
  Deno.exit(0);
}
const table = [
  `Median of ${RUNS} runs, ${BIG_SECONDS} s 720p mp4 (${bigMb.toFixed(0)} MB) and a 10 s clip:`,
  "",
  "| figure | ours | reference | ratio | goal |",
  "|---|---|---|---|---|",
  row(
    "1. job overhead, big file: 202 → MP3 ready / plain ffmpeg",
    m.bigJob.ours,
    m.bigJob.reference,
    m.bigJob.ours / m.bigJob.reference,
    "≤ 1.15",
  ),
  row(
    "2. small file: whole `curl -F … /v1/convert` / plain ffmpeg",
    m.smallConvert.ours,
    m.smallConvert.reference,
    m.smallConvert.ours / m.smallConvert.reference,
    "≤ 1.5",
  ),
  row(
    "3. upload: direct `curl -T` to S3 / ours through Gateway and Upload",
    m.upload.ours,
    m.upload.reference,
    m.upload.reference / m.upload.ours,
    "≥ 0.8",
  ),
  row(
    `6a. MP3 source (${BIG_SECONDS} s): copy / encode, 202 → done`,
    m.copyVsEncode.ours,
    m.copyVsEncode.reference,
    m.copyVsEncode.ours / m.copyVsEncode.reference,
    "(lower is better)",
  ),
  row(
    "6b. small clip, whole `/v1/convert`: cache hit / fresh conversion",
    m.cacheHitVsFresh.ours,
    m.cacheHitVsFresh.reference,
    m.cacheHitVsFresh.ours / m.cacheHitVsFresh.reference,
    "(lower is better)",
  ),
].join("\n");
console.log(table);
// Merged into what the file holds (bench/throughput.ts keeps its figures there too).
const jsonUrl = new URL("../docs/benchmarks.json", import.meta.url);
const json = JSON.parse(await Deno.readTextFile(jsonUrl).catch(() => "{}"));
Object.assign(json, {
  date: new Date().toISOString(),
  runs: RUNS,
  bigSeconds: BIG_SECONDS,
  bigMb,
  figures,
  medians: m,
});
await Deno.writeTextFile(jsonUrl, JSON.stringify(json, null, 2) + "\n");
