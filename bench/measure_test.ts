import assert from "node:assert/strict";
import { cpuDelta, type CpuSnapshot, cpuSnapshot, type ProcCpu } from "./measure.ts";

/** A process: pid, parent, start, comm, argv, own ticks, reaped children's ticks. */
function p(
  pid: number,
  ppid: number,
  comm: string,
  self: number,
  children = 0,
  argv = [comm],
  start = 1,
): ProcCpu {
  return { pid, ppid, start, comm, argv, self, children };
}

function snapshot(at: number, busy: number, procs: ProcCpu[]): CpuSnapshot {
  return { at, busy, procs: new Map(procs.map((x) => [x.pid, x])) };
}

/** Equal but for floating-point rounding. */
function near(actual: number, expected: number): void {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${actual} is not ${expected}`);
}

const convertArgv = ["deno", "run", "--allow-run=ffmpeg", "convert/main.ts"];

Deno.test("cpuDelta counts ended children once, through their parent's cutime, and splits ours from others", () => {
  const before = snapshot(0, 1000, [
    p(100, 50, "deno", 30),
    p(200, 100, "deno", 5, 0, convertArgv),
    p(300, 200, "ffmpeg", 10),
    p(301, 200, "ffmpeg", 20), // ends in the window; its 80 ticks in all enter 200's cutime
    p(500, 1, "beam.smp", 7),
    p(501, 500, "erl_child_setu", 1),
    p(600, 1, "redis-server", 2, 0, ["redis-server 127.0.0.1:1"]), // another run's Redis: not one of ours
    p(700, 1, "stranger", 4), // ends in the window with no parent to reap it into: lost
  ]);
  const after = snapshot(2000, 1000 + 400, [
    p(100, 50, "deno", 40),
    p(200, 100, "deno", 25, 80, convertArgv),
    p(300, 200, "ffmpeg", 50),
    p(302, 200, "ff_guard", 3), // started in the window, not yet become ffmpeg: counts from 0, as a tool
    p(500, 1, "beam.smp", 17),
    p(501, 500, "erl_child_setu", 2),
    p(600, 1, "redis-server", 32, 0, ["redis-server 127.0.0.1:1"]),
  ]);
  const d = cpuDelta(before, after, { roots: [100, 500], bench: 100 });
  near(d.wall, 2);
  near(d.machine, 4);
  near(d.groups.bench, 0.1);
  near(d.groups.convert, 0.2);
  // 300: 40; 301: 80 through the cutime, less the 20 it had before; 302: 3.
  near(d.groups["ffmpeg/ffprobe"], 1.03);
  near(d.groups.rabbitmq, 0.11);
  near(d.groups.redis, 0);
  near(d.ours, 0.1 + 0.2 + 1.03 + 0.11);
  near(d.others, 0.3);
  near(d.unaccounted, 4 - d.ours - 0.3);
});

Deno.test("cpuDelta takes a reused pid for a new process, counted from 0", () => {
  const before = snapshot(0, 0, [p(100, 50, "deno", 0), p(400, 1, "old", 90, 0, ["old"], 5)]);
  const after = snapshot(1000, 100, [p(100, 50, "deno", 0), p(400, 100, "ffmpeg", 10, 0, ["ffmpeg"], 9)]);
  const d = cpuDelta(before, after, { roots: [100], bench: 100 });
  near(d.groups["ffmpeg/ffprobe"], 0.1);
  near(d.others, 0);
});

Deno.test("cpuSnapshot sees an ffmpeg the bench ran and waited for, within the machine's busy time", async () => {
  const before = await cpuSnapshot();
  assert.ok(before.procs.has(Deno.pid));
  const out = await new Deno.Command("ffmpeg", {
    args: [
      "-nostdin",
      "-v",
      "error",
      "-f",
      "lavfi",
      "-i",
      "sine=d=60",
      "-c:a",
      "libmp3lame",
      "-f",
      "null",
      "-",
    ],
  }).output();
  assert.ok(out.success);
  const d = cpuDelta(before, await cpuSnapshot());
  assert.ok(d.groups["ffmpeg/ffprobe"] > 0.05, `ffmpeg: ${d.groups["ffmpeg/ffprobe"]} s`);
  // Ticks are sampled: allow a few of them of slack between the per-process and the machine counts.
  assert.ok(d.ours <= d.machine + 0.05, `ours ${d.ours} s, machine ${d.machine} s`);
  assert.ok(d.wall > 0);
});
