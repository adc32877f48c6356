import assert from "node:assert/strict";
import { parseOptions } from "@vmp3/shared";
import {
  checkFfmpeg,
  cpuSecondsFor,
  DEFAULT_SETPRIV,
  DEFAULT_TOOL_LIMITS,
  guardEnv,
  spawnTool,
  type ToolLimits,
} from "./ffmpeg_check.ts";
import { planConversion } from "./plan.ts";
import { probeInput } from "./probe.ts";
import { transcode } from "./transcode.ts";
import { audioDuration, makeMedia } from "./testing/media.ts";
import { rejectsWith, withDir } from "./testing/helpers.ts";

/** A fake ffmpeg: a shell script that prints `encoders` for -encoders and `help` for -h. */
async function fakeFfmpeg(dir: string, encoders: string, help: string): Promise<string> {
  const path = `${dir}/ffmpeg`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\ncase "$*" in\n  *-encoders*) printf '%s\\n' '${encoders}' ;;\n  *) printf '%s\\n' '${help}' ;;\nesac\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("checkFfmpeg passes with the installed ffmpeg, ffprobe and setpriv", async () => {
  await checkFfmpeg({});
});

Deno.test("checkFfmpeg names a missing ffmpeg and how to install it", async () => {
  await assert.rejects(checkFfmpeg({ ffmpegPath: "/nonexistent/ffmpeg" }), {
    message:
      'ffmpeg was not found at "/nonexistent/ffmpeg". Install it (Debian/Ubuntu: apt-get install ffmpeg; ' +
      "macOS: brew install ffmpeg) or set FFMPEG_PATH/FFPROBE_PATH.",
  });
});

Deno.test("checkFfmpeg names a missing ffprobe and how to install it", async () => {
  await assert.rejects(checkFfmpeg({ ffprobePath: "/nonexistent/ffprobe" }), {
    message:
      'ffprobe was not found at "/nonexistent/ffprobe". Install it (Debian/Ubuntu: apt-get install ffmpeg; ' +
      "macOS: brew install ffmpeg) or set FFMPEG_PATH/FFPROBE_PATH.",
  });
});

Deno.test("checkFfmpeg rejects an ffmpeg without the libmp3lame encoder", async () => {
  await withDir(async (dir) => {
    const ffmpeg = await fakeFfmpeg(dir, " A....D aac  AAC (Advanced Audio Coding)", "-stats_period time");
    await assert.rejects(checkFfmpeg({ ffmpegPath: ffmpeg }), /ffmpeg at ".*" has no libmp3lame MP3 encoder/);
  });
});

Deno.test("checkFfmpeg rejects an ffmpeg older than 4.4 (no -stats_period)", async () => {
  await withDir(async (dir) => {
    const ffmpeg = await fakeFfmpeg(dir, " A....D libmp3lame  libmp3lame MP3", "-progress url");
    await assert.rejects(checkFfmpeg({ ffmpegPath: ffmpeg }), /is too old \(no -stats_period\)/);
  });
});

Deno.test("checkFfmpeg names a missing setpriv, and skips it when setprivPath is null", async () => {
  await assert.rejects(checkFfmpeg({ setprivPath: "/nonexistent/setpriv" }), /setpriv was not found at/);
  await checkFfmpeg({ setprivPath: null });
});

Deno.test("spawnTool gives the tool an empty environment except PATH, no stdin and its own process group", async () => {
  Deno.env.set("VMP3_SECRET_FOR_TEST", "s3cr3t");
  try {
    // `sh -c` stands in for ffmpeg: it prints its environment, its stdin and its process group. (Plain setpriv:
    // the default launcher, ff_guard, would rightly refuse to run sh.)
    const { child } = spawnTool("/bin/sh", ["-c", "env; cat; echo pgid=$(ps -o pgid= -p $$)"], {
      tool: "ffmpeg",
      setprivPath: "setpriv",
    });
    const [out, , status] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.status,
    ]);
    assert.ok(status.success);
    const env = out.split("\n").filter((line) => /^[A-Z_]+=/.test(line)).map((line) => line.split("=")[0]);
    assert.deepEqual(env.filter((name) => !["PWD", "SHLVL", "_", "OLDPWD"].includes(name)), ["PATH"]);
    assert.ok(!out.includes("s3cr3t"));
    assert.match(out, new RegExp(`pgid=\\s*${child.pid}\\b`));
  } finally {
    Deno.env.delete("VMP3_SECRET_FOR_TEST");
  }
});

Deno.test("checkFfmpeg under --allow-run=ffmpeg,ffprobe with no ffmpeg on the PATH says how to install it", async () => {
  const empty = await Deno.makeTempDir();
  const script = `${empty}/check.ts`;
  await Deno.writeTextFile(
    script,
    `import { checkFfmpeg } from "${new URL("./ffmpeg_check.ts", import.meta.url).href}";
    await checkFfmpeg({ setprivPath: null }).catch((e) => { console.error(e.message); Deno.exit(3); });`,
  );
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-run=ffmpeg,ffprobe", "--allow-env=PATH", `--allow-read=${empty}`, script],
    env: { PATH: empty },
    stdout: "null",
    stderr: "piped",
  }).output();
  await Deno.remove(empty, { recursive: true });
  const message = new TextDecoder().decode(stderr);
  assert.equal(code, 3, message);
  assert.match(message, /ffmpeg.*(not found|not installed).*apt-get install ffmpeg/s);
});

Deno.test("the default launcher runs ffmpeg and ffprobe and refuses any other program", async () => {
  const run = async (binary: string, args: string[]) => {
    const { child } = spawnTool(binary, args, { tool: "ffmpeg" });
    const [out, err, status] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.status,
    ]);
    return { out, err, code: status.code };
  };
  const ok = await run("ffprobe", ["-hide_banner", "-version"]);
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /ffprobe version/);
  for (const binary of ["/bin/sh", "sh", "/tmp/ffmpeg", "../ffmpeg"]) {
    const refused = await run(binary, ["-c", "echo escaped"]);
    assert.equal(refused.code, 126, `${binary}: ${refused.err}`);
    assert.ok(!refused.out.includes("escaped"));
    assert.match(refused.err, /ff_guard: runs only ffmpeg or ffprobe/);
  }
});

/** Runs ffmpeg through the default launcher with `limits`; its exit, stderr and how long it took. */
async function ffmpegUnder(limits: Partial<ToolLimits>, args: string[]) {
  const started = Date.now();
  const { child, kill } = spawnTool("ffmpeg", ["-hide_banner", "-nostdin", "-v", "error", ...args], {
    tool: "ffmpeg",
    limits,
  });
  const timer = setTimeout(kill, 20_000); // a hang fails the test below, it does not stop the suite
  const [, err, status] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.status,
  ]);
  clearTimeout(timer);
  return { status, err, ms: Date.now() - started };
}

/** The "Max ..." lines of /proc/<pid>/limits, as { name: [soft, hard] }. */
function procLimits(pid: number): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/limits`).split("\n").slice(1)) {
    const match = /^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)/.exec(line);
    if (match) out[match[1]] = [match[2], match[3]];
  }
  return out;
}

Deno.test("the default launcher runs the tool under its limits, and the tool's environment is still PATH only", async () => {
  for (
    const limits of [{}, {
      memoryBytes: 1024 ** 3,
      cpuSeconds: 100,
      fileBytes: 10 * 1024 ** 2,
      openFiles: 50,
    }]
  ) {
    const { child, kill } = spawnTool("ffmpeg", [
      "-nostdin",
      "-f",
      "lavfi",
      "-i",
      "anullsrc",
      "-f",
      "null",
      "-",
    ], {
      tool: "ffmpeg",
      limits,
    });
    const draining = Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    try {
      // sh, prlimit and setpriv each exec the next: the pid becomes ffmpeg's own.
      for (let i = 0; Deno.readTextFileSync(`/proc/${child.pid}/comm`).trim() !== "ffmpeg"; i++) {
        assert.ok(i < 100, "ffmpeg did not start");
        await new Promise((r) => setTimeout(r, 20));
      }
      const want = { ...DEFAULT_TOOL_LIMITS, ...limits };
      const got = procLimits(child.pid);
      const both = (n: number) => [String(n), String(n)];
      assert.deepEqual(got["Max address space"], both(want.memoryBytes));
      assert.deepEqual(got["Max cpu time"], both(want.cpuSeconds));
      assert.deepEqual(got["Max file size"], both(want.fileBytes));
      assert.deepEqual(got["Max open files"], both(want.openFiles));
      assert.deepEqual(got["Max core file size"], ["0", "0"]);
      const environ = Deno.readTextFileSync(`/proc/${child.pid}/environ`).split("\0").filter(Boolean);
      assert.deepEqual(environ.map((v) => v.split("=")[0]), ["PATH"]);
    } finally {
      kill();
      await child.status;
      await draining;
    }
  }
});

Deno.test("a tool past a limit fails at once: it is never left hanging", async () => {
  await withDir(async (dir) => {
    const tooLittleMemory = await ffmpegUnder({ memoryBytes: 16 * 1024 ** 2 }, ["-version"]);
    assert.equal(tooLittleMemory.status.success, false, "16 MiB of address space");
    assert.ok(tooLittleMemory.ms < 5000);

    // An endless encode: killed once it has used its second of CPU.
    const endless = ["-f", "lavfi", "-i", "sine=d=100000", "-c:a", "libmp3lame", "-f", "null", "-"];
    const tooLittleCpu = await ffmpegUnder({ cpuSeconds: 1 }, endless);
    assert.equal(tooLittleCpu.status.signal, "SIGKILL", tooLittleCpu.err);
    assert.ok(tooLittleCpu.ms < 5000, `${tooLittleCpu.ms} ms`);

    const output = `${dir}/big.wav`;
    const tooSmallFile = await ffmpegUnder({ fileBytes: 100_000 }, [
      "-f",
      "lavfi",
      "-i",
      "sine=d=60",
      "-c:a",
      "pcm_s16le",
      `file:${output}`,
    ]);
    assert.equal(tooSmallFile.status.signal, "SIGXFSZ", tooSmallFile.err);
    assert.ok((await Deno.stat(output)).size <= 100_000);

    const tooFewFiles = await ffmpegUnder({ openFiles: 3 }, [
      "-f",
      "lavfi",
      "-i",
      "sine=d=1",
      `file:${dir}/x.wav`,
    ]);
    assert.equal(tooFewFiles.status.success, false, "3 open files");
  });
});

Deno.test("limits are whole numbers above 0; ff_guard refuses any other value", async () => {
  assert.throws(() => guardEnv({ memoryBytes: 0 }), /memoryBytes must be >= 1/);
  assert.throws(() => guardEnv({ cpuSeconds: Number.NaN }), /cpuSeconds must be >= 1/);
  assert.deepEqual(guardEnv({ cpuSeconds: 1.2 }).FF_GUARD_CPU_SECONDS, "2");
  assert.equal(cpuSecondsFor(1_200_000), 2410);
  for (const bad of ["abc", "0", "-5", "1e9", ""]) {
    const { code, stderr } = await new Deno.Command(DEFAULT_SETPRIV!, {
      args: ["--pdeathsig", "KILL", "--", "ffmpeg", "-version"],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", FF_GUARD_MEMORY_BYTES: bad },
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 126, bad);
    assert.match(
      new TextDecoder().decode(stderr),
      /ff_guard: FF_GUARD_MEMORY_BYTES must be a whole number above 0/,
    );
  }
});

/**
 * A launcher that runs ff_guard with `env` overriding the limits it is told: how a test puts limits on the runs of
 * {@linkcode transcode} and {@linkcode probeInput}, whose callers do not pass any.
 */
async function guardWith(dir: string, env: Record<string, string>): Promise<string> {
  const path = `${dir}/tight_guard`;
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
  await Deno.writeTextFile(path, `#!/bin/sh\n${assignments} exec '${DEFAULT_SETPRIV}' "$@"\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("a conversion whose limits are too low fails with conversion_failed, quickly", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 10 });
    const plan = planConversion(
      await probeInput(input, { maxDuration: 3600, maxStreams: 4 }),
      parseOptions({}),
    );
    const run = async (env: Record<string, string>) => {
      const setprivPath = await guardWith(dir, env);
      await transcode(input, `${dir}/out.mp3`, { plan, workDir: dir, timeoutMs: 30_000, setprivPath });
    };
    for (
      const [env, message] of [
        [{ FF_GUARD_FILE_BYTES: "10000" }, /killed by SIGXFSZ/],
        [{ FF_GUARD_MEMORY_BYTES: String(16 * 1024 ** 2) }, /ffmpeg exited with code/],
      ] as const
    ) {
      const started = Date.now();
      await rejectsWith(run(env), "conversion_failed", message);
      assert.ok(Date.now() - started < 5000, `${Date.now() - started} ms`);
      assert.equal(
        await Deno.stat(`${dir}/out.mp3`).then(() => true, () => false),
        false,
        "no output is left",
      );
    }
    const setprivPath = await guardWith(dir, { FF_GUARD_MEMORY_BYTES: String(16 * 1024 ** 2) });
    await rejectsWith(
      probeInput(input, { maxDuration: 3600, maxStreams: 4, setprivPath }),
      "conversion_failed",
      /ffprobe could not run/,
    );
  });
});

Deno.test("under the default limits a 720p video converts, a cover frame taken from its video too", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-720p", { seconds: 3 });
    const probe = await probeInput(input, { maxDuration: 3600, maxStreams: 4 });
    const plan = planConversion(probe, parseOptions({ cover: "1" }));
    await transcode(input, `${dir}/out.mp3`, { plan, workDir: dir, timeoutMs: 60_000 });
    assert.ok(Math.abs((await audioDuration(`${dir}/out.mp3`)) - 3) < 0.1);
  });
});
