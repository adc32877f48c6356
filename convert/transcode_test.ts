import assert from "node:assert/strict";
import { parseOptions } from "@vmp3/shared";
import { mainArgs, transcode, type TranscodeProgress } from "./transcode.ts";
import { DEFAULT_SETPRIV } from "./ffmpeg_check.ts";
import { type ConversionPlan, planConversion } from "./plan.ts";
import { probeInput } from "./probe.ts";
import {
  audioDuration,
  audioPacketHashes,
  chaptersOf,
  containsBytes,
  firstFrameHeader,
  id3Version,
  integratedLoudness,
  makeConcatTrap,
  makeHlsTrap,
  makeMedia,
  type MediaKind,
  pcm,
  probeJson,
  rmsDb,
  SOURCE_CHAPTERS,
  SOURCE_TAGS,
  TWO_TRACK_TONES,
  zeroCrossingRate,
} from "./testing/media.ts";
import { rejectsWith, withDir } from "./testing/helpers.ts";

/** The plan of `path` with raw `options` (as a query would give them), from a real probe. */
async function planFor(path: string, options: Record<string, string> = {}): Promise<ConversionPlan> {
  const probe = await probeInput(path, { maxDuration: 6 * 3600, maxStreams: 16 });
  return planConversion(probe, parseOptions(options));
}

/** A plan made by hand, for inputs the probe would refuse (transcode must stand on its own). */
function handPlan(overrides: Partial<ConversionPlan> = {}): ConversionPlan {
  return {
    method: "encode",
    audioStream: 1,
    duration: 3,
    encoder: { mode: "cbr", bitrate: 128 },
    sampleRate: 44100,
    channels: 2,
    tags: {},
    id3v2Version: 3,
    cover: null,
    chapters: false,
    chapterList: [],
    sourceStart: 0,
    ...overrides,
  };
}

/** Converts `input` with raw `options` into `dir`/out-N.mp3; returns the output path and the plan. */
async function convert(
  dir: string,
  input: string,
  options: Record<string, string> = {},
): Promise<{ output: string; plan: ConversionPlan }> {
  const plan = await planFor(input, options);
  const output = `${dir}/out-${crypto.randomUUID().slice(0, 8)}.mp3`;
  await transcode(input, output, { plan, workDir: dir, timeoutMs: 60_000 });
  return { output, plan };
}

/** The dominant frequency of the output's audio, about, from its zero-crossing rate (mono, 44.1 kHz). */
async function toneOf(path: string): Promise<number> {
  return zeroCrossingRate(await pcm(path, 1, 44100), 1, 44100) / 2;
}

/** The output's attached pictures (ffprobe's video streams with attached_pic=1). */
async function picturesOf(path: string): Promise<Record<string, unknown>[]> {
  const json = await probeJson(path);
  return json.streams.filter((s) =>
    s.codec_type === "video" && (s.disposition as Record<string, number>).attached_pic === 1
  );
}

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
      const plan = await planFor(input, { bitrate: "128" });
      await transcode(input, output, { plan, workDir: dir, timeoutMs: 30_000 });
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
      const { output, plan } = await convert(dir, input, { bitrate: String(bitrate) });
      assert.deepEqual(plan.encoder, { mode: "cbr", bitrate });
      const rate = Number((await probeJson(output)).streams[0].bit_rate);
      assert.ok(Math.abs(rate - bitrate * 1000) <= bitrate * 1000 * 0.05, `${bitrate}k gave ${rate}`);
      assert.equal(firstFrameHeader(await Deno.readFile(output)), "Info", "a CBR MP3 has an Info header");
    }
  });
});

/** Asserts fractions only grow within 0..1, some lie between, and the last (only) is 1. */
function assertProgress(reports: TranscodeProgress[]): void {
  const seen = reports.map((p) => p.fraction);
  assert.ok(seen.length >= 3, `only ${seen.length} progress calls: ${seen}`);
  assert.ok(
    seen.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f > seen[i - 1])),
    `not monotonic: ${seen}`,
  );
  assert.ok(seen.some((f) => f > 0 && f < 1), `no intermediate progress: ${seen}`);
  assert.equal(seen.at(-1), 1);
  assert.equal(seen.indexOf(1), seen.length - 1, "1 only at the end");
}

Deno.test("transcode reports progress that only grows, stays within 0..1 and ends at 1, with speed and eta", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 300 });
    const reports: TranscodeProgress[] = [];
    await transcode(input, `${dir}/out.mp3`, {
      plan: await planFor(input, { bitrate: "128" }),
      workDir: dir,
      timeoutMs: 60_000,
      onProgress: (p) => reports.push(p),
    });
    assertProgress(reports);
    const middle = reports.filter((p) => p.fraction < 1);
    assert.ok(middle.some((p) => p.speed !== undefined && p.speed > 0), JSON.stringify(reports));
    // The last report keeps the last speed: the worker shows it as "converting" while it stores the MP3.
    assert.deepEqual(
      reports.at(-1),
      { fraction: 1, eta: 0, speed: middle.at(-1)!.speed },
      JSON.stringify(reports),
    );
    for (const p of middle.filter((p) => p.speed)) {
      // eta = media seconds left / speed
      const expected = (300 - p.fraction * 300) / p.speed!;
      assert.ok(Math.abs(p.eta! - expected) < 0.5, `eta ${p.eta} for ${JSON.stringify(p)}`);
    }
  });
});

Deno.test("with normalize, progress spans both loudnorm passes: below 0.5 in the first, above in the second", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 120 });
    const reports: TranscodeProgress[] = [];
    await transcode(input, `${dir}/out.mp3`, {
      plan: await planFor(input, { normalize: "true" }),
      workDir: dir,
      timeoutMs: 120_000,
      onProgress: (p) => reports.push(p),
    });
    assertProgress(reports);
    assert.ok(reports.some((p) => p.fraction > 0 && p.fraction <= 0.5), JSON.stringify(reports));
    assert.ok(reports.some((p) => p.fraction > 0.5 && p.fraction < 1), JSON.stringify(reports));
    // In the first pass, the eta counts the second pass too: more than the first pass's own rest.
    const first = reports.find((p) => p.fraction < 0.5 && p.speed);
    if (first) assert.ok(first.eta! >= (120 - first.fraction * 240) / first.speed!, JSON.stringify(first));
  });
});

Deno.test("transcode kills ffmpeg and fails with conversion_failed when the timeout passes", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac", { seconds: 900 });
    const output = `${dir}/timeout-${crypto.randomUUID()}.mp3`;
    const started = Date.now();
    await rejectsWith(
      transcode(input, output, {
        plan: await planFor(input, { bitrate: "128" }),
        workDir: dir,
        timeoutMs: 300,
        name: "long.flac",
      }),
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
    const plan = await planFor(input, { bitrate: "128" });
    const started = Date.now();
    await assert.rejects(
      transcode(input, output, {
        plan,
        workDir: dir,
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
      transcode(trap.path, output, { plan: handPlan({ audioStream: 0 }), workDir: dir, timeoutMs: 30_000 }),
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
      transcode(trap.path, output, { plan: handPlan({ audioStream: 0 }), workDir: dir, timeoutMs: 30_000 }),
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
      transcode(input, `${dir}/out.mp3`, {
        plan: handPlan(),
        workDir: dir,
        timeoutMs: 30_000,
        name: "clip.mp4",
      }),
      "no_audio_stream",
      /^Cannot convert "clip\.mp4": the file has no audio stream$/,
    );
  });
});

Deno.test("transcode fails with corrupt_input on a truncated MP4 and says why without the server path", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "truncated-mp4");
    const error = await rejectsWith(
      transcode(input, `${dir}/out.mp3`, {
        plan: handPlan(),
        workDir: dir,
        timeoutMs: 30_000,
        name: "clip.mp4",
      }),
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
          plan: handPlan(),
          workDir: dir,
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
    const smallPlan = JSON.stringify(await planFor(small, { bitrate: "128" }));
    const longPlan = JSON.stringify(await planFor(long, { bitrate: "128" }));
    const script = `
      const { transcode } = await import(${JSON.stringify(new URL("./transcode.ts", import.meta.url).href)});
      await transcode(${JSON.stringify(small)}, ${JSON.stringify(`${dir}/ok.mp3`)},
        { plan: ${smallPlan}, workDir: ${JSON.stringify(dir)}, timeoutMs: 30000 });
      const started = Date.now();
      const error = await transcode(${JSON.stringify(long)}, ${JSON.stringify(output)},
        { plan: ${longPlan}, workDir: ${JSON.stringify(dir)}, timeoutMs: 300 }).catch((e) => e);
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
 * Starts `deno eval` running transcode, waits for its first progress report, SIGKILLs the Deno process and hands
 * `check` the output path (which appears only in ffmpeg's command line). The input is a one-minute FLAC fed
 * through a FIFO in real time (`ffmpeg -re`), so that the conversion lasts a minute however fast the machine is;
 * the feeder is stopped afterwards (an ffmpeg still reading then gets the end of its input).
 */
async function withParentKilledMidConversion(
  dir: string,
  setprivPath: string | null,
  check: (output: string) => Promise<void>,
): Promise<void> {
  const source = await makeMedia(dir, "flac", { seconds: 60 });
  const input = `${dir}/paced-${crypto.randomUUID()}.flac`;
  assert.ok((await new Deno.Command("mkfifo", { args: [input] }).output()).success, "mkfifo failed");
  const feeder = new Deno.Command("ffmpeg", {
    args: [
      "-hide_banner",
      "-nostdin",
      "-v",
      "error",
      "-re",
      "-i",
      source,
      "-c",
      "copy",
      "-f",
      "flac",
      "-y",
      input,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const output = `${dir}/orphan-${crypto.randomUUID()}.mp3`;
    const script = `
    const { transcode } = await import(Deno.env.get("VMP3_MODULE"));
    const setprivPath = Deno.env.get("VMP3_SETPRIV") || null;
    let said = false;
    await transcode(Deno.env.get("VMP3_IN"), Deno.env.get("VMP3_OUT"), {
      plan: JSON.parse(Deno.env.get("VMP3_PLAN")), workDir: Deno.env.get("VMP3_DIR"), timeoutMs: 120000, setprivPath,
      onProgress: () => { if (!said) { said = true; console.log("running"); } },
    });`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      cwd: new URL("..", import.meta.url).pathname,
      env: {
        VMP3_MODULE: new URL("./transcode.ts", import.meta.url).href,
        VMP3_IN: input,
        VMP3_OUT: output,
        VMP3_PLAN: JSON.stringify(await planFor(source, { bitrate: "128" })),
        VMP3_DIR: dir,
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
    await check(output);
  } finally {
    try {
      feeder.kill("SIGKILL");
    } catch {
      // it has ended: the ffmpeg reading the FIFO is gone
    }
    await feeder.status;
  }
}

Deno.test("ffmpeg dies within 3 s when the process running transcode is killed with SIGKILL", async () => {
  await withDir(async (dir) => {
    await withParentKilledMidConversion(dir, "setpriv", async (output) => {
      assert.deepEqual(await waitGone(output, 3000), [], "ffmpeg outlived its parent");
    });
  });
});

Deno.test("without setpriv ffmpeg outlives a killed parent: a broken progress pipe does not stop it", async () => {
  // ffmpeg ignores SIGPIPE and the write errors of -progress, so the pipe alone is no guard; this is why
  // transcode runs it under `setpriv --pdeathsig KILL`.
  await withDir(async (dir) => {
    await withParentKilledMidConversion(dir, null, async (output) => {
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
});

Deno.test("transcode converts a WebM of unknown duration, capped by maxDuration", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "webm-streamed");
    const output = `${dir}/out.mp3`;
    const plan = await planFor(input, { bitrate: "128" });
    assert.equal(plan.duration, undefined);
    await transcode(input, output, { plan, workDir: dir, maxDuration: 60, timeoutMs: 30_000 });
    assert.ok(Math.abs((await audioDuration(output)) - (await audioDuration(input))) < 0.1);
  });
});

// --- Options (issue 3): each proved on real media, read back with ffprobe/ffmpeg.

Deno.test("quality gives a VBR MP3: its first frame carries a Xing header, not Info", async () => {
  await withDir(async (dir) => {
    const { output, plan } = await convert(dir, await makeMedia(dir, "mp4"), { quality: "4" });
    assert.deepEqual(plan.encoder, { mode: "vbr", quality: 4 });
    assert.equal(firstFrameHeader(await Deno.readFile(output)), "Xing");
  });
});

Deno.test("auto on a 96 kHz PCM source encodes VBR V2 at 48 kHz, stereo", async () => {
  await withDir(async (dir) => {
    const { output, plan } = await convert(dir, await makeMedia(dir, "wav-96k"));
    assert.deepEqual(plan.encoder, { mode: "vbr", quality: 2 });
    assert.equal(firstFrameHeader(await Deno.readFile(output)), "Xing");
    const stream = (await probeJson(output)).streams[0];
    assert.equal(Number(stream.sample_rate), 48000);
    assert.equal(Number(stream.channels), 2);
  });
});

Deno.test("auto on a 128 kbit/s AAC source encodes CBR at no more than the source's bitrate", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-aac-128k");
    const source = Number((await probeJson(input)).streams.find((s) => s.codec_type === "audio")!.bit_rate);
    const { output, plan } = await convert(dir, input);
    assert.equal(plan.encoder?.mode, "cbr");
    const rate = Number((await probeJson(output)).streams[0].bit_rate);
    assert.ok(rate <= 128_000 && rate <= source * 1.01, `source ${source}, output ${rate}`);
    assert.ok(rate >= 96_000, `needlessly low: ${rate}`);
    assert.equal(firstFrameHeader(await Deno.readFile(output)), "Info");
  });
});

Deno.test("sample_rate and channels are honoured (44.1 kHz mono to 22.05 kHz stereo)", async () => {
  await withDir(async (dir) => {
    const { output } = await convert(dir, await makeMedia(dir, "mp4"), {
      sample_rate: "22050",
      channels: "2",
    });
    const stream = (await probeJson(output)).streams[0];
    assert.equal(Number(stream.sample_rate), 22050);
    assert.equal(Number(stream.channels), 2);
  });
});

Deno.test("an 8 kHz mono source stays 8 kHz mono by default", async () => {
  await withDir(async (dir) => {
    const { output } = await convert(dir, await makeMedia(dir, "wav-8k-mono"));
    const stream = (await probeJson(output)).streams[0];
    assert.equal(Number(stream.sample_rate), 8000);
    assert.equal(Number(stream.channels), 1);
    assert.ok(Math.abs((await audioDuration(output)) - 3) <= 0.1);
  });
});

for (const kind of ["flac-5.1", "flac-7.1"] as const) {
  Deno.test(`a ${kind} source with sound only in its centre is downmixed to stereo with the centre in both`, async () => {
    await withDir(async (dir) => {
      const { output } = await convert(dir, await makeMedia(dir, kind));
      assert.equal(Number((await probeJson(output)).streams[0].channels), 2);
      // Taking the first two channels (front left and right) would give silence.
      const samples = await pcm(output, 2, 44100);
      for (const channel of [0, 1]) {
        const level = rmsDb(samples, 2, channel);
        assert.ok(level > -30, `channel ${channel} at ${level} dBFS`);
      }
      assert.ok(Math.abs((await toneOf(output)) - 440) < 20);
    });
  });
}

Deno.test("start and end trim the MP3 to their range, within 0.1 s", async () => {
  await withDir(async (dir) => {
    const { output, plan } = await convert(dir, await makeMedia(dir, "mp4"), { start: "0.5", end: "2.0" });
    assert.equal(plan.duration, 1.5);
    const seconds = await audioDuration(output);
    assert.ok(Math.abs(seconds - 1.5) <= 0.1, `${seconds} s`);
  });
});

Deno.test("start and duration trim the MP3, within 0.1 s; a duration past the end stops at the end", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4");
    const { output } = await convert(dir, input, { start: "1", duration: "1.2" });
    const seconds = await audioDuration(output);
    assert.ok(Math.abs(seconds - 1.2) <= 0.1, `${seconds} s`);
    const rest = await convert(dir, input, { start: "2", duration: "10" });
    assert.equal(rest.plan.duration, 1);
    const restSeconds = await audioDuration(rest.output);
    assert.ok(Math.abs(restSeconds - 1) <= 0.1, `${restSeconds} s`);
  });
});

Deno.test("audio_track chooses the stream by index or by language; the default stream otherwise", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mkv-two-tracks");
    const cases: [Record<string, string>, number][] = [
      [{}, TWO_TRACK_TONES.fra], // the stream marked default, though second
      [{ audio_track: "0" }, TWO_TRACK_TONES.eng],
      [{ audio_track: "1" }, TWO_TRACK_TONES.fra],
      [{ audio_track: "eng" }, TWO_TRACK_TONES.eng],
      [{ audio_track: "fra" }, TWO_TRACK_TONES.fra],
    ];
    for (const [options, tone] of cases) {
      const { output } = await convert(dir, input, options);
      const heard = await toneOf(output);
      assert.ok(
        Math.abs(heard - tone) < tone * 0.05,
        `${JSON.stringify(options)}: heard ${heard} Hz, not ${tone}`,
      );
    }
  });
});

Deno.test("the source's title, artist, album and date are carried over; nothing else of its metadata", async () => {
  await withDir(async (dir) => {
    const { output } = await convert(dir, await makeMedia(dir, "mp4-tagged"));
    const tags = (await probeJson(output)).format.tags as Record<string, string>;
    assert.equal(tags.title, SOURCE_TAGS.title);
    assert.equal(tags.artist, SOURCE_TAGS.artist);
    assert.equal(tags.album, SOURCE_TAGS.album);
    assert.equal(tags.date, SOURCE_TAGS.date);
    assert.equal(tags.comment, undefined);
    assert.equal(tags.copyright, undefined);
    const bytes = await Deno.readFile(output);
    assert.ok(!containsBytes(bytes, new TextEncoder().encode("a source co")), "the source's comment leaked");
    assert.equal(id3Version(bytes), 3);
  });
});

Deno.test("an Ogg's tags (Vorbis comments on the stream) are carried over too", async () => {
  await withDir(async (dir) => {
    const { output } = await convert(dir, await makeMedia(dir, "ogg-tagged"));
    const tags = (await probeJson(output)).format.tags as Record<string, string>;
    assert.equal(tags.title, SOURCE_TAGS.title);
    assert.equal(tags.artist, SOURCE_TAGS.artist);
  });
});

for (const version of [3, 4]) {
  Deno.test(`tag options override the source's and read back from ID3v2.${version}, year and track included`, async () => {
    await withDir(async (dir) => {
      const options = {
        title: "Été — naïve = title",
        artist: "-metadata evil=1",
        year: "2001",
        track: "3/12",
        genre: "Podcast",
        comment: "line one\nline two",
        id3v2_version: String(version),
      };
      const { output } = await convert(dir, await makeMedia(dir, "mp4-tagged"), options);
      const tags = (await probeJson(output)).format.tags as Record<string, string>;
      assert.equal(tags.title, options.title);
      assert.equal(tags.artist, options.artist);
      assert.equal(tags.album, SOURCE_TAGS.album, "the source's album stays");
      assert.equal(tags.date, "2001");
      assert.equal(tags.track, "3/12");
      assert.equal(tags.genre, "Podcast");
      assert.equal(tags.comment, options.comment);
      assert.equal(tags.evil, undefined);
      const bytes = await Deno.readFile(output);
      assert.equal(id3Version(bytes), version);
      const ascii = (text: string) => new TextEncoder().encode(text);
      assert.ok(containsBytes(bytes, ascii("COMM")), "the comment is a COMM frame, which players show");
      assert.ok(!containsBytes(bytes, ascii("TXXX")), "not a TXXX frame, which they do not");
    });
  });
}

Deno.test("cover=auto embeds the source's attached picture as the front cover; cover=none leaves it out", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-cover");
    const auto = await convert(dir, input);
    const [picture, ...more] = await picturesOf(auto.output);
    assert.ok(picture, "no attached picture");
    assert.equal(more.length, 0);
    assert.equal(picture.codec_name, "mjpeg");
    assert.equal((picture.tags as Record<string, string>).comment, "Cover (front)");
    assert.equal([picture.width, picture.height].join("x"), "300x200");
    assert.equal((await picturesOf((await convert(dir, input, { cover: "none" })).output)).length, 0);
    // A plain video has no picture: auto adds none.
    assert.equal((await picturesOf((await convert(dir, await makeMedia(dir, "mp4"))).output)).length, 0);
  });
});

Deno.test("cover=<seconds> embeds a frame of the video as the front cover, also at its very end", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4");
    // 2.99 s is after the last frame (2.933 s at 15 fps) of the 3 s video: its last frame is taken.
    for (const cover of ["1.5", "2.99"]) {
      const { output } = await convert(dir, input, { cover });
      const [picture] = await picturesOf(output);
      assert.ok(picture, `no picture for cover=${cover}`);
      assert.equal((picture.tags as Record<string, string>).comment, "Cover (front)");
      assert.equal([picture.width, picture.height].join("x"), "320x240");
    }
    assert.deepEqual(
      [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("cover-")),
      [],
      "cover left over",
    );
  });
});

Deno.test("the source's chapters become ID3 chapters with their titles; a trim drops and shifts them", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-tagged");
    const whole = await chaptersOf((await convert(dir, input)).output);
    assert.deepEqual(whole, SOURCE_CHAPTERS);
    const trimmed = await chaptersOf((await convert(dir, input, { start: "1.5", end: "2.7" })).output);
    assert.deepEqual(trimmed.map(([s, e, t]) => [s, Math.round(e * 10) / 10, t]), [[0, 0.5, "Middle"], [
      0.5,
      1.2,
      "End part",
    ]]);
  });
});

Deno.test("chapters carry their cleaned titles and nothing else of their metadata", async () => {
  await withDir(async (dir) => {
    const metadata = `${dir}/chapters.txt`;
    await Deno.writeTextFile(
      metadata,
      [
        ";FFMETADATA1",
        ...[["0", "1000", "One"], ["1000", "3000", "Two"]].flatMap(([start, end, title]) => [
          "[CHAPTER]",
          "TIMEBASE=1/1000",
          `START=${start}`,
          `END=${end}`,
          `title=${title}`,
          "comment=SECRET chapter note",
          "artist=SECRET person",
        ]),
      ].join("\n"),
    );
    const input = `${dir}/chapters.mkv`;
    const made = await new Deno.Command("ffmpeg", {
      args: [
        ...["-v", "error", "-f", "lavfi", "-i", "sine=d=3", "-i", metadata],
        ...["-map", "0", "-map_chapters", "1", "-c:a", "aac", input],
      ],
    }).output();
    assert.ok(made.success, new TextDecoder().decode(made.stderr));
    const { output } = await convert(dir, input);
    assert.deepEqual((await chaptersOf(output)).map(([, , title]) => title), ["One", "Two"]);
    assert.ok(
      !containsBytes(await Deno.readFile(output), new TextEncoder().encode("SECRET")),
      "chapter tags leaked",
    );
  });
});

Deno.test("normalize brings a quiet source to -16 LUFS by default and to the loudness asked, within 1 LU", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "flac-quiet");
    const before = await integratedLoudness(input);
    assert.ok(before < -35, `the source is not quiet: ${before} LUFS`);
    for (const [options, target] of [[{ normalize: "true" }, -16], [{ loudness: "-23" }, -23]] as const) {
      const { output } = await convert(dir, input, options);
      const measured = await integratedLoudness(output);
      assert.ok(Math.abs(measured - target) <= 1, `${JSON.stringify(options)}: ${measured} LUFS`);
      assert.equal(
        Number((await probeJson(output)).streams[0].sample_rate),
        44100,
        "back from loudnorm's 192 kHz",
      );
    }
  });
});

for (const kind of ["mp3-tagged", "avi"] as const) {
  Deno.test(`auto on a ${kind === "avi" ? "mp3-in-avi" : "plain MP3"} source copies its MP3 frames unchanged`, async () => {
    await withDir(async (dir) => {
      const input = await makeMedia(dir, kind);
      const { output, plan } = await convert(dir, input);
      assert.equal(plan.method, "copy");
      const [source, copied] = [await audioPacketHashes(input), await audioPacketHashes(output)];
      assert.ok(source.length > 50);
      assert.deepEqual(copied, source);
    });
  });
}

Deno.test("a copy trims to whole frames: the packets are a run of the source's, within 0.1 s of the length", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp3-tagged");
    const { output, plan } = await convert(dir, input, { start: "1", duration: "1" });
    assert.equal(plan.method, "copy");
    const [source, copied] = [await audioPacketHashes(input), await audioPacketHashes(output)];
    const at = source.indexOf(copied[0]);
    assert.ok(at > 0, "the first packet is not the source's");
    assert.deepEqual(copied, source.slice(at, at + copied.length));
    // Frames of 1152 samples at 44.1 kHz: the first copied frame starts within 0.1 s of 1 s.
    const startsAt = (at * 1152) / 44100;
    assert.ok(Math.abs(startsAt - 1) <= 0.1, `starts at frame ${at}, ${startsAt} s`);
    const seconds = await audioDuration(output);
    assert.ok(Math.abs(seconds - 1) <= 0.1, `${seconds} s`);
  });
});

Deno.test("mainArgs maps exactly the planned stream, allows only audio decoders, and gives each tag one argv entry", () => {
  const plan = handPlan({
    audioStream: 2,
    start: 1.5,
    cut: 2,
    duration: 2,
    tags: { title: "a=b; $(rm -rf /)", comment: "two\nlines" },
  });
  const args = mainArgs("/w/in", "/w/out.mp3", plan, { cover: null, caps: { seconds: 2, bytes: 1000 } });
  const at = (flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));
  assert.deepEqual(at("-map"), ["0:2"]);
  assert.deepEqual(at("-i"), ["file:/w/in"]);
  assert.ok(args.indexOf("-ss") < args.indexOf("-i"), "input seeking");
  assert.deepEqual(at("-ss"), ["1.5"]);
  assert.deepEqual(at("-t"), ["2"]);
  assert.deepEqual(at("-protocol_whitelist"), ["file"]);
  const decoders = at("-codec_whitelist")[0].split(",");
  assert.ok(decoders.includes("aac") && decoders.includes("mp3float"));
  for (const video of ["h264", "hevc", "vp9", "mjpeg", "png"]) assert.ok(!decoders.includes(video), video);
  assert.ok(args.includes("-vn") && args.includes("-sn") && args.includes("-dn"));
  // The comment is not among them: it is written afterwards as a COMM frame (convert/id3_comment.ts).
  assert.deepEqual(at("-metadata"), ["title=a=b; $(rm -rf /)"]);
  assert.deepEqual(at("-id3v2_version"), ["3"]);
});

Deno.test("an audio codec outside the decoder allowlist fails with unsupported_input", async () => {
  await withDir(async (dir) => {
    const input = `${dir}/yamaha.wav`;
    const made = await new Deno.Command("ffmpeg", {
      args: ["-hide_banner", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "adpcm_yamaha", input],
      stdin: "null",
    }).output();
    assert.ok(made.success);
    await rejectsWith(
      transcode(input, `${dir}/out.mp3`, {
        plan: await planFor(input, { bitrate: "128" }),
        workDir: dir,
        timeoutMs: 30_000,
        name: "odd.wav",
      }),
      "unsupported_input",
      /^Cannot convert "odd\.wav": its audio is in a codec we do not decode$/,
    );
  });
});
