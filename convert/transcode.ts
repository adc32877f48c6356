/**
 * Turns the first audio stream of an untrusted input into a CBR MP3 with a hardened ffmpeg: local files only, the
 * same demuxer allowlist as the probe, no video/subtitle/data decoding, size and time caps, a clean environment,
 * a wall-clock timeout that kills its process group, and a parent-death signal so it never outlives this process.
 */
import { basename, resolve } from "node:path";
import { AppError } from "@vmp3/shared";
import { spawnTool } from "./ffmpeg_check.ts";
import { ALLOWED_DEMUXERS } from "./probe.ts";
import { ProgressParser } from "./progress.ts";

/** Options of {@linkcode transcode}. */
export interface TranscodeOptions {
  /** The ffmpeg binary (default "ffmpeg"). */
  ffmpegPath?: string;
  /** Constant bitrate of the MP3, in kbit/s. */
  bitrate: number;
  /** Duration of the input in seconds, as the probe found it: sets progress and the -t/-fs caps. */
  duration?: number;
  /** Where the duration is unknown, the -t/-fs caps assume this many seconds (and no progress is reported). */
  maxDuration?: number;
  /** Wall-clock cap of the run, in ms; past it ffmpeg is killed and the call fails with conversion_failed. */
  timeoutMs: number;
  /** Stops the conversion (ffmpeg is killed); the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with the done fraction, 0..1, only when it grows; with 1 once ffmpeg has succeeded. */
  onProgress?: (fraction: number) => void;
  /** The name shown in error messages (default: the input's base name). Never a server path. */
  name?: string;
  /**
   * util-linux `setpriv`, used to give ffmpeg a parent-death signal (SIGKILL) so it dies with this process
   * (default "setpriv" on Linux; null runs ffmpeg directly). Needs --allow-run for it.
   */
  setprivPath?: string | null;
}

const STDERR_KEEP = 16 * 1024;

/**
 * Converts the first audio stream of `inputPath` to an MP3 at `outputPath` (overwritten; removed on failure).
 * Throws {@linkcode AppError}: unsupported_input (format not allowed), no_audio_stream, corrupt_input (ffmpeg
 * reports invalid data), conversion_failed (anything else, or the timeout).
 */
export async function transcode(
  inputPath: string,
  outputPath: string,
  options: TranscodeOptions,
): Promise<void> {
  const input = resolve(inputPath);
  const output = resolve(outputPath);
  if (input === output) throw new Error("transcode: the output path must differ from the input path");
  options.signal?.throwIfAborted();
  const name = options.name ?? basename(input);
  const { bitrate, duration } = options;
  const capSeconds = duration ?? options.maxDuration ?? 6 * 3600;
  const maxBytes = Math.ceil(((capSeconds * bitrate * 1000) / 8) * 1.5) + 1024 * 1024;
  const maxSeconds = capSeconds * 1.02 + 1;
  const args = [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-v",
    "error",
    "-progress",
    "pipe:1",
    "-stats_period",
    "0.25",
    // Input options: only the local file protocol, only the accepted container demuxers.
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    ALLOWED_DEMUXERS.join(","),
    "-i",
    `file:${input}`,
    // Only the first audio stream: no video, subtitle or data decoder ever runs.
    "-map",
    "0:a:0",
    "-vn",
    "-sn",
    "-dn",
    "-c:a",
    "libmp3lame",
    "-b:a",
    `${bitrate}k`,
    "-fs",
    String(maxBytes),
    "-t",
    maxSeconds.toFixed(3),
    "-f",
    "mp3",
    "-y",
    `file:${output}`,
  ];

  const { child, kill, assertLaunched } = spawnTool(options.ffmpegPath ?? "ffmpeg", args, {
    tool: "ffmpeg",
    setprivPath: options.setprivPath,
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, options.timeoutMs);
  options.signal?.addEventListener("abort", kill, { once: true });

  let reported = 0;
  const report = (fraction: number) => {
    const clamped = Math.min(1, Math.max(0, fraction));
    if (clamped <= reported) return;
    reported = clamped;
    try {
      options.onProgress?.(clamped);
    } catch (error) {
      console.error("transcode: onProgress threw:", error);
    }
  };

  try {
    const [, stderr, status] = await Promise.all([
      readProgress(child.stdout, (seconds) => report(duration ? seconds / duration : 0)),
      readTail(child.stderr, STDERR_KEEP),
      child.status,
    ]);
    const log = stderr.replaceAll(`file:${input}: `, "").replaceAll(input, name).replaceAll(
      output,
      "output.mp3",
    );
    options.signal?.throwIfAborted();
    if (timedOut) {
      throw new AppError(
        "conversion_failed",
        `Converting "${name}" timed out after ${Math.round(options.timeoutMs / 100) / 10} s`,
      );
    }
    assertLaunched(status, stderr);
    if (!status.success) throw failure(name, status, log);
    report(1);
  } catch (error) {
    await Deno.remove(output).catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", kill);
  }
}

/** Maps a failed ffmpeg run to an AppError from what it wrote to stderr. */
function failure(name: string, status: Deno.CommandStatus, log: string): AppError {
  const cause = new Error(log || "(no output)");
  const last = lastMessage(log);
  if (/Format not on whitelist/.test(log)) {
    return new AppError("unsupported_input", `Cannot convert "${name}": its format is not one we accept`, {
      cause,
    });
  }
  if (/Stream map '0:a:0' matches no streams|does not contain any stream/.test(log)) {
    return new AppError("no_audio_stream", `Cannot convert "${name}": the file has no audio stream`, {
      cause,
    });
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

/** The last non-empty line of ffmpeg's log, without its "[demuxer @ 0x...]" prefix, cut to 200 characters. */
function lastMessage(log: string): string {
  const lines = log.split("\n").map((l) => l.trim()).filter(Boolean);
  const line = lines.at(-1) ?? "no error message";
  return line.replace(/^\[[^\]]*\]\s*/, "").slice(0, 200);
}

async function readProgress(
  stream: ReadableStream<Uint8Array>,
  onUpdate: (seconds: number) => void,
): Promise<void> {
  const parser = new ProgressParser();
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    for (const u of parser.push(decoder.decode(chunk, { stream: true }))) onUpdate(u.outTimeSeconds);
  }
  for (const u of parser.flush()) onUpdate(u.outTimeSeconds);
}

/** Reads a stream to its end, keeping its last `keep` bytes as text. */
async function readTail(stream: ReadableStream<Uint8Array>, keep: number): Promise<string> {
  let tail = new Uint8Array(0);
  for await (const chunk of stream) {
    const joined = new Uint8Array(Math.min(keep, tail.length + chunk.length));
    const fromChunk = Math.min(chunk.length, joined.length);
    const fromTail = joined.length - fromChunk;
    joined.set(tail.subarray(tail.length - fromTail), 0);
    joined.set(chunk.subarray(chunk.length - fromChunk), fromTail);
    tail = joined;
  }
  return new TextDecoder().decode(tail);
}
