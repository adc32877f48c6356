/**
 * Load (issue 4), in real mode (RabbitMQ, Redis, s3rver from scripts/test_servers.sh; the services as processes):
 *
 *   uploads  N concurrent uploads of one big video (default 20 x ~500 MB), each its own job: the peak RSS of
 *            Upload and Gateway, and every job converted by two workers.
 *   queue    M small jobs (default 2000) queued with no worker running, then two workers: all done, none
 *            converted twice (one "converted" log line per job), RabbitMQ's memory sampled throughout.
 *   status   wrk on GET /v1/jobs/{id} while jobs convert, against wrk on a bare Hono hello-world: requests per
 *            second and any error.
 *
 *   deno task bench:load                                  # all three
 *   SCENARIOS=queue,status JOBS=500 deno task bench:load
 *   SCENARIOS=uploads UPLOADS=4 UPLOAD_MB=100 deno task bench:load
 *   S3_UPLOAD_BUFFERS=12 SCENARIOS=uploads deno task bench:load   # Upload's part budget, if not the default
 *
 * Prints Markdown for docs/reliability.md.
 * @module
 */
import { Hono } from "hono";
import { startProduct } from "../e2e/product.ts";
import { sh } from "./measure.ts";

const SCENARIOS = (Deno.env.get("SCENARIOS") ?? "uploads,queue,status").split(",");
const UPLOADS = Number(Deno.env.get("UPLOADS") ?? 20);
const UPLOAD_MB = Number(Deno.env.get("UPLOAD_MB") ?? 500);
const JOBS = Number(Deno.env.get("JOBS") ?? 2000);

const dir = await Deno.makeTempDir({ prefix: "vmp3-load-" });

function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** RabbitMQ's own count of the memory it uses, in MB (rabbitmqctl status). */
async function rabbitMemoryMb(): Promise<number> {
  const ctl = Deno.env.get("TEST_RABBITMQ_CTL");
  if (!ctl) return NaN;
  const status = JSON.parse(await sh(`${ctl} status --formatter json`));
  return Number(status.memory?.total?.rss ?? status.memory?.total?.erlang ?? NaN) / 1e6;
}

async function job(base: string, id: string): Promise<Record<string, unknown>> {
  return await (await fetch(`${base}/v1/jobs/${id}`)).json();
}

/** Waits until every job in `ids` is final; returns how many ended done. */
async function waitAll(
  base: string,
  ids: string[],
  timeoutMs: number,
): Promise<{ done: number; failed: string[] }> {
  const deadline = Date.now() + timeoutMs;
  const open = new Set(ids);
  const failed: string[] = [];
  while (open.size > 0) {
    if (Date.now() > deadline) throw new Error(`${open.size} jobs still open after ${timeoutMs} ms`);
    for (const id of [...open].slice(0, 200)) {
      const j = await job(base, id);
      if (j.status === "done" || j.status === "failed") open.delete(id);
      if (j.status === "failed") failed.push(`${id}: ${JSON.stringify(j.error)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { done: ids.length - failed.length, failed };
}

async function video(path: string, seconds: number, size = "1280x720"): Promise<void> {
  await sh(
    `ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=${size}:r=30:d=${seconds} ` +
      `-f lavfi -i sine=f=440:sample_rate=48000:d=${seconds} -c:v libx264 -preset ultrafast -pix_fmt yuv420p ` +
      `-c:a aac -b:a 128k -shortest '${path}'`,
  );
}

const report: string[] = [`Measured on ${new Date().toISOString().slice(0, 10)}.`, ""];

if (SCENARIOS.includes("uploads")) {
  const big = `${dir}/big.mp4`;
  // testsrc2 720p at ultrafast makes about 0.95 MB a second.
  console.error(`Making a ~${UPLOAD_MB} MB video…`);
  await video(big, Math.round(UPLOAD_MB / 0.95));
  const bytes = (await Deno.stat(big)).size;
  const buffers = Deno.env.get("S3_UPLOAD_BUFFERS"); // Upload's part budget, if not the default
  const product = await startProduct(2, {
    MAX_UPLOAD_BYTES: String(bytes * 2),
    ...(buffers ? { S3_UPLOAD_BUFFERS: buffers } : {}),
  });
  try {
    const watched = product.services.filter((s) => s.name === "gateway" || s.name === "upload");
    const start = Object.fromEntries(watched.map((s) => [s.name, rssMb(s.process.pid)]));
    const peak: Record<string, number> = { ...start };
    const sampler = setInterval(() => {
      for (const s of watched) peak[s.name] = Math.max(peak[s.name], rssMb(s.process.pid));
    }, 50);
    const began = performance.now();
    const created = await Promise.all(
      Array.from(
        { length: UPLOADS },
        (_, i) =>
          sh(`curl -sS -f -F file=@${big} '${product.url}/v1/jobs?bitrate=128&comment=load-${i}'`).then(
            JSON.parse,
          ),
      ),
    );
    const uploadSeconds = (performance.now() - began) / 1000;
    clearInterval(sampler);
    const result = await waitAll(product.url, created.map((c) => c.id), 60 * 60_000);
    const allSeconds = (performance.now() - began) / 1000;
    const gb = (bytes * UPLOADS) / 1e9;
    report.push(
      `### ${UPLOADS} concurrent uploads of a ${(bytes / 1e6).toFixed(0)} MB video (${
        gb.toFixed(1)
      } GB in all)`,
      "",
      `All ${UPLOADS} accepted in ${uploadSeconds.toFixed(1)} s (${
        (gb * 1000 / uploadSeconds).toFixed(0)
      } MB/s); ` +
        `${result.done} of ${UPLOADS} converted by two workers, all done ${
          allSeconds.toFixed(0)
        } s after the start.` +
        (result.failed.length ? ` Failed: ${result.failed.join("; ")}` : ""),
      "",
      "| process | RSS at start | peak RSS during the uploads |",
      "|---|---|---|",
      ...watched.map((s) =>
        `| ${s.name} | ${start[s.name].toFixed(0)} MB | **${peak[s.name].toFixed(0)} MB** |`
      ),
      "",
    );
  } finally {
    await product.stop();
  }
}

if (SCENARIOS.includes("queue") || SCENARIOS.includes("status")) {
  const clip = `${dir}/clip.mp4`;
  await video(clip, 2, "320x240");
  const product = await startProduct(0);
  try {
    // Queued first, with no worker: the broker holds them all.
    const ids: string[] = [];
    const bytes = await Deno.readFile(clip);
    const began = performance.now();
    const submitters = 8;
    let next = 0;
    await Promise.all(Array.from({ length: submitters }, async () => {
      while (next < JOBS) {
        const i = next++;
        const form = new FormData();
        form.append("file", new File([bytes], "clip.mp4"));
        const response = await fetch(`${product.url}/v1/jobs?comment=queued-${i}`, {
          method: "POST",
          body: form,
        });
        if (response.status !== 202) throw new Error(`job ${i}: ${response.status} ${await response.text()}`);
        ids.push((await response.json()).id);
      }
    }));
    const queuedSeconds = (performance.now() - began) / 1000;
    let rabbitPeak = await rabbitMemoryMb();
    const rabbitQueued = rabbitPeak;
    const rabbitSampler = setInterval(async () => {
      rabbitPeak = Math.max(rabbitPeak, await rabbitMemoryMb().catch(() => 0));
    }, 1000);

    const converting = performance.now();
    await product.startWorker(1);
    await product.startWorker(2);

    let statusRows: string[] = [];
    if (SCENARIOS.includes("status")) {
      // While the workers convert: wrk on one job's status, then on a bare Hono app, the same settings.
      const wrk = async (url: string) => {
        const out = await sh(`wrk -t2 -c64 -d10s --latency '${url}'`);
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
        const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) +
          Number(
            /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)?.slice(1)
              .reduce((a, b) => a + Number(b), 0) ?? 0,
          );
        const p99 = /99%\s+([\d.]+\w+)/.exec(out)?.[1] ?? "?";
        return { rps, errors, p99 };
      };
      const ours = await wrk(`${product.url}/v1/jobs/${ids[ids.length - 1]}`);
      const hello = new Hono().get("/", (c) => c.json({ ok: true }));
      const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, hello.fetch);
      const bare = await wrk(`http://127.0.0.1:${server.addr.port}/`);
      await server.shutdown();
      statusRows = [
        "### Status reads while jobs convert (`wrk -t2 -c64 -d10s`)",
        "",
        "| target | requests/s | p99 latency | errors |",
        "|---|---|---|---|",
        `| GET /v1/jobs/{id} (Gateway → Metadata → Redis) | ${
          ours.rps.toFixed(0)
        } | ${ours.p99} | ${ours.errors} |`,
        `| bare Hono hello-world, same machine | ${bare.rps.toFixed(0)} | ${bare.p99} | ${bare.errors} |`,
        `| ratio | **${(ours.rps / bare.rps).toFixed(2)}** | | |`,
        "",
      ];
    }

    const result = await waitAll(product.url, ids, 60 * 60_000);
    const convertSeconds = (performance.now() - converting) / 1000;
    clearInterval(rabbitSampler);
    // One "converted" line per conversion in the workers' logs: a job converted twice shows twice.
    const logs = await product.logs();
    const counts = new Map<string, number>();
    for (const match of logs.matchAll(/job ([0-9a-f-]{36}): done in/g)) {
      counts.set(match[1], (counts.get(match[1]) ?? 0) + 1);
    }
    const twice = [...counts.values()].filter((n) => n > 1).length;
    if (SCENARIOS.includes("queue")) {
      report.push(
        `### ${JOBS} small jobs queued, then two workers`,
        "",
        `Queued in ${queuedSeconds.toFixed(1)} s (${
          (JOBS / queuedSeconds).toFixed(0)
        } jobs/s, 8 submitters, no worker); ` +
          `converted in ${convertSeconds.toFixed(1)} s (${(JOBS / convertSeconds).toFixed(1)} jobs/s). ` +
          `${result.done} done, ${result.failed.length} failed; ${counts.size} conversions logged, ${twice} jobs ` +
          `converted more than once. RabbitMQ memory: ${rabbitQueued.toFixed(0)} MB with all queued, peak ` +
          `${rabbitPeak.toFixed(0)} MB.`,
        "",
      );
    }
    report.push(...statusRows);
  } finally {
    await product.stop();
  }
}

await Deno.remove(dir, { recursive: true });
console.log(report.join("\n"));
