/**
 * Streams a 1 GiB body through the Gateway and the Upload service into S3 (real mode: RabbitMQ, Redis, s3rver) and
 * reports the peak resident memory of both processes, sampled from /proc every 50 ms and read from VmHWM at the end.
 *
 *   deno task bench:upload-memory            # 1 GiB
 *   SIZE_MB=200 deno task bench:upload-memory
 * @module
 */
import { startProduct } from "../e2e/product.ts";

const sizeMb = Number(Deno.env.get("SIZE_MB") ?? 1024);
const total = sizeMb * 1024 * 1024;

function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

const product = await startProduct(0, { MAX_UPLOAD_BYTES: String(total + 1024 * 1024) });
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
  const target = Deno.env.get("TARGET") === "upload" ? `${product.uploadUrl}/uploads` : `${product.url}/v1/jobs`;
  // The client is curl, as a user's would be, in its own process: `head -c N /dev/zero | curl -T -`.
  const curl = new Deno.Command("bash", {
    args: ["-c", Deno.env.get("FORM_FILE")
      ? `curl -sS -F file=@${Deno.env.get("FORM_FILE")} '${target}'`
      : `head -c ${total} /dev/zero | curl -sS -X POST -T - -H 'content-type: application/octet-stream' '${target}?filename=big.bin'`],
    stdout: "piped",
  }).spawn();
  const output = await curl.output();
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const response = { status: output.code === 0 ? 202 : 0, json: () => JSON.parse(new TextDecoder().decode(output.stdout)) };
  const job = response.json();
  if (response.status !== 202 || job.input?.size !== total) {
    throw new Error(`upload failed: ${JSON.stringify(job)}`);
  }
  const stored = await product.storage.head(`inputs/${job.id}`);
  if (stored?.size !== total) throw new Error(`stored ${stored?.size} bytes, sent ${total}`);
  console.log(
    `Streamed ${sizeMb} MiB through Gateway -> Upload -> S3 in ${seconds.toFixed(1)} s (${
      (sizeMb / seconds).toFixed(0)
    } MiB/s)`,
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
