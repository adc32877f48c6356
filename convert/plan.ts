/**
 * Decides what one conversion does, from what the probe found and the options the client gave: which audio
 * stream, copy or encode (and how), sample rate, channels, trim, loudness, tags, cover and chapters. Pure: no I/O,
 * so every default can be tested without ffmpeg. Impossible requests throw `invalid_option` naming the option.
 */
import {
  AppError,
  type ConversionOptions,
  DEFAULT_LOUDNESS,
  maxBitrateAt,
  MP3_BITRATES,
  MP3_SAMPLE_RATES,
} from "@vmp3/shared";
import type { AudioStreamInfo, ChapterInfo, ProbeResult } from "./probe.ts";

/** Everything {@linkcode transcode} needs to know about one conversion. */
export interface ConversionPlan {
  /** "copy": the source's MP3 frames go out as they are; "encode": decoded and encoded with LAME. */
  method: "copy" | "encode";
  /** Absolute index of the audio stream to convert. */
  audioStream: number;
  /** Where the output starts in the source, in seconds (absent: at the beginning). */
  start?: number;
  /** How long the output is cut to (from the `end` or `duration` option), in seconds. */
  cut?: number;
  /** Expected duration of the output in seconds, if known: the trimmed length. Sets progress and the caps. */
  duration?: number;
  /** How LAME encodes; absent when copying. */
  encoder?: { mode: "cbr"; bitrate: number } | { mode: "vbr"; quality: number };
  /** Sample rate of the output, in Hz. */
  sampleRate: number;
  /** Channels of the output; more than two in the source are downmixed with ffmpeg's standard matrix. */
  channels: 1 | 2;
  /** Two-pass EBU R128 loudness normalisation to `target` LUFS. */
  normalize?: { target: number };
  /** The output's tags, by ffmpeg metadata key (title, artist, album, date, genre, track, comment). */
  tags: Record<string, string>;
  /** ID3v2 version of the output's tags. */
  id3v2Version: 3 | 4;
  /** The front cover: the source's attached picture, a frame of its video at `at` seconds, or none. */
  cover: { from: "stream"; index: number } | { from: "frame"; at: number } | null;
  /** Whether the source's chapters become ID3 chapters. */
  chapters: boolean;
  /**
   * The source's chapters (absolute times, seconds) and their cleaned titles, which are all the output's chapters
   * carry: nothing else of their metadata. ffmpeg drops and shifts them for a trim (see `survivingChapters`).
   */
  chapterList: ChapterInfo[];
  /** Where the source's timeline starts, in seconds. */
  sourceStart: number;
}

/** Codecs whose bitrate says nothing about their quality: they are encoded as VBR V2 by default. */
const LOSSLESS = /^(flac|alac|ape|tta|wavpack|mlp|truehd|wmalossless|tak|shorten|als|pcm_.*|dsd_.*)$/;

/** The VBR quality of "auto" where the source's bitrate is high or unknown. */
const AUTO_VBR_QUALITY = 2;
/** The highest bitrate "auto" chooses, in kbit/s. */
const AUTO_MAX_KBPS = 192;
/** The bitrate "auto" assumes for a lossy source whose bitrate could not be known, in bit/s. */
const AUTO_UNKNOWN_BPS = 128_000;
/** From this source bitrate (kbit/s) on, "auto" encodes VBR rather than a CBR it could match. */
const AUTO_VBR_FROM_KBPS = 256;
/** More chapters than this are not carried over (an absurd count is a hostile or broken file). */
export const MAX_CHAPTERS = 1000;

/** ISO 639-2 bibliographic codes and their terminology twins, so "fre" finds a stream tagged "fra". */
const LANGUAGE_TWINS: Record<string, string> = {
  alb: "sqi",
  arm: "hye",
  baq: "eus",
  bur: "mya",
  chi: "zho",
  cze: "ces",
  dut: "nld",
  fre: "fra",
  geo: "kat",
  ger: "deu",
  gre: "ell",
  ice: "isl",
  mac: "mkd",
  mao: "mri",
  may: "msa",
  per: "fas",
  rum: "ron",
  slo: "slk",
  tib: "bod",
  wel: "cym",
};

/**
 * Plans the conversion of the probed input with `options` (already validated by `ConversionOptions`); absent
 * options take their defaults from the source. Throws {@linkcode AppError} `invalid_option` for what the file
 * cannot give: an audio track it lacks, a start past its end, a cover frame without video or past its end.
 */
export function planConversion(probe: ProbeResult, options: ConversionOptions): ConversionPlan {
  const stream = chooseStream(probe, options.audio_track);
  const trim = planTrim(probe.duration, options);

  const channels: 1 | 2 = options.channels === 1 || options.channels === 2
    ? options.channels
    : stream.channels === 1
    ? 1
    : 2;
  let sampleRate = options.sample_rate ?? defaultSampleRate(stream.sampleRate);
  if (options.sample_rate === undefined && options.bitrate !== undefined) {
    // An explicit bitrate wins over the default rate: raise the rate until an MP3 can have that bitrate.
    sampleRate = MP3_SAMPLE_RATES.find((r) => r >= sampleRate && maxBitrateAt(r) >= options.bitrate!) ??
      sampleRate;
  }
  const normalize = options.normalize ? { target: options.loudness ?? DEFAULT_LOUDNESS } : undefined;

  const copy = options.bitrate === undefined && options.quality === undefined && stream.codec === "mp3" &&
    normalize === undefined && sampleRate === stream.sampleRate && channels === stream.channels;

  let encoder: ConversionPlan["encoder"];
  if (!copy) {
    if (options.bitrate !== undefined) encoder = { mode: "cbr", bitrate: options.bitrate };
    else if (options.quality !== undefined) encoder = { mode: "vbr", quality: options.quality };
    else encoder = autoEncoder(sourceBitrate(probe, stream), stream.codec, sampleRate);
  }

  return {
    method: copy ? "copy" : "encode",
    audioStream: stream.index,
    ...(trim.start > 0 ? { start: trim.start } : {}),
    ...(trim.cut === undefined ? {} : { cut: trim.cut }),
    ...(trim.duration === undefined ? {} : { duration: trim.duration }),
    ...(encoder ? { encoder } : {}),
    sampleRate,
    channels,
    ...(normalize ? { normalize } : {}),
    tags: planTags(probe, stream, options),
    id3v2Version: options.id3v2_version === 4 ? 4 : 3,
    cover: planCover(probe, options.cover),
    chapters: probe.chapters > 0 && probe.chapters <= MAX_CHAPTERS,
    chapterList: probe.chapters <= MAX_CHAPTERS ? probe.chapterList : [],
    sourceStart: probe.startTime,
  };
}

/**
 * The default sample rate for a source at `source` Hz: the same where an MP3 can have it; 44100 for the 44.1 kHz
 * family above 48 kHz (88200, 176400) and 48000 for any other rate above; else the smallest MP3 rate above it.
 * 44100 when the source does not say.
 */
export function defaultSampleRate(source: number): number {
  if (!(source > 0)) return 44100;
  if ((MP3_SAMPLE_RATES as readonly number[]).includes(source)) return source;
  if (source > 48000) return source % 44100 === 0 ? 44100 : 48000;
  return MP3_SAMPLE_RATES.find((r) => r >= source) ?? 48000;
}

/**
 * The encoder "auto" chooses for a source of `bitrate` bit/s (undefined: unknown): never a higher bitrate than the
 * source's. VBR V2 for lossless codecs and for sources of unknown or at least 256 kbit/s; otherwise CBR at the
 * largest MP3 bitrate not above the source's (at least 32), at most 192 and at most what `sampleRate` allows.
 */
export function autoEncoder(
  bitrate: number | undefined,
  codec: string,
  sampleRate: number,
): NonNullable<ConversionPlan["encoder"]> {
  if (LOSSLESS.test(codec) || (bitrate !== undefined && bitrate >= AUTO_VBR_FROM_KBPS * 1000)) {
    return { mode: "vbr", quality: AUTO_VBR_QUALITY };
  }
  // Unknown only if measuring it failed (see streamToMeasure): a modest CBR rather than a guess above the source.
  const cap = Math.min(AUTO_MAX_KBPS, maxBitrateAt(sampleRate), (bitrate ?? AUTO_UNKNOWN_BPS) / 1000);
  const kbps = MP3_BITRATES.filter((b) => b <= cap).at(-1) ?? MP3_BITRATES[0];
  return { mode: "cbr", bitrate: kbps };
}

/**
 * The audio stream whose bitrate "auto" needs but neither the stream nor the file states (WebM and MKV rarely
 * do), so that the worker measures it (convert/audio_bitrate.ts) before planning; undefined when none is needed.
 */
export function streamToMeasure(probe: ProbeResult, options: ConversionOptions): AudioStreamInfo | undefined {
  if (options.bitrate !== undefined || options.quality !== undefined) return undefined;
  const stream = chooseStream(probe, options.audio_track);
  if (stream.codec === "mp3" || LOSSLESS.test(stream.codec)) return undefined;
  return sourceBitrate(probe, stream) === undefined ? stream : undefined;
}

/**
 * The audio bitrate of `stream` in bit/s: its own where the container states it, else the whole file's where the
 * file holds nothing but this one audio stream (and perhaps a cover picture).
 */
function sourceBitrate(probe: ProbeResult, stream: AudioStreamInfo): number | undefined {
  if (stream.bitrate !== undefined) return stream.bitrate;
  const others = probe.streams - probe.audio.length - (probe.attachedPicture === undefined ? 0 : 1);
  if (probe.audio.length === 1 && others === 0 && !probe.hasVideo) return probe.bitrate;
  return undefined;
}

/** The stream `track` names (an index among the audio streams, or a language), else the default one. */
function chooseStream(probe: ProbeResult, track: string | number | undefined): AudioStreamInfo {
  const audio = probe.audio;
  if (track === undefined) return audio.find((s) => s.isDefault) ?? audio[0];
  const found = typeof track === "number" ? audio[track] : audio.find((s) => sameLanguage(s.language, track));
  if (found) return found;
  const list = audio.map((s, i) => `${i} ${s.language ?? "und"}`).join(", ");
  const what = typeof track === "number"
    ? `no audio track ${track}`
    : `no audio track in language "${track}"`;
  throw new AppError(
    "invalid_option",
    `Option "audio_track" cannot be met: the file has ${what} (tracks: ${list})`,
  );
}

function sameLanguage(tagged: string | undefined, wanted: string): boolean {
  if (tagged === undefined) return false;
  const norm = (code: string) => LANGUAGE_TWINS[code.toLowerCase()] ?? code.toLowerCase();
  return norm(tagged) === norm(wanted);
}

/** The trim: where it starts, what it is cut to, and the expected output duration. */
function planTrim(
  source: number | undefined,
  options: ConversionOptions,
): { start: number; cut?: number; duration?: number } {
  const start = options.start ?? 0;
  if (source !== undefined && start > 0 && start >= source) {
    throw new AppError(
      "invalid_option",
      `Option "start" is past the end: ${seconds(start)} s, but the file lasts ${seconds(source)} s`,
    );
  }
  const cut = options.end !== undefined ? options.end - start : options.duration;
  const rest = source === undefined ? undefined : source - start;
  const duration = cut === undefined ? rest : rest === undefined ? cut : Math.min(cut, rest);
  return {
    start,
    ...(cut === undefined ? {} : { cut }),
    ...(duration === undefined ? {} : { duration }),
  };
}

/** The output's tags: the source's title/artist/album/date, overridden by the client's options. */
function planTags(
  probe: ProbeResult,
  stream: AudioStreamInfo,
  options: ConversionOptions,
): Record<string, string> {
  const tags: Record<string, string> = { ...stream.tags, ...probe.tags };
  const given: Record<string, string | number | undefined> = {
    title: options.title,
    artist: options.artist,
    album: options.album,
    date: options.year,
    genre: options.genre,
    track: options.track,
    comment: options.comment,
  };
  for (const [key, value] of Object.entries(given)) {
    if (value !== undefined) tags[key] = String(value);
  }
  for (const [key, value] of Object.entries(tags)) if (value === "") delete tags[key];
  return tags;
}

function planCover(probe: ProbeResult, cover: ConversionOptions["cover"]): ConversionPlan["cover"] {
  if (cover === undefined || cover === "auto") {
    return probe.attachedPicture === undefined ? null : { from: "stream", index: probe.attachedPicture };
  }
  if (cover === "none") return null;
  if (!probe.hasVideo) {
    throw new AppError(
      "invalid_option",
      `Option "cover" cannot be met: the file has no video to take a frame from (use "auto" or "none")`,
    );
  }
  const end = probe.videoDuration ?? probe.duration;
  if (end !== undefined && cover >= end) {
    throw new AppError(
      "invalid_option",
      `Option "cover" is past the end of the video: ${seconds(cover)} s, but the video lasts ${
        seconds(end)
      } s`,
    );
  }
  return { from: "frame", at: cover };
}

function seconds(value: number): string {
  return String(Math.round(value * 1000) / 1000);
}

/**
 * The chapters ffmpeg keeps for an output that starts `start` s into the source and lasts at most `length` s,
 * in order: its own rule (fftools' copy_chapters), so that the i-th kept chapter is the output's i-th. A chapter
 * is dropped when it ends before the start, and from the first one that begins after the end.
 */
export function survivingChapters(
  chapters: readonly ChapterInfo[],
  sourceStart: number,
  start: number,
  length: number,
): ChapterInfo[] {
  const from = sourceStart + start;
  const kept: ChapterInfo[] = [];
  for (const chapter of chapters) {
    if (chapter.end < from) continue;
    if (chapter.start > from + length) break;
    kept.push(chapter);
  }
  return kept;
}
