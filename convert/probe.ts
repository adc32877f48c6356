/**
 * Inspects an untrusted input with a hardened ffprobe before any conversion: only its own file or storage URL (see
 * source.ts), only the container
 * demuxers we accept, a clean environment, capped output and a wall-clock timeout. Rejects by format, stream count,
 * missing audio and duration, with an {@linkcode AppError} whose message says what failed and why.
 */
import { basename } from "node:path";
import { AppError } from "@vmp3/shared";
import { cpuSecondsFor, spawnTool, type ToolLimits } from "./ffmpeg_check.ts";
import {
  hideSource,
  openSource,
  resolveSource,
  sourceOptions,
  type SourceReader,
  throwIfSourceReadFailed,
} from "./source.ts";

/**
 * The container demuxers an input may use (ffmpeg names; the mov demuxer is "mov,mp4,m4a,3gp,3g2,mj2" and matches
 * by any of them). Never playlists or file lists (hls, concat), image sequences, devices or lavfi.
 */
export const ALLOWED_DEMUXERS: readonly string[] = [
  "mov",
  "mp4",
  "m4a",
  "3gp",
  "matroska",
  "webm",
  "avi",
  "mpegts",
  "flv",
  "mp3",
  "ogg",
  "wav",
  "asf",
  "mpeg",
  "aac",
  "flac",
];

/** One audio stream of an input. */
export interface AudioStreamInfo {
  /** The stream's absolute index in the file (what `-map 0:N` takes). */
  index: number;
  /** ffprobe's codec name, e.g. "aac", "mp3", "flac". */
  codec: string;
  /** Number of channels (0 where the container does not say). */
  channels: number;
  /** Sample rate in Hz (0 where the container does not say). */
  sampleRate: number;
  /** Bitrate in bit/s, where the container states it. */
  bitrate?: number;
  /** ISO 639-2 language code from the stream's tags ("und" is left out), lower case. */
  language?: string;
  /** Whether the stream has the default disposition. */
  isDefault: boolean;
  /** The stream's own title/artist/album/date tags (Ogg and Opus files keep them here, not in the container). */
  tags: SourceTags;
}

/** The descriptive tags of a source that a conversion may carry over. */
export interface SourceTags {
  title?: string;
  artist?: string;
  album?: string;
  date?: string;
}

/** What {@linkcode probeInput} learned about an accepted input. */
export interface ProbeResult {
  /** ffprobe's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm". */
  format: string;
  /** Duration in seconds; absent where the container does not say (a WebM/MKV written as a stream). */
  duration?: number;
  /** Bitrate of the whole file in bit/s, where ffprobe knows it. */
  bitrate?: number;
  /** Number of streams of every kind. */
  streams: number;
  /** Number of audio streams. */
  audioStreams: number;
  /** Codec of the first audio stream, e.g. "aac". */
  audioCodec: string;
  /** Bitrate of the first audio stream in bit/s, where the container states it. */
  audioBitrate?: number;
  /** Channels of the first audio stream, where known. */
  channels?: number;
  /** Sample rate of the first audio stream in Hz, where known. */
  sampleRate?: number;
  /** Every audio stream, in file order. */
  audio: AudioStreamInfo[];
  /** Whether the file has a real video stream (not an attached picture such as cover art). */
  hasVideo: boolean;
  /** Duration of the first real video stream in seconds, where known. */
  videoDuration?: number;
  /** Absolute index of the first attached picture (cover art), if any. */
  attachedPicture?: number;
  /** The container's title/artist/album/date tags. */
  tags: SourceTags;
  /** Number of chapters. */
  chapters: number;
  /** The chapters, in seconds, their titles cleaned like tags (no other chapter metadata is kept). */
  chapterList: ChapterInfo[];
  /** Where the file's timeline starts, in seconds (0 for most; chapter times count from the same origin). */
  startTime: number;
}

/** One chapter of a source. */
export interface ChapterInfo {
  start: number;
  end: number;
  title?: string;
}

/** Options of {@linkcode probeInput}. */
export interface ProbeOptions {
  /** The ffprobe binary (default "ffprobe"). */
  ffprobePath?: string;
  /** The longest accepted input, in seconds. */
  maxDuration: number;
  /** The most streams an input may have. */
  maxStreams: number;
  /** Stops the probe; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Wall-clock cap of the ffprobe run (default 30 s). */
  timeoutMs?: number;
  /** The name shown in error messages (default: the file's base name). Never a server path. */
  name?: string;
  /**
   * util-linux `setpriv`, used to give ffprobe a parent-death signal so it dies with this process (default
   * "setpriv" on Linux; null runs ffprobe directly). Needs --allow-run for it.
   */
  setprivPath?: string | null;
  /**
   * The resource limits of the ffprobe run (see {@linkcode spawnTool}); by default the launcher's, with a CPU-time
   * cap of twice the timeout.
   */
  limits?: Partial<ToolLimits>;
}

/** Demuxers that read other files named inside the input. */
const PLAYLIST_DEMUXERS = new Set(["hls", "concat", "dash", "webm_dash_manifest", "image2", "ffmetadata"]);

/** Container signatures, to tell a damaged file of a known format from a file that is no media at all. */
const SIGNATURES: { name: string; test: (b: Uint8Array) => boolean }[] = [
  {
    name: "an MP4/MOV",
    test: (b) => ["ftyp", "moov", "mdat", "free", "wide", "skip"].includes(ascii(b, 4, 8)),
  },
  { name: "a Matroska/WebM", test: (b) => b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3 },
  { name: "an AVI", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 11) === "AVI" },
  { name: "a WAV", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WAVE" },
  { name: "an Ogg", test: (b) => ascii(b, 0, 4) === "OggS" },
  { name: "a FLAC", test: (b) => ascii(b, 0, 4) === "fLaC" },
  { name: "an FLV", test: (b) => ascii(b, 0, 3) === "FLV" },
  { name: "an MP3", test: (b) => ascii(b, 0, 3) === "ID3" },
  { name: "an ASF/WMV", test: (b) => b[0] === 0x30 && b[1] === 0x26 && b[2] === 0xb2 && b[3] === 0x75 },
  { name: "an MPEG program stream", test: (b) => b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0xba },
  { name: "an MPEG transport stream", test: (b) => b.length > 376 && b[0] === 0x47 && b[188] === 0x47 },
];

const STDOUT_CAP = 1024 * 1024;

/** What ffprobe prints when it cannot run at all or runs out of memory (its resource limits), whatever the file. */
const TOOL_FAILURE = /error while loading shared libraries|Cannot allocate memory|out of memory/i;

/** The tags a conversion may carry over, and the stream's language. */
const TAG_KEYS = ["title", "artist", "album", "date"] as const;

/** What ffprobe describes: only what the plan needs, so that the JSON stays small. */
const SHOW_ENTRIES = [
  "format=format_name,duration,nb_streams,bit_rate,start_time",
  `format_tags=${TAG_KEYS.join(",")}`,
  "stream=index,codec_type,codec_name,duration,bit_rate,sample_rate,channels",
  `stream_tags=language,${TAG_KEYS.join(",")}`,
  "stream_disposition=default,attached_pic",
  "chapter=id,start_time,end_time",
  "chapter_tags=title",
].join(":");

/** The longest tag value carried over from a source; longer ones are cut. */
const TAG_MAX = 1024;
const STDERR_CAP = 64 * 1024;

/**
 * Probes `path` with a hardened ffprobe and checks it against the limits. Throws {@linkcode AppError}:
 * unsupported_input (not media, or a format we do not accept such as a playlist), corrupt_input (a known
 * format, damaged), no_audio_stream, too_many_streams, input_too_long; conversion_failed when ffprobe times out,
 * is killed (a resource limit, a crash) or cannot run.
 */
export async function probeInput(path: string, options: ProbeOptions): Promise<ProbeResult> {
  const abs = resolveSource(path);
  const name = options.name ?? basename(abs.split("?")[0]);
  const cannot = (code: ConstructorParameters<typeof AppError>[0], why: string, cause?: unknown) =>
    new AppError(code, `Cannot convert "${name}": ${why}`, cause === undefined ? undefined : { cause });

  await using reader = await openSource(abs, { signal: options.signal });
  const head = await reader.readAt(0, 512);
  if (head.length === 0) throw cannot("unsupported_input", "the file is empty");

  const source = sourceOptions(abs);
  const run = await runFfprobe(options, [
    "-hide_banner",
    "-v",
    "error",
    ...source.options,
    "-format_whitelist",
    ALLOWED_DEMUXERS.join(","),
    "-print_format",
    "json",
    "-show_entries",
    SHOW_ENTRIES,
    source.input,
  ]);
  // A broken storage read is the store's failure, not the file's, whatever the exit code.
  throwIfSourceReadFailed(abs, run.stderr, name);
  const stderr = hideSource(run.stderr, abs, name).replaceAll(abs, name);

  if (run.timedOut) {
    throw cannot(
      "conversion_failed",
      `inspecting the file took longer than ${run.timeoutMs / 1000} s`,
      stderr,
    );
  }
  // Before the exit code: an overflow kills ffprobe, and that kill is not what is wrong with the file.
  if (run.overflow) {
    throw cannot("unsupported_input", "ffprobe's description of the file is too large", stderr);
  }
  if (run.code !== 0 && (run.signal !== null || TOOL_FAILURE.test(stderr))) {
    // Killed (a resource limit, a crash) or unable to start or allocate: that says nothing about the file.
    const how = run.signal ? `was killed by ${run.signal}` : `exited with code ${run.code}`;
    throw cannot("conversion_failed", `ffprobe could not run: it ${how}${reason(stderr, true)}`, stderr);
  }
  if (run.code !== 0) {
    const notAllowed = /\[([\w,]+) @ [^\]]*\] Format not on whitelist/.exec(stderr);
    if (notAllowed) throw cannot("unsupported_input", formatNotAccepted(notAllowed[1]), stderr);
    const known = SIGNATURES.find((s) => s.test(head));
    if (known) {
      throw cannot(
        "corrupt_input",
        `the file looks like ${known.name} file but is damaged or incomplete${reason(stderr)}`,
        stderr,
      );
    }
    throw cannot("unsupported_input", "the file is not a video or audio format we accept", stderr);
  }
  let json: FfprobeJson;
  try {
    json = JSON.parse(run.stdout) as FfprobeJson;
  } catch (error) {
    throw cannot("corrupt_input", "ffprobe could not describe the file", error);
  }
  const format = json.format?.format_name ?? "";
  const demuxers = format.split(",");
  if (!demuxers.some((d) => ALLOWED_DEMUXERS.includes(d))) {
    throw cannot("unsupported_input", formatNotAccepted(format));
  }
  if (demuxers.includes("mov") && await refersToOtherFiles(reader)) {
    // ffmpeg skips such a track (it follows it only with -enable_drefs 1), which would make an empty MP3.
    throw cannot(
      "unsupported_input",
      "a track of it is a reference to data in another file, which is never opened; upload the media itself",
    );
  }

  const streamList = json.streams ?? [];
  const streams = Math.max(Number(json.format?.nb_streams) || 0, streamList.length);
  if (streams > options.maxStreams) {
    throw cannot("too_many_streams", `it has ${streams} streams; the limit is ${options.maxStreams}`);
  }

  const audio = streamList.filter((s) => s.codec_type === "audio");
  if (audio.length === 0) throw cannot("no_audio_stream", "the file has no audio stream");
  const audioCodec = audio[0].codec_name;
  if (!audioCodec || audioCodec === "unknown") {
    throw cannot("unsupported_input", "its audio is in a codec we cannot decode");
  }

  // A WebM or MKV written as a stream (MediaRecorder, live recorders) states no duration: that is not damage.
  // The conversion is then capped at maxDuration instead.
  const duration = durationOf(json);
  if (duration !== undefined && duration > options.maxDuration) {
    throw cannot(
      "input_too_long",
      `it lasts ${clock(duration)}, longer than the limit of ${clock(options.maxDuration)}`,
    );
  }

  const audioInfo = audio.map(audioStreamInfo);
  const video = streamList.filter((s) => s.codec_type === "video");
  const realVideo = video.find((s) => s.disposition?.attached_pic !== 1);
  const picture = video.find((s) => s.disposition?.attached_pic === 1);
  const videoDuration = positive(realVideo?.duration);
  const bitrate = positive(json.format?.bit_rate);
  const first = audioInfo[0];
  return {
    format,
    ...(duration === undefined ? {} : { duration }),
    ...(bitrate === undefined ? {} : { bitrate }),
    streams,
    audioStreams: audio.length,
    audioCodec,
    ...(first.bitrate === undefined ? {} : { audioBitrate: first.bitrate }),
    ...(first.channels > 0 ? { channels: first.channels } : {}),
    ...(first.sampleRate > 0 ? { sampleRate: first.sampleRate } : {}),
    audio: audioInfo,
    hasVideo: realVideo !== undefined,
    ...(videoDuration === undefined ? {} : { videoDuration }),
    ...(picture?.index === undefined ? {} : { attachedPicture: picture.index }),
    tags: tagsOf(json.format?.tags),
    chapters: json.chapters?.length ?? 0,
    chapterList: (json.chapters ?? []).map((chapter) => {
      const title = chapter.tags?.title && withoutControls(chapter.tags.title).trim().slice(0, TAG_MAX);
      return {
        start: Number(chapter.start_time) || 0,
        end: Number(chapter.end_time) || 0,
        ...(title ? { title } : {}),
      };
    }),
    startTime: Number(json.format?.start_time) || 0,
  };
}

type FfprobeStream = NonNullable<FfprobeJson["streams"]>[number];

function audioStreamInfo(stream: FfprobeStream, order: number): AudioStreamInfo {
  const bitrate = positive(stream.bit_rate);
  const language = lowerKeys(stream.tags).language?.trim().toLowerCase();
  return {
    index: stream.index ?? order,
    codec: stream.codec_name ?? "unknown",
    channels: positive(stream.channels) ?? 0,
    sampleRate: positive(stream.sample_rate) ?? 0,
    ...(bitrate === undefined ? {} : { bitrate }),
    ...(language && /^[a-z]{3}$/.test(language) && language !== "und" ? { language } : {}),
    isDefault: stream.disposition?.default === 1,
    tags: tagsOf(stream.tags),
  };
}

/** The carried-over tags of a tag object whose keys may be in any case (Vorbis comments are upper case). */
function tagsOf(raw: Record<string, string> | undefined): SourceTags {
  const tags = lowerKeys(raw);
  const out: SourceTags = {};
  for (const key of TAG_KEYS) {
    // Control characters (other than tab and newline) are dropped: a tag is display text only.
    const value = tags[key] && withoutControls(tags[key]).trim().slice(0, TAG_MAX);
    if (value) out[key] = value;
  }
  return out;
}

function withoutControls(text: string): string {
  return [...text].filter((c) => {
    const code = c.charCodeAt(0);
    return code === 9 || code === 10 || (code >= 32 && code !== 127);
  }).join("");
}

function lowerKeys(raw: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw ?? {})) {
    if (typeof value === "string") out[key.toLowerCase()] ??= value;
  }
  return out;
}

/** A finite positive number from ffprobe's text or number, else undefined. */
function positive(value: string | number | undefined): number | undefined {
  const n = Number(value);
  return value !== undefined && value !== "" && Number.isFinite(n) && n > 0 ? n : undefined;
}

interface FfprobeJson {
  format?: {
    format_name?: string;
    duration?: string;
    nb_streams?: number;
    bit_rate?: string;
    start_time?: string;
    tags?: Record<string, string>;
  };
  streams?: {
    index?: number;
    codec_type?: string;
    codec_name?: string;
    duration?: string;
    bit_rate?: string;
    sample_rate?: string;
    channels?: number;
    disposition?: { default?: number; attached_pic?: number };
    tags?: Record<string, string>;
  }[];
  chapters?: { start_time?: string; end_time?: string; tags?: Record<string, string> }[];
}

function durationOf(json: FfprobeJson): number | undefined {
  const format = Number(json.format?.duration);
  if (Number.isFinite(format) && format > 0) return format;
  const streams = (json.streams ?? []).map((s) => Number(s.duration)).filter((d) =>
    Number.isFinite(d) && d > 0
  );
  return streams.length > 0 ? Math.max(...streams) : undefined;
}

function formatNotAccepted(demuxer: string): string {
  const names = demuxer.split(",");
  if (names.some((n) => PLAYLIST_DEMUXERS.has(n))) {
    return `it is a playlist or file list (${demuxer}), which can point at other files; ` +
      "only plain video or audio files are accepted";
  }
  return `its format (${demuxer}) is not a video or audio format we accept`;
}

/**
 * The first demuxer message of ffprobe's stderr (e.g. "moov atom not found"), or with `anyLine` its first line,
 * for the error message.
 */
function reason(stderr: string, anyLine = false): string {
  const match = anyLine ? /^\s*(\S.*)$/m.exec(stderr) : /^\[[^\]]+\] (.+)$/m.exec(stderr);
  return match ? ` (${match[1].trim().slice(0, 200)})` : "";
}

function clock(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function ascii(bytes: Uint8Array, start: number, end: number): string {
  return String.fromCharCode(...bytes.subarray(start, end));
}

/** The boxes from the top of an ISO BMFF (MP4, MOV) file down to a track's data references. */
const DREF_PATH = ["moov", "trak", "mdia", "minf", "dinf", "dref"];

/**
 * Whether an MP4/MOV file has a track whose data lives in another file: a data reference (`dref`) entry that is not
 * flagged self-contained, or that carries a Mac alias record (which ffmpeg parses whatever the flag). Reads only
 * box headers on the way, seeking past the rest (the media data), so a large file costs a few reads.
 */
export async function refersToOtherFiles(source: string | SourceReader): Promise<boolean> {
  if (typeof source === "string") {
    await using reader = await openSource(source);
    return await refersToOtherFiles(reader);
  }
  const readAt = (at: number, length: number) => source.readAt(at, length);
  const walk = async (start: number, end: number, depth: number): Promise<boolean> => {
    for (let at = start, boxes = 0; at + 8 <= end && boxes < 100_000; boxes++) {
      const head = await readAt(at, 16);
      if (head.length < 8) return false;
      const view = new DataView(head.buffer, head.byteOffset, head.length);
      let size = view.getUint32(0);
      let headSize = 8;
      if (size === 1 && head.length === 16) [size, headSize] = [Number(view.getBigUint64(8)), 16];
      else if (size === 0) size = end - at;
      if (size < headSize || at + size > end) return false; // damaged: ffprobe has had its say on that
      if (ascii(head, 4, 8) === DREF_PATH[depth]) {
        const found = depth === DREF_PATH.length - 1
          ? size > 1024 * 1024 || externalEntry(await readAt(at + headSize, size - headSize))
          : await walk(at + headSize, at + size, depth + 1);
        if (found) return true;
      }
      at += size;
    }
    return false;
  };
  return await walk(0, source.size, 0);
}

/** Whether a `dref` box's body (after its header) has an entry that is not self-contained or names a file. */
function externalEntry(body: Uint8Array): boolean {
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  if (body.length < 8) return false;
  const count = view.getUint32(4);
  for (let at = 8, i = 0; i < count && at + 12 <= body.length; i++) {
    const size = view.getUint32(at);
    const type = ascii(body, at + 4, at + 8);
    const selfContained = (view.getUint32(at + 8) & 1) === 1;
    if (!selfContained || (type === "alis" && size > 12)) return true;
    if (size < 12) return false;
    at += size;
  }
  return false;
}

interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  overflow: boolean;
  timedOut: boolean;
  timeoutMs: number;
}

/** Runs ffprobe through {@linkcode spawnTool}, with capped output and a wall-clock timeout. */
async function runFfprobe(options: ProbeOptions, args: string[]): Promise<RunResult> {
  options.signal?.throwIfAborted();
  const timeoutMs = options.timeoutMs ?? 30_000;
  const { child, kill, assertLaunched } = spawnTool(options.ffprobePath ?? "ffprobe", args, {
    tool: "ffprobe",
    setprivPath: options.setprivPath,
    limits: { cpuSeconds: cpuSecondsFor(timeoutMs), ...options.limits },
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, timeoutMs);
  options.signal?.addEventListener("abort", kill, { once: true });
  try {
    const [out, err, status] = await Promise.all([
      readCapped(child.stdout, STDOUT_CAP, kill),
      readCapped(child.stderr, STDERR_CAP),
      child.status,
    ]);
    options.signal?.throwIfAborted();
    assertLaunched(status, err.text);
    return {
      code: status.code,
      signal: status.signal,
      stdout: out.text,
      stderr: err.text,
      overflow: out.overflow,
      timedOut,
      timeoutMs,
    };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", kill);
  }
}

/** Reads a stream to its end, keeping the first `cap` bytes; calls `onOverflow` once past the cap. */
async function readCapped(
  stream: ReadableStream<Uint8Array>,
  cap: number,
  onOverflow?: () => void,
): Promise<{ text: string; overflow: boolean }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let overflow = false;
  for await (const chunk of stream) {
    if (size + chunk.length > cap) {
      if (!overflow) onOverflow?.();
      overflow = true;
      chunks.push(chunk.subarray(0, Math.max(0, cap - size)));
      size = cap;
      continue;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return { text: new TextDecoder().decode(all), overflow };
}
