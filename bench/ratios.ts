/**
 * Side-by-side ratios (issue 6): our pipeline against plain FFmpeg on the same file, and our upload against a
 * direct PUT to the same S3 server, in one run on one machine, each the median of RUNS alternating runs. Real mode:
 * RabbitMQ, Redis and s3rver from scripts/test_servers.sh, the services as their own processes (e2e/product.ts).
 *
 *   deno task bench                      # RUNS=5, BIG_SECONDS=300 (a 5-minute 720p h264/aac mp4, ~285 MB)
 *   RUNS=3 BIG_SECONDS=60 deno task bench
 *
 * Prints a Markdown table and writes its figures into docs/benchmarks.json (keeping the file's other keys).
 * @module
 */
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { startProduct } from "../e2e/product.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 5);
const BIG_SECONDS = Number(Deno.env.get("BIG_SECONDS") ?? 300);

async function sh(command: string): Promise<string> {
  const out = await new Deno.Command("bash", { args: ["-c", command], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${command}\n${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

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
await makeVideo(big, BIG_SECONDS);
await makeVideo(small, 10);
const bigMb = (await Deno.stat(big)).size / 1e6;

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

// 1 and 2: conversions, with one worker.
let product = await startProduct(1);
try {
  for (let run = 0; run < RUNS; run++) {
    console.error(`conversion run ${run + 1}/${RUNS}`);
    figures.bigJob.reference.push(await timed(() => plainFfmpeg(big, `${dir}/plain.mp3`)));
    // Upload finished (the 202) -> MP3 ready.
    // The plain ffmpeg's options (192k CBR), and a tag that differs per run, or the content cache would answer
    // every run after the first without converting.
    const options = `bitrate=192&comment=bench-run-${run}`;
    const created = JSON.parse(await sh(`curl -sS -F file=@${big} '${product.url}/v1/jobs?${options}'`));
    figures.bigJob.ours.push(await timed(() => waitDone(product.url, created.id)));

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
} finally {
  await product.stop();
}

// 3: uploads, with no worker converting meanwhile.
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
