/**
 * The front cover of an MP3: a small hardened ffmpeg run that writes one JPEG, scaled to fit 1000x1000, into the
 * job's work folder, from the source's attached picture or from a frame of its video. The main run then copies
 * that file in, so whatever the source held, the MP3 gets one bounded picture in one known format.
 */
import { AppError } from "@vmp3/shared";
import type { ConversionPlan } from "./plan.ts";
import { ALLOWED_DEMUXERS } from "./probe.ts";
import {
  inputArgs,
  lastMessage,
  PICTURE_DECODERS,
  type RunContext,
  runFfmpeg,
  seconds,
  VIDEO_DECODERS,
  withoutProbeNoise,
} from "./ffmpeg_run.ts";
import { hideSource, throwIfSourceReadFailed } from "./source.ts";

/** The largest cover, in pixels each way. */
export const COVER_MAX_SIZE = 1000;
/** The most bytes a cover file may have (a 1000x1000 JPEG at this quality is well under it). */
export const COVER_MAX_BYTES = 2 * 1024 * 1024;
/** The demuxer the main run reads the cover with: one JPEG, nothing else. */
export const COVER_DEMUXER = "jpeg_pipe";

/** What the cover run needs besides the shared run context. */
export interface CoverOptions extends RunContext {
  /** The name shown in error messages. */
  name: string;
  /** Called when the job's time is up, to make the job's timeout error. */
  timeoutError: () => Error;
}

/**
 * The ffmpeg arguments that write the cover of `cover` from `input` to `output` as one JPEG. Only the picture
 * (or video) stream is mapped; only picture (or common video) decoders may run.
 */
export function coverArgs(
  input: string,
  output: string,
  cover: NonNullable<ConversionPlan["cover"]>,
  options: { seek?: number; keepLast?: boolean } = {},
): string[] {
  const frame = cover.from === "frame";
  const fit = `'min(${COVER_MAX_SIZE},iw)':'min(${COVER_MAX_SIZE},ih)'`;
  return [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-v",
    "error",
    // Decoders refuse pictures over 64 megapixels: a hostile header cannot make one allocate gigabytes.
    "-max_pixels",
    String(8192 * 8192),
    ...inputArgs({
      path: input,
      demuxers: ALLOWED_DEMUXERS,
      decoders: frame ? VIDEO_DECODERS : PICTURE_DECODERS,
      seek: frame ? (options.seek ?? cover.at) : undefined,
    }),
    "-map",
    frame ? "0:V:0" : `0:${cover.index}`,
    "-an",
    "-sn",
    "-dn",
    "-map_metadata",
    "-1",
    "-map_chapters",
    "-1",
    "-vf",
    `scale=${fit}:force_original_aspect_ratio=decrease,format=yuvj420p`,
    "-c:v",
    "mjpeg",
    "-q:v",
    "3",
    // keepLast: every frame of the (at most 3 s) span overwrites the file, so the last one stays.
    ...(options.keepLast ? ["-t", "3", "-update", "1", "-f", "image2"] : ["-frames:v", "1", "-f", "mjpeg"]),
    "-fs",
    String(COVER_MAX_BYTES),
    "-y",
    `file:${output}`,
  ];
}

/**
 * Writes the cover the plan asks for to `output` and returns `output`, or null where there is none: a source's
 * own picture that cannot be read is skipped (the MP3 is made without it). A frame that cannot be taken fails
 * with `invalid_option` naming "cover".
 */
export async function makeCover(
  input: string,
  output: string,
  cover: NonNullable<ConversionPlan["cover"]>,
  options: CoverOptions,
): Promise<string | null> {
  const run = await runFfmpeg(coverArgs(input, output, cover), options);
  if (run.timedOut) throw options.timeoutError();
  throwIfSourceReadFailed(input, run.stderr, options.name);
  let size = await sizeOf(output);
  if (run.status.success && size === 0 && cover.from === "frame") {
    // Past the last frame (a time within the last frame's span of the end): take the last frame before it.
    const again = await runFfmpeg(
      coverArgs(input, output, cover, { seek: Math.max(0, cover.at - 2), keepLast: true }),
      options,
    );
    if (again.timedOut) throw options.timeoutError();
    throwIfSourceReadFailed(input, again.stderr, options.name);
    size = await sizeOf(output);
    if (!again.status.success) size = 0;
  }
  if (run.status.success && size > 0) return output;
  await Deno.remove(output).catch(() => {});
  const log = withoutProbeNoise(hideSource(run.stderr, input, options.name))
    .replaceAll(input, options.name)
    .replaceAll(output, "cover.jpg");
  if (run.status.signal || /Cannot allocate memory|error while loading shared libraries/.test(run.stderr)) {
    // Killed, or out of memory (a resource limit, say): ffmpeg's failure, not a picture to do without.
    throw new AppError(
      "conversion_failed",
      `Converting "${options.name}" failed: making its cover, ffmpeg ${
        run.status.signal ? `was killed by ${run.status.signal}` : "ran out of memory"
      }`,
    );
  }
  if (cover.from === "stream") return null; // a picture ffmpeg cannot read: the MP3 goes without it
  if (run.status.success) {
    throw new AppError(
      "invalid_option",
      `Option "cover" cannot be met: the video has no frame at ${seconds(cover.at)} s`,
    );
  }
  const why = /Error while opening decoder/.test(log)
    ? "its codec is not one we take frames from"
    : `ffmpeg could not read it (${lastMessage(log)})`;
  throw new AppError(
    "invalid_option",
    `Option "cover" cannot be met: no frame of the video at ${seconds(cover.at)} s could be taken: ${why}`,
    { cause: new Error(log || "(no output)") },
  );
}

async function sizeOf(path: string): Promise<number> {
  return await Deno.stat(path).then((s) => s.size, () => 0);
}
