/**
 * Measures an audio stream's bitrate where the container does not state it (WebM and MKV rarely do), so that
 * "auto" can keep the MP3 at or below the source's bitrate instead of guessing. One hardened ffmpeg run copies the
 * stream's packets to nowhere (no decoding) over at most the first minutes, and ffmpeg's summary gives their size.
 */
import { AUDIO_DECODERS, inputArgs, type RunContext, runFfmpeg } from "./ffmpeg_run.ts";
import { ALLOWED_DEMUXERS } from "./probe.ts";
import { throwIfSourceReadFailed } from "./source.ts";

/** How much of the input is read, in seconds: the average of the first minutes stands for the whole. */
const SAMPLE_SECONDS = 120;

/** The bitrate of stream `streamIndex` of `inputPath` in bit/s, or undefined when it cannot be measured. */
export async function measureAudioBitrate(
  inputPath: string,
  streamIndex: number,
  context: RunContext,
): Promise<number | undefined> {
  let measured = 0;
  const run = await runFfmpeg(
    [
      "-hide_banner",
      "-nostdin",
      "-nostats",
      "-v",
      "info",
      "-progress",
      "pipe:1",
      ...inputArgs({ path: inputPath, demuxers: ALLOWED_DEMUXERS, decoders: AUDIO_DECODERS }),
      "-map",
      `0:${streamIndex}`,
      "-c",
      "copy",
      "-t",
      String(SAMPLE_SECONDS),
      "-f",
      "null",
      "-",
    ],
    context,
    (update) => measured = update.outTimeSeconds,
  );
  // A broken storage read would measure part of the stream: a passing failure, not a figure.
  throwIfSourceReadFailed(inputPath, run.stderr, "the video");
  if (!run.status.success || measured <= 0) return undefined;
  return bitrateFromSummary(run.stderr, measured);
}

/**
 * The bitrate in bit/s from ffmpeg's closing summary ("video:0kB audio:192kB …") over `seconds`; the size is
 * rounded to the kB there, so half a kB is taken off to never overstate it.
 */
export function bitrateFromSummary(stderr: string, seconds: number): number | undefined {
  const match = [...stderr.matchAll(/\baudio:(\d+)kB\b/g)].at(-1);
  if (!match || !(seconds > 0)) return undefined;
  const bytes = Math.max(0, Number(match[1]) - 0.5) * 1024;
  return Math.round((bytes * 8) / seconds);
}
