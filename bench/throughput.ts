/**
 * Throughput, status reads and scaling (issue 6, figures 4, 5 and 7), each a ratio measured side by side in one
 * run on one machine (the median of RUNS alternating runs). Real mode: RabbitMQ, Redis and s3rver from
 * scripts/test_servers.sh, the services as their own processes (e2e/product.ts).
 *
 *   4. throughput  CLIPS ten-second clips through N Convert workers (upload of each as its own job with
 *                  8 submitters → all done), against `xargs -P N ffmpeg` on the same clips, the same options
 *                  (192k CBR MP3). The ratio is ours in clips/s over xargs' in clips/s. Figure 4 is N = 2.
 *   7. scaling     the same for N in WORKERS (default 1,2,4): the curve, and where the 2 cores flatten it.
 *      CPU         for 4 and 7, where the CPU goes: CPU seconds per clip of the whole machine (/proc/stat) for
 *                  ours and for xargs, and of each of this run's processes (/proc/[pid]/stat) by group: the four
 *                  services, ffmpeg/ffprobe, s3rver, Redis, RabbitMQ, this bench (the submitting client), other
 *                  (bench/measure.ts cpuDelta). The machine is shared: what other processes spent is shown apart.
 *   5. status      `wrk -t2 -c64 -d10s` on GET /v1/jobs/{id} of a done job, against the same wrk on a bare Hono
 *                  hello-world (bench/hello_hono.ts, its own process): an open Gateway (AUTH=open, no
 *                  Authorization header), then a Gateway with AUTH=required and an API key (made with
 *                  metadata/keys_cli.ts in the product's Redis, 10^9 requests a minute).
 *
 *   deno task bench:throughput                                  # RUNS=3 CLIPS=40 WORKERS=1,2,4 WRK_SECONDS=10
 *   CLIPS=200 RUNS=5 deno task bench:throughput                 # the issue's 200 clips
 *   SCENARIOS=status LABEL=after deno task bench:throughput     # status reads only
 *
 * Prints Markdown tables and stores its figures under `throughput[LABEL]` (LABEL default "latest") in
 * docs/benchmarks.json, keeping what else is there.
 * @module
 */
import { createRedisClient } from "@vmp3/adapters/redis";
import { createRedisKeyStore } from "@vmp3/adapters/redis-keys";
import { runKeysCommand } from "../metadata/keys_cli.ts";
import { freePort, startProduct } from "../e2e/product.ts";
import { CPU_GROUPS, type CpuDelta, cpuDelta, cpuSnapshot, median, sh, testServerPids } from "./measure.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 3);
const CLIPS = Number(Deno.env.get("CLIPS") ?? 40);
const CLIP_SIZE = Deno.env.get("CLIP_SIZE") ?? "640x360";
const WORKERS = (Deno.env.get("WORKERS") ?? "1,2,4").split(",").map(Number);
const WRK_SECONDS = Number(Deno.env.get("WRK_SECONDS") ?? 10);
const SUBMITTERS = Number(Deno.env.get("SUBMITTERS") ?? 8);
const SCENARIOS = (Deno.env.get("SCENARIOS") ?? "throughput,status").split(",");
const LABEL = Deno.env.get("LABEL") ?? "latest";

/** The 1-minute load average now (the machine is shared: a figure taken under a heavy load is suspect). */
async function load(): Promise<number> {
  return Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);
}

const dir = await Deno.makeTempDir({ prefix: "vmp3-throughput-" });
const clip = `${dir}/clip.mp4`;
console.error(`Making a 10 s ${CLIP_SIZE} clip…`);
await sh(
  `ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=${CLIP_SIZE}:r=30:d=10 ` +
    `-f lavfi -i sine=f=440:sample_rate=48000:d=10 -c:v libx264 -preset ultrafast -pix_fmt yuv420p ` +
    `-c:a aac -b:a 160k -shortest '${clip}'`,
);
const clipBytes = await Deno.readFile(clip);
// The status reads need one done job each, of any video: a 1 s one is quick to make and to convert.
const tiny = `${dir}/tiny.mp4`;
await sh(
  `ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=160x120:r=10:d=1 -f lavfi -i sine=d=1 ` +
    `-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -shortest '${tiny}'`,
);
const tinyBytes = await Deno.readFile(tiny);
const loads: number[] = [];

/** Waits until every job is final, looking at the oldest open one each time (jobs finish roughly in order). */
async function waitAll(base: string, ids: string[], headers: HeadersInit = {}): Promise<void> {
  const deadline = Date.now() + 30 * 60_000;
  for (const id of ids) {
    for (;;) {
      const job = await (await fetch(`${base}/v1/jobs/${id}`, { headers })).json();
      if (job.status === "done") break;
      if (job.status !== "queued" && job.status !== "converting") {
        throw new Error(`job ${id} ended ${job.status}: ${JSON.stringify(job.error)}`);
      }
      if (Date.now() > deadline) throw new Error(`job ${id} still ${job.status} after 30 minutes`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Submits `count` jobs of the clip (tagged `tag`, so the content cache answers none), `SUBMITTERS` at a time. */
async function submit(
  base: string,
  count: number,
  tag: string,
  headers: HeadersInit = {},
  bytes = clipBytes,
): Promise<string[]> {
  const ids: string[] = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(SUBMITTERS, count) }, async () => {
    while (next < count) {
      const i = next++;
      const form = new FormData();
      form.append("file", new File([bytes], "clip.mp4", { type: "video/mp4" }));
      const response = await fetch(`${base}/v1/jobs?bitrate=192&comment=${tag}-${i}`, {
        method: "POST",
        body: form,
        headers,
      });
      if (response.status !== 202) throw new Error(`job ${i}: ${response.status} ${await response.text()}`);
      ids[i] = (await response.json()).id;
    }
  }));
  return ids;
}

/** The CPU spent during each run of ours and of xargs (for CLIPS clips). */
interface CpuRuns {
  ours: CpuDelta[];
  xargs: CpuDelta[];
}

/**
 * Figures 4 and 7: seconds for CLIPS clips, ours (and how long the uploads took) and `xargs -P n ffmpeg`, and
 * the CPU each run spent.
 */
const throughput: Record<string, { ours: number[]; uploads: number[]; xargs: number[]; cpu: CpuRuns }> = {};
// This run's own processes: the bench and its descendants (the services, their ffmpeg, the reference's xargs),
// and the servers scripts/test_servers.sh started for it.
const cpuRoots = [Deno.pid, ...await testServerPids()];
if (SCENARIOS.includes("throughput")) {
  for (const workers of WORKERS) {
    const figures: { ours: number[]; uploads: number[]; xargs: number[]; cpu: CpuRuns } = {
      ours: [],
      uploads: [],
      xargs: [],
      cpu: { ours: [], xargs: [] },
    };
    throughput[workers] = figures;
    const product = await startProduct(workers);
    try {
      for (let run = 0; run < RUNS; run++) {
        loads.push(await load());
        console.error(`throughput: ${workers} worker(s), run ${run + 1}/${RUNS}, load ${loads.at(-1)}`);
        const ffmpeg = async () => {
          const cpu = await cpuSnapshot();
          const began = performance.now();
          await sh(
            `seq ${CLIPS} | xargs -P ${workers} -I{} ffmpeg -nostdin -v error -y -i '${clip}' -vn ` +
              `-c:a libmp3lame -b:a 192k '${dir}/plain-{}.mp3'`,
          );
          figures.xargs.push((performance.now() - began) / 1000);
          figures.cpu.xargs.push(cpuDelta(cpu, await cpuSnapshot(), { roots: cpuRoots }));
        };
        const ours = async () => {
          const cpu = await cpuSnapshot();
          const began = performance.now();
          const ids = await submit(product.url, CLIPS, `tp-${workers}-${run}`);
          figures.uploads.push((performance.now() - began) / 1000);
          await waitAll(product.url, ids);
          figures.ours.push((performance.now() - began) / 1000);
          figures.cpu.ours.push(cpuDelta(cpu, await cpuSnapshot(), { roots: cpuRoots }));
        };
        // Alternating which goes first, so neither always meets the other's leftovers (page cache, GC).
        if (run % 2) {
          await ffmpeg();
          await ours();
        } else {
          await ours();
          await ffmpeg();
        }
      }
    } finally {
      await product.stop();
    }
  }
}

interface Wrk {
  rps: number;
  p50: string;
  p99: string;
  errors: number;
}

async function wrk(url: string, headers: Record<string, string> = {}): Promise<Wrk> {
  const h = Object.entries(headers).map(([k, v]) => `-H '${k}: ${v}'`).join(" ");
  const out = await sh(`wrk -t2 -c64 -d${WRK_SECONDS}s --latency ${h} '${url}'`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) +
    (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return {
    rps,
    p50: /50%\s+([\d.]+\w+)/.exec(out)?.[1] ?? "?",
    p99: /99%\s+([\d.]+\w+)/.exec(out)?.[1] ?? "?",
    errors,
  };
}

/** Figure 5: wrk runs on a job's status (ours) and on bare Hono (reference), for each kind of caller. */
const status: Record<string, { ours: Wrk[]; bare: Wrk[] }> = {};
if (SCENARIOS.includes("status")) {
  const port = freePort();
  const hello = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-net=127.0.0.1:${port}`,
      "--allow-env=PORT",
      "--v8-flags=--expose-gc",
      new URL("./hello_hono.ts", import.meta.url).pathname,
    ],
    env: { PORT: String(port) },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const bareUrl = `http://127.0.0.1:${port}/`;
  for (
    let i = 0;
    !(await fetch(bareUrl).then((r) => r.body?.cancel().then(() => r.ok)).catch(() => false));
    i++
  ) {
    if (i > 100) throw new Error("bench/hello_hono.ts did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  const product = await startProduct(1);
  try {
    const measure = async (name: string, url: string, headers: Record<string, string>) => {
      const figures: { ours: Wrk[]; bare: Wrk[] } = { ours: [], bare: [] };
      status[name] = figures;
      // A first short run of each warms the JIT and opens the connections.
      await wrk(url, headers);
      await wrk(bareUrl);
      for (let run = 0; run < RUNS; run++) {
        loads.push(await load());
        console.error(`status (${name}): run ${run + 1}/${RUNS}, load ${loads.at(-1)}`);
        if (run % 2) {
          figures.bare.push(await wrk(bareUrl));
          figures.ours.push(await wrk(url, headers));
        } else {
          figures.ours.push(await wrk(url, headers));
          figures.bare.push(await wrk(bareUrl));
        }
      }
    };
    // Open: a done job with no owner, read without an Authorization header.
    const [open] = await submit(product.url, 1, "status-open", {}, tinyBytes);
    await waitAll(product.url, [open]);
    await measure("open", `${product.url}/v1/jobs/${open}`, {});

    // Keyed: AUTH=required, a key with a rate limit no run reaches, and a done job of that key.
    await product.restart("gateway", { AUTH: "required" });
    const redis = createRedisClient(Deno.env.get("TEST_REDIS_URL")!);
    const made = await runKeysCommand(createRedisKeyStore(redis), [
      "create",
      "--name",
      "bench",
      "--requests-per-minute",
      "1000000000",
    ]);
    redis.disconnect();
    if (made.code !== 0) throw new Error(made.out.join("\n"));
    const token = made.out.map((line) => line.trim()).find((line) => line.startsWith("vmp3_"));
    if (!token) throw new Error(`no token in:\n${made.out.join("\n")}`);
    const auth = { authorization: `Bearer ${token}` };
    const [keyed] = await submit(product.url, 1, "status-keyed", auth, tinyBytes);
    await waitAll(product.url, [keyed], auth);
    await measure("keyed", `${product.url}/v1/jobs/${keyed}`, auth);
  } finally {
    await product.stop();
    hello.kill("SIGTERM");
    await hello.status;
  }
}
await Deno.remove(dir, { recursive: true });

/** The CPU of a scenario's runs, per clip: the median of each figure on its own. */
interface CpuPerClip {
  machine: number;
  busyCores: number;
  ours: number;
  oursCores: number;
  groups: Record<string, number>;
  others: number;
  unaccounted: number;
}

function cpuPerClip(runs: CpuDelta[]): CpuPerClip {
  const per = (value: (d: CpuDelta) => number) => median(runs.map(value)) / CLIPS;
  return {
    machine: per((d) => d.machine),
    busyCores: median(runs.map((d) => d.machine / d.wall)),
    ours: per((d) => d.ours),
    oursCores: median(runs.map((d) => d.ours / d.wall)),
    groups: Object.fromEntries(CPU_GROUPS.map((g) => [g, per((d) => d.groups[g])])),
    others: per((d) => d.others),
    unaccounted: per((d) => d.unaccounted),
  };
}

// The report.
const report: string[] = [
  `Measured on ${
    new Date().toISOString().slice(0, 10)
  }, median of ${RUNS} runs; 1-minute load average during ` +
  `the runs: ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)} (2 cores).`,
  "",
];
const medians: Record<string, unknown> = {};
if (Object.keys(throughput).length) {
  report.push(
    `${CLIPS} ten-second ${CLIP_SIZE} clips (${(clipBytes.byteLength / 1e6).toFixed(1)} MB each), 192k MP3:`,
    "",
    "| workers | ours: upload → all done | of which uploads | `xargs -P N ffmpeg` | ours, clips/s | ratio |",
    "|---|---|---|---|---|---|",
  );
  const perClip: Record<string, { ours: CpuPerClip; xargs: CpuPerClip }> = {};
  for (const [workers, f] of Object.entries(throughput)) {
    const m = { ours: median(f.ours), uploads: median(f.uploads), xargs: median(f.xargs) };
    perClip[workers] = { ours: cpuPerClip(f.cpu.ours), xargs: cpuPerClip(f.cpu.xargs) };
    medians[`throughput${workers}`] = { ...m, ratio: m.xargs / m.ours, cpuPerClip: perClip[workers] };
    report.push(
      `| ${workers} | ${m.ours.toFixed(2)} s | ${m.uploads.toFixed(2)} s | ${m.xargs.toFixed(2)} s | ` +
        `${(CLIPS / m.ours).toFixed(2)} | **${(m.xargs / m.ours).toFixed(2)}** |`,
    );
  }
  report.push("");
  // Where the CPU goes: one column for ours and one for xargs at each worker count.
  const columns = Object.entries(perClip).flatMap(([workers, c]) => [
    [`ours, N = ${workers}`, c.ours] as const,
    [`xargs, N = ${workers}`, c.xargs] as const,
  ]);
  const row = (name: string, value: (c: CpuPerClip) => number, digits = 3) =>
    `| ${name} | ${columns.map(([, c]) => value(c).toFixed(digits)).join(" | ")} |`;
  report.push(
    `Where the CPU goes, in CPU seconds per clip (median of the runs, each row on its own, so the rows need not ` +
      `add up exactly): the machine's busy time from /proc/stat, each process's from /proc/[pid]/stat ` +
      `(own + reaped children). During xargs the product is up but idle.`,
    "",
    `| CPU s per clip | ${columns.map(([name]) => name).join(" | ")} |`,
    `|---|${columns.map(() => "---").join("|")}|`,
    row("**whole machine**", (c) => c.machine),
    row(`busy cores (of ${navigator.hardwareConcurrency}): machine CPU s / wall s`, (c) => c.busyCores, 2),
    row("**this run's processes**", (c) => c.ours),
    row("busy cores: this run's CPU s / wall s", (c) => c.oursCores, 2),
    ...CPU_GROUPS.map((g) => row(`&nbsp;&nbsp;${g}`, (c) => c.groups[g])),
    row("other processes on the machine", (c) => c.others),
    row("in no process seen (interrupts, lost)", (c) => c.unaccounted),
    "",
  );
  for (const [workers, c] of Object.entries(perClip)) {
    report.push(
      `N = ${workers}: ours spends ${c.ours.machine.toFixed(2)} machine CPU s a clip ` +
        `(${c.ours.groups["ffmpeg/ffprobe"].toFixed(2)} in ffmpeg/ffprobe), xargs ${
          c.xargs.machine.toFixed(2)
        } ` +
        `(${c.xargs.groups["ffmpeg/ffprobe"].toFixed(2)}): ${
          (c.ours.machine / c.xargs.machine).toFixed(2)
        }× the ` +
        `CPU, with ${c.ours.busyCores.toFixed(2)} cores busy against ${c.xargs.busyCores.toFixed(2)} ` +
        `(this run's processes: ${c.ours.oursCores.toFixed(2)} against ${c.xargs.oursCores.toFixed(2)}).`,
    );
  }
  report.push("");
}
if (Object.keys(status).length) {
  report.push(
    `\`wrk -t2 -c64 -d${WRK_SECONDS}s\`, GET /v1/jobs/{id} of a done job against a bare Hono hello-world:`,
    "",
    "| caller | ours: req/s (p50, p99) | bare Hono: req/s (p50, p99) | errors | ratio |",
    "|---|---|---|---|---|",
  );
  for (const [name, f] of Object.entries(status)) {
    const pick = (runs: Wrk[]) => {
      const rps = median(runs.map((r) => r.rps));
      return runs.reduce((a, b) => Math.abs(b.rps - rps) < Math.abs(a.rps - rps) ? b : a);
    };
    const ours = pick(f.ours);
    const bare = pick(f.bare);
    const ratio = median(f.ours.map((r) => r.rps)) / median(f.bare.map((r) => r.rps));
    medians[`status_${name}`] = {
      ours: median(f.ours.map((r) => r.rps)),
      bare: median(f.bare.map((r) => r.rps)),
      ratio,
    };
    const errors = [...f.ours, ...f.bare].reduce((a, r) => a + r.errors, 0);
    report.push(
      `| ${name === "open" ? "open (AUTH=open, no key)" : "API key (AUTH=required)"} | ` +
        `${median(f.ours.map((r) => r.rps)).toFixed(0)} (${ours.p50}, ${ours.p99}) | ` +
        `${median(f.bare.map((r) => r.rps)).toFixed(0)} (${bare.p50}, ${bare.p99}) | ${errors} | ` +
        `**${ratio.toFixed(2)}** |`,
    );
  }
  report.push("");
}
console.log(report.join("\n"));

const jsonUrl = new URL("../docs/benchmarks.json", import.meta.url);
const json = JSON.parse(await Deno.readTextFile(jsonUrl).catch(() => "{}"));
json.throughput = {
  ...json.throughput,
  [LABEL]: {
    date: new Date().toISOString(),
    runs: RUNS,
    clips: CLIPS,
    clipSize: CLIP_SIZE,
    wrkSeconds: WRK_SECONDS,
    loads,
    throughput,
    status,
    medians,
  },
};
await Deno.writeTextFile(jsonUrl, JSON.stringify(json, null, 2) + "\n");
