/** What every bench script measures with: a shell command, a wall-clock time, a median. */

/** Runs `command` in bash; its stdout, or an error with its stderr. */
export async function sh(command: string): Promise<string> {
  const out = await new Deno.Command("bash", { args: ["-c", command], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${command}\n${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** How long `fn` takes, in seconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** The median of `values`. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Where the CPU goes: snapshots of /proc taken before and after a measured run, and the CPU seconds between them,
 * for the whole machine and for each group of the run's own processes (Linux only).
 *
 * A process's CPU is counted per pid (keyed with its start time, so a reused pid is another process): its own
 * time (utime + stime) and its reaped children's (cutime + cstime), each as the change between the snapshots. A
 * process that starts after `before` counts from 0. A process that ends between the snapshots is counted through
 * its parent: once reaped, all of its time (and its own reaped children's) enters the parent's cutime + cstime, so
 * its share from `before` is taken off again (it was already counted before the window). If its parent is gone too
 * (or never waits for it), that time is lost: it shows only in the machine total, in `unaccounted`.
 */

/** Clock ticks per second of the CPU times in /proc (USER_HZ: 100 on every Linux build, `getconf CLK_TCK`). */
const USER_HZ = 100;

/** The groups of a run's own processes that `cpuDelta` counts apart. */
export const CPU_GROUPS = [
  "gateway",
  "upload",
  "metadata",
  "convert",
  "ffmpeg/ffprobe",
  "s3rver",
  "redis",
  "rabbitmq",
  "bench",
  "other",
] as const;

/** One of `CPU_GROUPS`. */
export type CpuGroup = typeof CPU_GROUPS[number];

/** One process as /proc/[pid]/stat and /proc/[pid]/cmdline showed it; CPU times in ticks. */
export interface ProcCpu {
  pid: number;
  ppid: number;
  /** When it started (field 22, ticks after boot). */
  start: number;
  /** Its name (field 2; at most 15 characters). */
  comm: string;
  /** Its command line, split into arguments. */
  argv: string[];
  /** utime + stime (fields 14-15): its own CPU, all threads. */
  self: number;
  /** cutime + cstime (fields 16-17): the CPU of its children that it has waited for. */
  children: number;
}

/** The machine's busy CPU and every process's, at one moment. */
export interface CpuSnapshot {
  /** `performance.now()` when taken, in ms. */
  at: number;
  /** Busy ticks since boot, all CPUs: user + nice + system + irq + softirq + steal (not idle, not iowait). */
  busy: number;
  /** The processes, by pid. */
  procs: Map<number, ProcCpu>;
}

/** CPU seconds spent between two snapshots. */
export interface CpuDelta {
  /** Wall-clock seconds between them. */
  wall: number;
  /** The whole machine's busy CPU seconds (/proc/stat). */
  machine: number;
  /** The run's own processes (`roots` and their descendants), by group. */
  groups: Record<CpuGroup, number>;
  /** The sum of `groups`. */
  ours: number;
  /** Every other process on the machine (other users of a shared machine, kernel threads), counted the same way. */
  others: number;
  /** `machine - ours - others`: time in no process we saw (interrupts, processes lost with their parent). */
  unaccounted: number;
}

/** Parses /proc/[pid]/stat (the name, field 2, is in parentheses and may itself hold spaces or parentheses). */
function parseStat(text: string, argv: string[]): ProcCpu {
  const close = text.lastIndexOf(")");
  const rest = text.slice(close + 2).split(" "); // rest[0] is field 3, so field n is rest[n - 3]
  const field = (n: number) => Number(rest[n - 3]);
  return {
    pid: Number(text.slice(0, text.indexOf(" "))),
    ppid: field(4),
    start: field(22),
    comm: text.slice(text.indexOf("(") + 1, close),
    argv,
    self: field(14) + field(15),
    children: field(16) + field(17),
  };
}

/** Reads the machine's busy CPU time and every process's from /proc. */
export async function cpuSnapshot(): Promise<CpuSnapshot> {
  const at = performance.now();
  const stat = await Deno.readTextFile("/proc/stat");
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; guest time is inside user already.
  const [user, nice, system, , , irq, softirq, steal] = stat.slice(0, stat.indexOf("\n")).trim().split(/\s+/)
    .slice(1).map(Number);
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (/^\d+$/.test(entry.name)) pids.push(Number(entry.name));
  }
  const procs = new Map<number, ProcCpu>();
  await Promise.all(pids.map(async (pid) => {
    try {
      const [text, cmdline] = await Promise.all([
        Deno.readTextFile(`/proc/${pid}/stat`),
        Deno.readTextFile(`/proc/${pid}/cmdline`),
      ]);
      procs.set(pid, parseStat(text, cmdline.split("\0").filter((arg) => arg !== "")));
    } catch { /* it ended while we looked */ }
  }));
  return { at, busy: user + nice + system + irq + softirq + steal, procs };
}

/**
 * The pids of the servers scripts/test_servers.sh started for this run (RabbitMQ's beam.smp, Redis, s3rver), from
 * the pid files in TEST_SERVERS_DIR; none outside it. Their descendants (erl_child_setup…) go with them.
 */
export async function testServerPids(): Promise<number[]> {
  const dir = Deno.env.get("TEST_SERVERS_DIR");
  if (!dir) return [];
  const files = ["rabbitmq/pid", "redis/redis.pid", "s3rver.pid"];
  const pids = await Promise.all(files.map((f) => Deno.readTextFile(`${dir}/${f}`).catch(() => "")));
  return pids.map((p) => Number(p.trim())).filter((p) => p > 0);
}

/** The group a process names by itself, if any. */
function ownGroup(proc: ProcCpu, bench: number): CpuGroup | undefined {
  if (proc.pid === bench) return "bench";
  if (proc.comm === "ffmpeg" || proc.comm === "ffprobe") return "ffmpeg/ffprobe";
  for (const service of ["gateway", "upload", "metadata", "convert"] as const) {
    // scripts/services.ts starts each service as `deno run <flags> <service>/main.ts`.
    if (proc.argv.some((arg) => arg === `${service}/main.ts` || arg.endsWith(`/${service}/main.ts`))) {
      return service;
    }
  }
  if (proc.argv.some((arg) => arg.includes("s3rver"))) return "s3rver";
  if (proc.comm === "redis-server") return "redis";
  if (proc.comm === "beam.smp" || proc.comm === "erl") return "rabbitmq";
  return undefined;
}

/**
 * The CPU seconds spent between `before` and `after`: the machine's, and those of the processes in `roots` (by
 * default the bench itself, `Deno.pid`) and their descendants, by group. A process is in the group its name or
 * command line says (`ownGroup`), else in its parent's children's group: the parent's own, except that the
 * children of a Convert worker or of the bench are "ffmpeg/ffprobe" (a worker starts nothing else: ff_guard
 * becomes the tool by exec; the bench, within a measured window, starts only the services, which name
 * themselves, and the reference's `sh` and `xargs`, which cost next to nothing beside their ffmpeg). The time of
 * reaped children goes to that children's group too.
 */
export function cpuDelta(
  before: CpuSnapshot,
  after: CpuSnapshot,
  options: { roots?: number[]; bench?: number } = {},
): CpuDelta {
  const bench = options.bench ?? Deno.pid;
  const roots = new Set(options.roots ?? [bench]);
  const proc = (pid: number) => after.procs.get(pid) ?? before.procs.get(pid);
  const childGroup = (own: CpuGroup): CpuGroup =>
    own === "convert" || own === "bench" ? "ffmpeg/ffprobe" : own;
  const groupOf = new Map<number, CpuGroup | null>(); // null: not one of ours
  const group = (pid: number, depth = 0): CpuGroup | null => {
    const known = groupOf.get(pid);
    if (known !== undefined) return known;
    const p = proc(pid);
    let found: CpuGroup | null = null;
    if (p && roots.has(pid)) found = ownGroup(p, bench) ?? "other";
    else if (p && depth < 64) {
      const parent = group(p.ppid, depth + 1);
      if (parent) found = ownGroup(p, bench) ?? childGroup(parent);
    }
    groupOf.set(pid, found);
    return found;
  };

  const groups = Object.fromEntries(CPU_GROUPS.map((g) => [g, 0])) as Record<CpuGroup, number>;
  let others = 0;
  const add = (pid: number, self: number, children: number) => {
    const own = group(pid);
    if (own === null) others += self + children;
    else {
      groups[own] += self;
      groups[childGroup(own)] += children;
    }
  };
  for (const a of after.procs.values()) {
    const b = before.procs.get(a.pid);
    if (b && b.start === a.start) add(a.pid, a.self - b.self, a.children - b.children);
    else add(a.pid, a.self, a.children);
  }
  for (const b of before.procs.values()) {
    const a = after.procs.get(b.pid);
    if (a && a.start === b.start) continue;
    // Ended: if its parent is still there, its whole time is now in the parent's cutime + cstime, which counted
    // it from 0; take off the share it had before the window. (If the parent is gone too, it is lost.)
    const parent = after.procs.get(b.ppid);
    const parentBefore = before.procs.get(b.ppid);
    if (parent && (!parentBefore || parentBefore.start === parent.start)) {
      add(b.pid, -b.self, -b.children);
    }
  }
  for (const g of CPU_GROUPS) groups[g] /= USER_HZ;
  const machine = (after.busy - before.busy) / USER_HZ;
  const ours = CPU_GROUPS.reduce((sum, g) => sum + groups[g], 0);
  others /= USER_HZ;
  return {
    wall: (after.at - before.at) / 1000,
    machine,
    groups,
    ours,
    others,
    unaccounted: machine - ours - others,
  };
}
