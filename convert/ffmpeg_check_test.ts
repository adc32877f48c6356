import assert from "node:assert/strict";
import { checkFfmpeg, spawnTool } from "./ffmpeg_check.ts";
import { withDir } from "./testing/helpers.ts";

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
