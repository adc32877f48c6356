/**
 * The ffmpeg tools as this worker runs them: a start-up check that they exist and can make MP3s, and the one
 * hardened way of launching them outside Deno's sandbox.
 */

/** Options of {@linkcode checkFfmpeg}. */
export interface CheckOptions {
  /** The ffmpeg binary (default "ffmpeg"). */
  ffmpegPath?: string;
  /** The ffprobe binary (default "ffprobe"). */
  ffprobePath?: string;
  /** The setpriv binary the conversions run under (default "setpriv" on Linux); null skips its check. */
  setprivPath?: string | null;
}

/**
 * The resource limits a tool runs under (set by `bin/ff_guard` with util-linux `prlimit`, soft = hard; core dumps
 * are always off). A tool past one fails: it cannot allocate (memory), is killed by SIGKILL (CPU), by SIGXFSZ
 * (file size), or cannot open a file (open files). Only the default launcher applies them.
 */
export interface ToolLimits {
  /** Address space (RLIMIT_AS), in bytes. */
  memoryBytes: number;
  /** CPU time of all its threads together (RLIMIT_CPU), in seconds. */
  cpuSeconds: number;
  /** The largest file it may write (RLIMIT_FSIZE), in bytes. */
  fileBytes: number;
  /** Open file descriptors (RLIMIT_NOFILE). */
  openFiles: number;
}

/**
 * The limits of a run unless told otherwise: 2 GiB of address space (measured with ffmpeg 5.1: it needs about
 * 250 MiB just to load, an audio conversion fits in 300 MiB, a cover frame of a 720p H.264 video in 600 MiB with
 * 3 decoder threads and 1.5 GiB with 16, a 4K one with 16 threads in 2 GiB), an hour of CPU (runs are given twice
 * their wall-clock cap, see {@linkcode cpuSecondsFor}), files up to 2 GiB (an MP3 of 6 h at 320 kbit/s is
 * 864 MB), 64 open files.
 */
export const DEFAULT_TOOL_LIMITS: Readonly<ToolLimits> = {
  memoryBytes: 2 * 1024 ** 3,
  cpuSeconds: 3600,
  fileBytes: 2 * 1024 ** 3,
  openFiles: 64,
};

/**
 * The CPU-time cap of a run with `timeoutMs` of wall-clock time: twice that and 10 s (a decoder may run a thread per
 * core, but the wall-clock timeout is what normally stops a run; this is the backstop).
 */
export function cpuSecondsFor(timeoutMs: number): number {
  return Math.ceil((Math.max(0, timeoutMs) / 1000) * 2) + 10;
}

/** A launched tool: the child and the way to kill its whole process group. */
export interface ToolProcess {
  child: Deno.ChildProcess;
  /** SIGKILLs the tool's process group; harmless once it has exited. */
  kill(): void;
  /** Throws the not-found Error when the exit status and stderr say setpriv could not start the tool. */
  assertLaunched(status: Deno.CommandStatus, stderr: string): void;
}

/**
 * On Linux, `bin/ff_guard`: it runs ffmpeg or ffprobe, and nothing else, under util-linux `setpriv --pdeathsig
 * KILL` (so the kernel kills the tool if this process dies), taking setpriv's own arguments. Convert's
 * --allow-run names it instead of setpriv, which could start any program. Null where there is no setpriv.
 */
export const DEFAULT_SETPRIV: string | null = Deno.build.os === "linux"
  ? decodeURIComponent(new URL("./bin/ff_guard", import.meta.url).pathname)
  : null;

/**
 * Checks that ffmpeg (with libmp3lame and -stats_period, i.e. 4.4 or newer), ffprobe and setpriv can be run;
 * throws an Error saying what is missing and how to install it.
 */
export async function checkFfmpeg(options: CheckOptions = {}): Promise<void> {
  const ffmpeg = options.ffmpegPath ?? "ffmpeg";
  const ffprobe = options.ffprobePath ?? "ffprobe";
  const setpriv = options.setprivPath === undefined ? DEFAULT_SETPRIV : options.setprivPath;

  const encoders = await runQuick(ffmpeg, ["-hide_banner", "-encoders"], "ffmpeg");
  if (!/^\s*A\S*\s+libmp3lame\s/m.test(encoders)) {
    throw new Error(
      `ffmpeg at "${ffmpeg}" has no libmp3lame MP3 encoder. Install a build with it (Debian/Ubuntu: ` +
        "apt-get install ffmpeg; macOS: brew install ffmpeg) or set FFMPEG_PATH.",
    );
  }
  const help = await runQuick(ffmpeg, ["-hide_banner", "-h", "long"], "ffmpeg");
  if (!help.includes("-stats_period")) {
    throw new Error(`ffmpeg at "${ffmpeg}" is too old (no -stats_period): version 4.4 or newer is needed.`);
  }
  await runQuick(ffprobe, ["-hide_banner", "-version"], "ffprobe");
  if (setpriv !== null) {
    // The way conversions start them, so that a tool the guard refuses fails here, not mid-job.
    for (const [tool, binary] of [["ffmpeg", ffmpeg], ["ffprobe", ffprobe]]) {
      await runQuick(setpriv, ["--pdeathsig", "KILL", "--", binary, "-hide_banner", "-version"], tool, true);
    }
  }
}

/**
 * Launches `binary` with `args`, hardened: environment cleared (only PATH kept; ff_guard is also told the limits,
 * and removes them before the tool starts), no stdin, stdout and stderr
 * piped (the caller must drain both), its own process group, under `setpriv --pdeathsig KILL` so the kernel
 * kills it if this process dies (even by SIGKILL), and, through the default launcher `bin/ff_guard`, under
 * `limits` (each one left out is {@linkcode DEFAULT_TOOL_LIMITS}'s). Throws an Error naming the binary when it is
 * not found.
 */
export function spawnTool(
  binary: string,
  args: string[],
  options: { tool: "ffmpeg" | "ffprobe"; setprivPath?: string | null; limits?: Partial<ToolLimits> },
): ToolProcess {
  const setpriv = options.setprivPath === undefined ? DEFAULT_SETPRIV : options.setprivPath;
  const command = setpriv ?? binary;
  const env = { ...childEnv(), ...(isGuard(setpriv) ? guardEnv(options.limits) : {}) };
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args: setpriv === null ? args : ["--pdeathsig", "KILL", "--", binary, ...args],
      clearEnv: true,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
  } catch (error) {
    throw launchError(error, command, setpriv === null ? options.tool : "setpriv");
  }
  const kill = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
      return;
    } catch {
      // Gone already, or Deno.kill is denied (it needs --allow-run without a list): kill the child alone.
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const assertLaunched = (status: Deno.CommandStatus, stderr: string) => {
    if (setpriv !== null && status.code === 127 && /^setpriv: failed to execute/m.test(stderr)) {
      throw launchError(new Deno.errors.NotFound(stderr.trim()), binary, options.tool);
    }
    if (setpriv !== null && status.code === 126 && /^ff_guard: /m.test(stderr)) {
      const advice = /^ff_guard: runs only/m.test(stderr)
        ? ". Install it there, or run where FFMPEG_PATH/FFPROBE_PATH need not be set."
        : "";
      throw new Error(`${options.tool} at "${binary}" cannot be started: ${stderr.trim()}${advice}`);
    }
    if (setpriv !== null && !status.success && /^prlimit: /m.test(stderr)) {
      // prlimit could not set a limit (say, one above the hard limit this process was given).
      throw new Error(`${options.tool} at "${binary}" cannot be started under its limits: ${stderr.trim()}`);
    }
  };
  return { child, kill, assertLaunched };
}

function launchError(error: unknown, command: string, tool: string): Error {
  if (error instanceof Deno.errors.NotCapable && tool !== "setpriv") {
    // Deno cannot grant --allow-run for a binary it cannot find on the PATH, so a missing ffmpeg looks like this.
    return new Error(
      `Cannot run ${tool} at "${command}": it is not installed (or not on the PATH), or this process is not ` +
        `allowed to run it. Install it (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg) or set ` +
        `FFMPEG_PATH/FFPROBE_PATH, and allow it with --allow-run.`,
      { cause: error },
    );
  }
  if (!(error instanceof Deno.errors.NotFound)) {
    return new Error(`Cannot run ${tool} at "${command}": ${error}`, { cause: error });
  }
  if (tool === "setpriv") {
    return new Error(
      `setpriv was not found at "${command}". Install util-linux (it makes the kernel kill ffmpeg if this ` +
        "process dies), or set setprivPath: null.",
      { cause: error },
    );
  }
  return new Error(
    `${tool} was not found at "${command}". Install it (Debian/Ubuntu: apt-get install ffmpeg; macOS: ` +
      "brew install ffmpeg) or set FFMPEG_PATH/FFPROBE_PATH.",
    { cause: error },
  );
}

/** Runs a short informational command, returning stdout; 10 s cap. `viaSetpriv`: `binary` is the launcher. */
async function runQuick(binary: string, args: string[], tool: string, viaSetpriv = false): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(binary, {
      args,
      clearEnv: true,
      env: childEnv(),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(10_000),
    }).output();
  } catch (error) {
    throw launchError(error, binary, viaSetpriv ? "setpriv" : tool);
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim().slice(-500);
    if (viaSetpriv) {
      throw new Error(
        `${tool} cannot be started the way conversions start it (through ${binary}): ${stderr}`,
      );
    }
    throw new Error(`${tool} at "${binary}" does not run (exit code ${output.code}): ${stderr}`);
  }
  return new TextDecoder().decode(output.stdout);
}

/** Whether `launcher` is ff_guard (the default, or a copy of it), which reads the limits from its environment. */
function isGuard(launcher: string | null): boolean {
  return launcher !== null && /(^|\/)ff_guard$/.test(launcher);
}

/** The variables by which ff_guard is told the limits; it removes them before the tool starts. */
export function guardEnv(limits: Partial<ToolLimits> = {}): Record<string, string> {
  const all = { ...DEFAULT_TOOL_LIMITS, ...limits };
  const whole = (name: keyof ToolLimits) => {
    const value = all[name];
    if (!Number.isFinite(value) || value < 1) {
      throw new RangeError(`Tool limit ${name} must be >= 1, not ${value}`);
    }
    return String(Math.ceil(value));
  };
  return {
    FF_GUARD_MEMORY_BYTES: whole("memoryBytes"),
    FF_GUARD_CPU_SECONDS: whole("cpuSeconds"),
    FF_GUARD_FILE_BYTES: whole("fileBytes"),
    FF_GUARD_OPEN_FILES: whole("openFiles"),
  };
}

/** The child's whole environment: only PATH (the parent's when readable), so no secret reaches the tool. */
function childEnv(): Record<string, string> {
  let path = "/usr/local/bin:/usr/bin:/bin";
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "PATH" }).state === "granted") {
      path = Deno.env.get("PATH") || path;
    }
  } catch {
    // Keep the default.
  }
  return { PATH: path };
}
