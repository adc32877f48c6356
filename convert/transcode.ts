/**
 * Carries out a {@linkcode ConversionPlan} with hardened ffmpeg runs: local files only, the same demuxer allowlist
 * as the probe, a decoder allowlist on every input (no video decoder runs on the main input), exactly one audio
 * stream mapped, size and time caps, a clean environment, one wall-clock budget for all the runs of a job that
 * kills their process group, and a parent-death signal so ffmpeg never outlives this process.
 *
 * The runs: (1) the cover, when the plan has one: one JPEG into the work folder ({@linkcode makeCover}); (2) when
 * normalising, loudnorm's measuring pass; (3) the main run, which copies or encodes the audio, adds the tags,
 * chapters and the cover, and writes the MP3.
 */
import { basename, join, resolve } from "node:path";
import { AppError } from "@vmp3/shared";
import { COVER_DEMUXER, makeCover } from "./cover.ts";
import {
  AUDIO_DECODERS,
  inputArgs,
  lastMessage,
  type RunContext,
  runFfmpeg,
  type RunResult,
  seconds,
  withoutProbeNoise,
} from "./ffmpeg_run.ts";
import type { ToolLimits } from "./ffmpeg_check.ts";
import { addComment } from "./id3_comment.ts";
import { applyFilter, type LoudnessMeasurement, measureFilter, parseLoudnorm } from "./loudness.ts";
import { type ConversionPlan, survivingChapters } from "./plan.ts";
import { ALLOWED_DEMUXERS } from "./probe.ts";
import type { ProgressUpdate } from "./progress.ts";
import { hideSource, resolveSource, throwIfSourceReadFailed } from "./source.ts";

/** Where a conversion stands. */
export interface TranscodeProgress {
  /** Done fraction of the whole job, 0..1; only grows; 1 only once ffmpeg has succeeded. */
  fraction: number;
  /** ffmpeg's current speed, as a multiple of real time. */
  speed?: number;
  /** Estimated seconds left: the media time still to process over the current speed. */
  eta?: number;
}

/** Options of {@linkcode transcode}. */
export interface TranscodeOptions {
  /** What to do, from {@linkcode planConversion}. */
  plan: ConversionPlan;
  /** A private folder for the job's own files (the cover); they are removed before the call returns. */
  workDir: string;
  /** The ffmpeg binary (default "ffmpeg"). */
  ffmpegPath?: string;
  /** Where the plan's duration is unknown, the -t/-fs caps assume this many seconds (and no progress is reported). */
  maxDuration?: number;
  /** Wall-clock cap of all the ffmpeg runs together, in ms; past it ffmpeg is killed and the call fails with conversion_failed. */
  timeoutMs: number;
  /** Stops the conversion (ffmpeg is killed); the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called as the job advances, only when the fraction grows; with fraction 1 once ffmpeg has succeeded. */
  onProgress?: (progress: TranscodeProgress) => void;
  /** The name shown in error messages (default: the input's base name). Never a server path. */
  name?: string;
  /**
   * util-linux `setpriv`, used to give ffmpeg a parent-death signal (SIGKILL) so it dies with this process
   * (default "setpriv" on Linux; null runs ffmpeg directly). Needs --allow-run for it.
   */
  setprivPath?: string | null;
  /** The rlimits of each run (see spawnTool); the CPU-time cap defaults to twice the time left. */
  limits?: Partial<ToolLimits>;
}

/** The caps of a run: its -t and -fs. */
export interface Caps {
  /** -t, in seconds. */
  seconds: number;
  /** -fs, in bytes. */
  bytes: number;
}

/** The longest duration assumed when neither the plan nor the caller knows one, in seconds. */
const DEFAULT_MAX_DURATION = 6 * 3600;
/** The bitrate assumed for the size cap of a VBR encode or a copy (the most an MP3 has), in kbit/s. */
const MAX_MP3_KBPS = 320;

/**
 * Converts `inputPath` to an MP3 at `outputPath` (overwritten; removed on failure) as `plan` says. Throws
 * {@linkcode AppError}: unsupported_input (format or audio codec not accepted), no_audio_stream, corrupt_input
 * (ffmpeg reports invalid data), invalid_option (a cover frame that cannot be taken), conversion_failed (anything
 * else, or the timeout).
 */
export async function transcode(
  inputPath: string,
  outputPath: string,
  options: TranscodeOptions,
): Promise<void> {
  const input = resolveSource(inputPath);
  const output = resolve(outputPath);
  if (input === output) throw new Error("transcode: the output path must differ from the input path");
  options.signal?.throwIfAborted();
  const { plan } = options;
  const name = options.name ?? basename(input.split("?")[0]);
  const context: RunContext = {
    ffmpegPath: options.ffmpegPath,
    setprivPath: options.setprivPath,
    limits: options.limits,
    deadline: Date.now() + options.timeoutMs,
    signal: options.signal,
  };
  const timeoutError = () =>
    new AppError(
      "conversion_failed",
      `Converting "${name}" timed out after ${Math.round(options.timeoutMs / 100) / 10} s`,
    );
  const coverPath = join(resolve(options.workDir), `cover-${crypto.randomUUID().slice(0, 8)}.jpg`);
  const normalize = plan.method === "encode" ? plan.normalize : undefined;
  const progress = new JobProgress(plan.duration, normalize ? 2 : 1, options.onProgress);
  const check = (run: RunResult) => {
    if (run.timedOut) throw timeoutError();
    // Before the exit code: a broken storage read can end a run "successfully", with its output cut short.
    throwIfSourceReadFailed(input, run.stderr, name);
    if (!run.status.success) {
      const names = { [input]: name, [output]: "output.mp3", [coverPath]: "cover.jpg" };
      throw failure(name, run.status, clean(hideSource(run.stderr, input, name), names), plan);
    }
  };

  try {
    const cover = plan.cover
      ? await makeCover(input, coverPath, plan.cover, { ...context, name, timeoutError })
      : null;
    const coverBytes = cover ? (await Deno.stat(cover)).size : 0;
    const caps = capsOf(plan, options.maxDuration, coverBytes);

    let measured: LoudnessMeasurement | undefined;
    if (normalize) {
      const run = await runFfmpeg(
        measureArgs(input, plan, normalize.target, caps),
        context,
        (u) => progress.update(0, u),
      );
      check(run);
      measured = parseLoudnorm(run.stderr);
      // Silence measures -inf and has nothing to normalise; anything else unreadable must not pass as normalised.
      if (!measured && !/"input_i"\s*:\s*"-inf"/.test(run.stderr)) {
        throw new AppError(
          "conversion_failed",
          `Converting "${name}" failed: its loudness could not be measured`,
        );
      }
    }
    const args = mainArgs(input, output, plan, {
      cover,
      caps,
      loudness: normalize && measured ? { target: normalize.target, measured } : undefined,
    });
    check(await runFfmpeg(args, context, (u) => progress.update(normalize ? 1 : 0, u)));
    if (plan.tags.comment) await addComment(output, plan.tags.comment);
    progress.done();
  } catch (error) {
    await Deno.remove(output).catch(() => {});
    throw error;
  } finally {
    await Deno.remove(coverPath).catch(() => {});
  }
}

/**
 * The caps of the runs: -t is the plan's cut where it has one, else the expected duration with 2% and 1 s of
 * room; -fs allows half as much again as the expected bytes (at 320 kbit/s for VBR and copies), 1 MiB and the
 * cover.
 */
export function capsOf(plan: ConversionPlan, maxDuration: number | undefined, coverBytes: number): Caps {
  const limit = maxDuration ?? DEFAULT_MAX_DURATION;
  const expected = plan.duration ?? Math.min(plan.cut ?? limit, limit);
  const seconds = plan.cut !== undefined ? Math.min(plan.cut, expected * 1.02 + 1) : expected * 1.02 + 1;
  const kbps = plan.encoder?.mode === "cbr" ? plan.encoder.bitrate : MAX_MP3_KBPS;
  const bytes = Math.ceil(((expected * kbps * 1000) / 8) * 1.5) + 1024 * 1024 + coverBytes;
  return { seconds, bytes };
}

/** The common head of every run: quiet, no stdin, progress on stdout. */
function head(verbosity: "error" | "info"): string[] {
  return [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-v",
    verbosity,
    "-progress",
    "pipe:1",
    "-stats_period",
    "0.25",
  ];
}

/**
 * The arguments of loudnorm's measuring pass: the same stream, trim and downmix as the output, no output file
 * (`-f null`); at info level, where loudnorm prints its JSON.
 */
export function measureArgs(input: string, plan: ConversionPlan, target: number, caps: Caps): string[] {
  return [
    ...head("info"),
    ...inputArgs({ path: input, demuxers: ALLOWED_DEMUXERS, decoders: AUDIO_DECODERS, seek: plan.start }),
    "-map",
    `0:${plan.audioStream}`,
    "-vn",
    "-sn",
    "-dn",
    "-map_chapters",
    "-1",
    "-af",
    measureFilter(plan, target),
    "-t",
    seconds(caps.seconds),
    "-f",
    "null",
    "-",
  ];
}

/**
 * The arguments of the main run: exactly the planned audio stream (copied, or encoded with LAME), the cover file
 * as a second input copied in as the front cover, the tags given one argv entry each, the chapters, the caps.
 */
export function mainArgs(
  input: string,
  output: string,
  plan: ConversionPlan,
  extra: {
    cover: string | null;
    caps: Caps;
    loudness?: { target: number; measured: LoudnessMeasurement };
  },
): string[] {
  const { cover, caps, loudness } = extra;
  const args = [
    ...head("error"),
    ...inputArgs({ path: input, demuxers: ALLOWED_DEMUXERS, decoders: AUDIO_DECODERS, seek: plan.start }),
  ];
  if (cover) {
    // One JPEG made by the cover run, read by the one-picture demuxer; it is copied, never decoded.
    args.push(
      ...inputArgs({ path: cover, demuxers: [COVER_DEMUXER], decoders: ["mjpeg"], format: COVER_DEMUXER }),
    );
  }
  args.push("-map", `0:${plan.audioStream}`);
  // -vn would also drop the cover; without it no video of the input is mapped either, and the cover is copied.
  if (cover) args.push("-map", "1:0");
  else args.push("-vn");
  args.push(
    "-sn",
    "-dn",
    // Not a bare "-map_metadata -1": that also drops the chapters' titles (they become "ch0", "ch1"...).
    "-map_metadata:g",
    "-1",
    "-map_metadata:s",
    "-1",
    "-map_chapters",
    plan.chapters ? "0" : "-1",
  );
  if (plan.chapters) {
    // The chapters keep their times but none of their metadata, except a cleaned title: a source's chapter
    // tags (comments, names, anything) would otherwise go into the MP3 as they are.
    args.push("-map_metadata:c", "-1");
    survivingChapters(plan.chapterList, plan.sourceStart, plan.start ?? 0, caps.seconds).forEach(
      (chapter, i) => {
        if (chapter.title) args.push(`-metadata:c:${i}`, `title=${chapter.title}`);
      },
    );
  }
  if (plan.method === "copy" || !plan.encoder) {
    // -copypriorss 0: the frames before the start go too (a copy otherwise keeps those up to the seek point).
    args.push("-c:a", "copy", ...(plan.start ? ["-copypriorss", "0"] : []));
  } else {
    args.push("-c:a", "libmp3lame");
    if (plan.encoder.mode === "cbr") args.push("-b:a", `${plan.encoder.bitrate}k`);
    else args.push("-q:a", String(plan.encoder.quality));
    if (loudness) args.push("-af", applyFilter(plan, loudness.target, loudness.measured));
    args.push("-ar", String(plan.sampleRate), "-ac", String(plan.channels));
  }
  if (cover) {
    args.push("-c:v", "copy", "-disposition:v:0", "attached_pic", "-metadata:s:v:0", "comment=Cover (front)");
  }
  for (const [key, value] of Object.entries(plan.tags)) {
    // The comment is written afterwards as a real COMM frame (addComment): ffmpeg would make it a TXXX.
    if (key === "comment") continue;
    if (/^[a-z_]+$/.test(key) && value !== "") args.push("-metadata", `${key}=${value}`);
  }
  args.push(
    "-id3v2_version",
    String(plan.id3v2Version),
    "-fs",
    String(caps.bytes),
    "-t",
    seconds(caps.seconds),
    "-f",
    "mp3",
    "-y",
    `file:${output}`,
  );
  return args;
}

/** Turns the progress of each run into the progress of the whole job. */
class JobProgress {
  #reported = 0;
  #speed: number | undefined;
  constructor(
    private readonly duration: number | undefined,
    private readonly runs: number,
    private readonly onProgress?: (progress: TranscodeProgress) => void,
  ) {}

  /** A report of run `run` (0-based; each run processes the whole duration once). */
  update(run: number, update: ProgressUpdate): void {
    const duration = this.duration;
    if (!duration || !(duration > 0)) return;
    const done = Math.min(duration, Math.max(0, update.outTimeSeconds));
    const fraction = Math.min(0.999, (run + done / duration) / this.runs);
    const progress: TranscodeProgress = { fraction };
    if (update.speed !== undefined && update.speed > 0) {
      this.#speed = update.speed;
      progress.speed = update.speed;
      progress.eta = ((this.runs - run) * duration - done) / update.speed;
    }
    this.#report(progress);
  }

  /**
   * The job succeeded. The report keeps ffmpeg's last speed: the worker shows it as the last "converting" step
   * while the MP3 is stored, and a converting job with a progress has a speed like every other.
   */
  done(): void {
    const speed = this.#speed === undefined ? {} : { speed: this.#speed };
    this.#report({ fraction: 1, ...(this.duration ? { eta: 0, ...speed } : {}) });
  }

  #report(progress: TranscodeProgress): void {
    if (!(progress.fraction > this.#reported)) return;
    this.#reported = progress.fraction;
    try {
      this.onProgress?.(progress);
    } catch (error) {
      console.error("transcode: onProgress threw:", error);
    }
  }
}

/** The log with server paths replaced by display names, and without the decoder allowlist's probing noise. */
function clean(log: string, names: Record<string, string>): string {
  let text = withoutProbeNoise(log);
  for (const [path, shown] of Object.entries(names)) {
    text = text.replaceAll(`file:${path}: `, "").replaceAll(path, shown);
  }
  return text;
}

/** Maps a failed ffmpeg run to an AppError from what it wrote to stderr. */
function failure(name: string, status: Deno.CommandStatus, log: string, plan: ConversionPlan): AppError {
  const cause = new Error(log || "(no output)");
  const last = lastMessage(log);
  if (/Format not on whitelist/.test(log)) {
    return new AppError("unsupported_input", `Cannot convert "${name}": its format is not one we accept`, {
      cause,
    });
  }
  if (/Stream map '[^']*' matches no streams|does not contain any stream/.test(log)) {
    return new AppError("no_audio_stream", `Cannot convert "${name}": the file has no audio stream`, {
      cause,
    });
  }
  if (new RegExp(`Error while opening decoder for input stream #0:${plan.audioStream}\\b`).test(log)) {
    return new AppError(
      "unsupported_input",
      `Cannot convert "${name}": its audio is in a codec we do not decode`,
      { cause },
    );
  }
  if (
    /Invalid data found when processing input|moov atom not found|Error while decoding|corrupt/i.test(log)
  ) {
    return new AppError("corrupt_input", `Cannot convert "${name}": the file is damaged (${last})`, {
      cause,
    });
  }
  const how = status.signal ? `was killed by ${status.signal}` : `exited with code ${status.code}`;
  return new AppError("conversion_failed", `Converting "${name}" failed: ffmpeg ${how} (${last})`, { cause });
}
