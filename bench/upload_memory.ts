/**
 * Streams a 1 GiB body through the Gateway and the Upload service into S3 (real mode: RabbitMQ, Redis, s3rver) and
 * reports the peak resident memory of both processes, sampled from /proc every 50 ms and read from VmHWM at the end.
 *
 *   deno task bench:upload-memory                               # 1 GiB of zeros piped: chunked, raw body
 *   RAW_FILE=/tmp/big.bin deno task bench:upload-memory         # curl -T file: raw body with Content-Length
 *   FORM_FILE=/tmp/big.bin deno task bench:upload-memory        # curl -F file=@...: multipart
 *   TARGET=upload SIZE_MB=200 deno task bench:upload-memory     # straight to the Upload service
 *   UPLOADS=20 FORM_FILE=/tmp/big.bin deno task bench:upload-memory   # 20 such uploads at once
 *   S3_UPLOAD_BUFFERS=12 ...                                    # Upload's part budget, if not the default
 * @module
 */
import { startProduct } from "../e2e/product.ts";

const file = Deno.env.get("FORM_FILE") ?? Deno.env.get("RAW_FILE");
const total = file ? Deno.statSync(file).size : Number(Deno.env.get("SIZE_MB") ?? 1024) * 1024 * 1024;
const sizeMb = Math.round(total / (1024 * 1024));
/** How many clients upload at once, each the same body. */
const uploads = Number(Deno.env.get("UPLOADS") ?? 1);

function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

/**
 * The client's command: a multipart form of FORM_FILE (curl -F, with Content-Length), a raw body of RAW_FILE
 * (curl -T file, with Content-Length), or by default a raw body of SIZE_MB zeros from a pipe (chunked).
 */
function command(target: string): string {
  const form = Deno.env.get("FORM_FILE");
  const raw = Deno.env.get("RAW_FILE");
  const type = "-H 'content-type: application/octet-stream'";
  if (form) return `curl -sS -F file=@${form} '${target}'`;
  if (raw) return `curl -sS -X POST -T ${raw} ${type} '${target}?filename=big.bin'`;
  return `head -c ${total} /dev/zero | curl -sS -X POST -T - ${type} '${target}?filename=big.bin'`;
}

const buffers = Deno.env.get("S3_UPLOAD_BUFFERS");
const product = await startProduct(0, {
  MAX_UPLOAD_BYTES: String(total + 1024 * 1024),
  ...(buffers ? { S3_UPLOAD_BUFFERS: buffers } : {}),
});
try {
  const watched = product.services.filter((s) => s.name === "gateway" || s.name === "upload");
  const peaks = new Map(watched.map((s) => [s.name, { start: memoryOf(s.process.pid).rss, peak: 0 }]));
  const sampler = setInterval(() => {
    for (const s of watched) {
      const p = peaks.get(s.name)!;
      p.peak = Math.max(p.peak, memoryOf(s.process.pid).rss);
    }
  }, 50);
  const started = performance.now();
  const target = Deno.env.get("TARGET") === "upload"
    ? `${product.uploadUrl}/uploads`
    : `${product.url}/v1/jobs`;
  // The client is curl, as a user's would be, in its own process: `head -c N /dev/zero | curl -T -`.
  const jobs = await Promise.all(Array.from({ length: uploads }, async () => {
    const output = await new Deno.Command("bash", { args: ["-c", command(target)], stdout: "piped" })
      .output();
    const job = JSON.parse(new TextDecoder().decode(output.stdout) || "{}");
    if (output.code !== 0 || job.input?.size !== total) {
      throw new Error(`upload failed: ${JSON.stringify(job)}`);
    }
    return job as { id: string };
  }));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  for (const job of jobs) {
    const stored = await product.storage.head(`inputs/${job.id}`);
    if (stored?.size !== total) throw new Error(`stored ${stored?.size} bytes, sent ${total}`);
  }
  console.log(
    `Streamed ${uploads} x ${sizeMb} MiB at once through ${
      Deno.env.get("TARGET") === "upload" ? "Upload" : "Gateway -> Upload"
    } -> S3 in ${seconds.toFixed(1)} s (${(uploads * sizeMb / seconds).toFixed(0)} MiB/s)`,
  );
  console.log("| process | RSS at start (MB) | peak RSS sampled (MB) | VmHWM (MB) |");
  console.log("|---|---|---|---|");
  for (const s of watched) {
    const p = peaks.get(s.name)!;
    console.log(
      `| ${s.name} | ${p.start.toFixed(0)} | ${p.peak.toFixed(0)} | ${
        memoryOf(s.process.pid).hwm.toFixed(0)
      } |`,
    );
  }
} finally {
  await product.stop();
}
