import assert from "node:assert/strict";
import { transcode } from "./transcode.ts";
import { DEFAULT_SETPRIV } from "./ffmpeg_check.ts";
import {
  audioDuration,
  containsBytes,
  makeConcatTrap,
  makeHlsTrap,
  makeMedia,
  type MediaKind,
  probeJson,
} from "./testing/media.ts";
import { rejectsWith, withDir } from "./testing/helpers.ts";

/** Pids of processes whose command line contains `text` (pgrep -f). */
async function processesWith(text: string): Promise<number[]> {
  const pattern = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const { stdout } = await new Deno.Command("pgrep", {
    args: ["-f", pattern],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  return new TextDecoder().decode(stdout).split("\n").filter(Boolean).map(Number);
}

/** Waits until no process mentions `text`, for at most `ms`; returns the pids still there. */
async function waitGone(text: string, ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  let pids = await processesWith(text);
  while (pids.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    pids = await processesWith(text);
  }
  return pids;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

const GOOD: MediaKind[] = ["mp4", "mov", "mkv", "webm", "avi", "flac"];

for (const kind of GOOD) {
  Deno.test(`transcode turns a ${kind} file into a 128k CBR MP3 as long as its audio`, async () => {
    await withDir(async (dir) => {
      const input = await makeMedia(dir, kind);
      const output = `${dir}/out.mp3`;
      await transcode(input, output, { bitrate: 128, duration: 3, timeoutMs: 30_000 });
      const json = await probeJson(output);
      assert.equal(json.format.format_name, "mp3");
      assert.equal(json.streams.length, 1);
      assert.equal(json.streams[0].codec_name, "mp3");
      const streamRate = Number(json.streams[0].bit_rate);
      assert.ok(Math.abs(streamRate - 128_000) <= 128_000 * 0.05, `stream bitrate ${streamRate}`);
      const fileRate = (Number(json.format.size) * 8) / Number(json.format.duration);
      assert.ok(Math.abs(fileRate - 128_000) <= 128_000 * 0.05, `file bitrate ${fileRate}`);
      const [inSeconds, outSeconds] = [await audioDuration(input), await audioDuration(output)];
      assert.ok(Math.abs(outSeconds - inSeconds) <= 0.1, `in ${inSeconds} s, out ${outSeconds} s`);
    });
  });
}

Deno.test("transcode honours the requested bitrate from 32k to 320k", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4");
    for (const bitrate of [32, 192, 320]) {
      const output = `${dir}/out-${bitrate}.mp3`;
      await transcode(input, output, { bitrate, duration: 3, timeoutMs: 30_000 });
      const rate = Number((await probeJson(output)).streams[0].bit_rate);
      assert.ok(Math.abs(rate - bitrate * 1000) <= bitrate * 1000 * 0.05, `${bitrate}k gave ${rate}`);
    }
  });
});

Deno.test("transcode reports progress that only grows, stays within 0..1 and ends at 1", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 300 });
    const seen: number[] = [];
    await transcode(input, `${dir}/out.mp3`, {
      bitrate: 128,
      duration: 300,
      timeoutMs: 60_000,
      onProgress: (fraction) => seen.push(fraction),
    });
    assert.ok(seen.length >= 3, `only ${seen.length} progress calls: ${seen}`);
    assert.ok(
      seen.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f > seen[i - 1])),
      `not monotonic: ${seen}`,
    );
    assert.ok(seen.some((f) => f > 0 && f < 1), `no intermediate progress: ${seen}`);
    assert.equal(seen.at(-1), 1);
  });
});

Deno.test("transcode kills ffmpeg and fails with conversion_failed when the timeout passes", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 900 });
    const output = `${dir}/timeout-${crypto.randomUUID()}.mp3`;
    const started = Date.now();
    await rejectsWith(
      transcode(input, output, { bitrate: 128, duration: 900, timeoutMs: 300, name: "long.flac" }),
      "conversion_failed",
      /^Converting "long\.flac" timed out after 0\.3 s$/,
    );
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    assert.deepEqual(await processesWith(output), []);
    assert.equal(await exists(output), false, "the partial output is removed");
  });
});

Deno.test("transcode kills ffmpeg and rejects with the signal's reason when aborted", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 900 });
    const output = `${dir}/abort-${crypto.randomUUID()}.mp3`;
    const controller = new AbortController();
    const reason = new Error("shutting down");
    let progressed = false;
    const started = Date.now();
    await assert.rejects(
      transcode(input, output, {
        bitrate: 128,
        duration: 900,
        timeoutMs: 60_000,
        signal: controller.signal,
        onProgress: () => {
          progressed = true;
          controller.abort(reason);
        },
      }),
      (e) => e === reason,
    );
    assert.ok(progressed, "ffmpeg was running when aborted");
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    assert.deepEqual(await processesWith(output), []);
    assert.equal(await exists(output), false);
  });
});

Deno.test("transcode on an HLS playlist named .mp4 fails with unsupported_input and never reads the listed file", async () => {
  await withDir(async (dir) => {
    const trap = await makeHlsTrap(dir);
    const output = `${dir}/out.mp3`;
    // No probe first: the demuxer allowlist of transcode itself must stop it (defence in depth).
    await rejectsWith(
      transcode(trap.path, output, { bitrate: 128, duration: 4, timeoutMs: 30_000 }),
      "unsupported_input",
    );
    if (await exists(output)) {
      assert.ok(!containsBytes(await Deno.readFile(output), new TextEncoder().encode(trap.canaryText)));
    }
  });
});

Deno.test("transcode on an ffconcat list named .mp4 fails with unsupported_input and never reads the listed file", async () => {
  await withDir(async (dir) => {
    const trap = await makeConcatTrap(dir);
    const output = `${dir}/out.mp3`;
    await rejectsWith(
      transcode(trap.path, output, { bitrate: 128, duration: 4, timeoutMs: 30_000 }),
      "unsupported_input",
    );
    if (await exists(output)) {
      assert.ok(!containsBytes(await Deno.readFile(output), new TextEncoder().encode(trap.canaryText)));
    }
  });
});

Deno.test("transcode fails with no_audio_stream on a video without audio", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-no-audio");
    await rejectsWith(
      transcode(input, `${dir}/out.mp3`, { bitrate: 128, duration: 3, timeoutMs: 30_000, name: "clip.mp4" }),
      "no_audio_stream",
      /^Cannot convert "clip\.mp4": the file has no audio stream$/,
    );
  });
});

Deno.test("transcode fails with corrupt_input on a truncated MP4 and says why without the server path", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "truncated-mp4");
    const error = await rejectsWith(
      transcode(input, `${dir}/out.mp3`, { bitrate: 128, duration: 3, timeoutMs: 30_000, name: "clip.mp4" }),
      "corrupt_input",
      /^Cannot convert "clip\.mp4": the file is damaged \(.*Invalid data found when processing input\)$/,
    );
    assert.ok(!error.message.includes(dir), error.message);
  });
});

Deno.test("transcode names a missing ffmpeg and how to install it", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "zero-bytes");
    // Plain setpriv and none: the default launcher would refuse a path outside its folders (tested below).
    for (const setprivPath of ["setpriv", null]) {
      await assert.rejects(
        transcode(input, `${dir}/out.mp3`, {
          bitrate: 128,
          duration: 3,
          timeoutMs: 30_000,
          ffmpegPath: "/nonexistent/ffmpeg",
          setprivPath,
        }),
        /ffmpeg was not found at "\/nonexistent\/ffmpeg"\. Install it/,
      );
    }
  });
});

Deno.test("under a narrow --allow-run of only the launcher, transcode converts and its timeout still kills ffmpeg", async () => {
  await withDir(async (dir) => {
    const small = await makeMedia(dir, "mp4");
    const long = await makeMedia(dir, "flac", { seconds: 900 });
    const output = `${dir}/narrow-${crypto.randomUUID()}.mp3`;
    // Deno.kill(-pid) needs an unrestricted --allow-run; with a list, transcode falls back to killing the child.
    const script = `
      const { transcode } = await import(${JSON.stringify(new URL("./transcode.ts", import.meta.url).href)});
      await transcode(${JSON.stringify(small)}, ${JSON.stringify(`${dir}/ok.mp3`)},
        { bitrate: 128, duration: 3, timeoutMs: 30000 });
      const started = Date.now();
      const error = await transcode(${JSON.stringify(long)}, ${JSON.stringify(output)},
        { bitrate: 128, duration: 900, timeoutMs: 300 }).catch((e) => e);
      console.log(JSON.stringify({ code: error.code, ms: Date.now() - started }));`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-read=${dir}`,
        `--allow-write=${dir}`,
        `--allow-run=${DEFAULT_SETPRIV}`,
        "-",
      ],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const { success, stdout, stderr } = await child.output();
    assert.ok(success, new TextDecoder().decode(stderr));
    const result = JSON.parse(new TextDecoder().decode(stdout));
    assert.equal(result.code, "conversion_failed");
    assert.ok(result.ms < 3000, `took ${result.ms} ms`);
    assert.deepEqual(await processesWith(output), []);
    assert.ok((await probeJson(`${dir}/ok.mp3`)).streams.length === 1);
  });
});

/**
 * Starts `deno eval` running transcode on a 15-minute input, waits for its first progress report, SIGKILLs the
 * Deno process and returns the output path (which appears only in ffmpeg's command line).
 */
async function killParentMidConversion(dir: string, setprivPath: string | null): Promise<string> {
  const input = await makeMedia(dir, "flac", { seconds: 900 });
  const output = `${dir}/orphan-${crypto.randomUUID()}.mp3`;
  const script = `
    const { transcode } = await import(Deno.env.get("VMP3_MODULE"));
    const setprivPath = Deno.env.get("VMP3_SETPRIV") || null;
    let said = false;
    await transcode(Deno.env.get("VMP3_IN"), Deno.env.get("VMP3_OUT"), {
      bitrate: 128, duration: 900, timeoutMs: 120000, setprivPath,
      onProgress: () => { if (!said) { said = true; console.log("running"); } },
    });`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    cwd: new URL("..", import.meta.url).pathname,
    env: {
      VMP3_MODULE: new URL("./transcode.ts", import.meta.url).href,
      VMP3_IN: input,
      VMP3_OUT: output,
      VMP3_SETPRIV: setprivPath ?? "",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("running")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  assert.ok(text.includes("running"), `the child did not start converting: ${text}`);
  assert.equal((await processesWith(output)).length, 1, "ffmpeg runs before the parent is killed");
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  return output;
}

Deno.test("ffmpeg dies within 3 s when the process running transcode is killed with SIGKILL", async () => {
  await withDir(async (dir) => {
    const output = await killParentMidConversion(dir, "setpriv");
    assert.deepEqual(await waitGone(output, 3000), [], "ffmpeg outlived its parent");
  });
});

Deno.test("without setpriv ffmpeg outlives a killed parent: a broken progress pipe does not stop it", async () => {
  // ffmpeg ignores SIGPIPE and the write errors of -progress, so the pipe alone is no guard; this is why
  // transcode runs it under `setpriv --pdeathsig KILL`.
  await withDir(async (dir) => {
    const output = await killParentMidConversion(dir, null);
    await new Promise((r) => setTimeout(r, 1500));
    const orphans = await processesWith(output);
    try {
      assert.equal(orphans.length, 1, "expected the orphan ffmpeg to still run");
    } finally {
      for (const pid of orphans) Deno.kill(pid, "SIGKILL");
      await waitGone(output, 3000);
    }
  });
});

Deno.test("transcode converts a WebM of unknown duration, capped by maxDuration", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "webm-streamed");
    const output = `${dir}/out.mp3`;
    await transcode(input, output, { bitrate: 128, maxDuration: 60, timeoutMs: 30_000 });
    assert.ok(Math.abs((await audioDuration(output)) - (await audioDuration(input))) < 0.1);
  });
});
