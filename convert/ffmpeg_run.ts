/**
 * How every ffmpeg run of a conversion is made and watched: each input opened with only its own protocol (a file, or
 * the storage URL it is read from; see source.ts), a
 * demuxer allowlist and a decoder allowlist; the tool launched by {@linkcode spawnTool} (clean environment, its own
 * process group, parent-death signal, resource limits); stderr drained and capped; `-progress` parsed; a deadline shared by all the
 * runs of one job and an abort signal, both of which kill the process group.
 */
import { cpuSecondsFor, spawnTool, type ToolLimits } from "./ffmpeg_check.ts";
import { ProgressParser, type ProgressUpdate } from "./progress.ts";
import { sourceOptions } from "./source.ts";

/**
 * The audio decoders a conversion may run (ffmpeg decoder names; names a build lacks are harmless). Video
 * decoders are not among them, so no video decoder ever starts on the main input, not even while ffmpeg probes it.
 */
export const AUDIO_DECODERS: readonly string[] = [
  "aac",
  "aac_fixed",
  "aac_latm",
  "libfdk_aac",
  "mp3float",
  "mp3",
  "mp2float",
  "mp2",
  "mp1float",
  "mp1",
  "opus",
  "libopus",
  "vorbis",
  "libvorbis",
  "flac",
  "alac",
  "ac3",
  "ac3_fixed",
  "eac3",
  "dca",
  "truehd",
  "mlp",
  "wmav1",
  "wmav2",
  "wmapro",
  "wmavoice",
  "wmalossless",
  "amrnb",
  "amrwb",
  "libopencore_amrnb",
  "libopencore_amrwb",
  "speex",
  "libspeex",
  "nellymoser",
  "gsm",
  "gsm_ms",
  "qdm2",
  "cook",
  "ape",
  "tta",
  "wavpack",
  "adpcm_ima_wav",
  "adpcm_ima_qt",
  "adpcm_ms",
  "adpcm_swf",
  "g722",
  "g726",
  "g726le",
  "g723_1",
  "g729",
  "s302m",
  "atrac3",
  "atrac3plus",
  "mp3adufloat",
  "mp3adu",
  ...[
    "s16le",
    "s16be",
    "s16le_planar",
    "s24le",
    "s24be",
    "s24le_planar",
    "s32le",
    "s32be",
    "s32le_planar",
    "s64le",
    "s64be",
    "f16le",
    "f24le",
    "f32le",
    "f32be",
    "f64le",
    "f64be",
    "u8",
    "s8",
    "u16le",
    "u16be",
    "u24le",
    "u24be",
    "u32le",
    "u32be",
    "alaw",
    "mulaw",
    "dvd",
    "bluray",
  ].map((format) => `pcm_${format}`),
];

/** The picture decoders that may read a source's attached cover art. */
export const PICTURE_DECODERS: readonly string[] = ["mjpeg", "png", "bmp", "gif", "webp"];

/** The video decoders that may be run to take a cover frame (only when the client asks for one). */
export const VIDEO_DECODERS: readonly string[] = [
  "h264",
  "hevc",
  "vp8",
  "libvpx",
  "vp9",
  "libvpx-vp9",
  "av1",
  "libdav1d",
  "libaom-av1",
  "mpeg4",
  "mpeg2video",
  "mpeg1video",
  "mpegvideo",
  "h263",
  "flv",
  "theora",
  "msmpeg4",
  "msmpeg4v2",
  "wmv1",
  "wmv2",
  "wmv3",
  "vc1",
  "prores",
  "mjpeg",
];

/** How one input is opened. */
export interface InputSpec {
  /**
   * The file (absolute path), given to ffmpeg as `file:<path>` so no name is ever read as a protocol; or the
   * storage URL the input is read from with range requests.
   */
  path: string;
  /** The demuxers it may be read with (`-format_whitelist`). */
  demuxers: readonly string[];
  /** The decoders that may run on it (`-codec_whitelist`), ffmpeg's own probing included. */
  decoders: readonly string[];
  /** A forced demuxer (`-f`), itself subject to the allowlist. */
  format?: string;
  /** Input seeking (`-ss` before `-i`), in seconds. */
  seek?: number;
}

/** The hardened input options and `-i` of one input. */
export function inputArgs(input: InputSpec): string[] {
  const source = sourceOptions(input.path);
  return [
    ...(input.seek !== undefined && input.seek > 0 ? ["-ss", seconds(input.seek)] : []),
    ...source.options,
    "-format_whitelist",
    input.demuxers.join(","),
    "-codec_whitelist",
    input.decoders.join(","),
    ...(input.format ? ["-f", input.format] : []),
    "-i",
    source.input,
  ];
}

/** Seconds as ffmpeg reads them, to the microsecond (never in exponent notation). */
export function seconds(value: number): string {
  return value.toFixed(6).replace(/\.?0+$/, "") || "0";
}

/** The options shared by the runs of one job. */
export interface RunContext {
  /** The ffmpeg binary (default "ffmpeg"). */
  ffmpegPath?: string;
  /** See {@linkcode spawnTool}. */
  setprivPath?: string | null;
  /**
   * The resource limits of each run (see {@linkcode spawnTool}); by default `DEFAULT_TOOL_LIMITS`, with a CPU-time
   * cap of {@linkcode cpuSecondsFor} the time left before the deadline.
   */
  limits?: Partial<ToolLimits>;
  /** When (Date.now() ms) the whole job's time is up; a run still going then is killed. */
  deadline: number;
  /** Stops the run (ffmpeg is killed); the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** How one ffmpeg run ended. */
export interface RunResult {
  status: Deno.CommandStatus;
  /** The last {@linkcode STDERR_KEEP} bytes of stderr. */
  stderr: string;
  /** Whether the deadline killed it. */
  timedOut: boolean;
}

/** How much of the end of stderr is kept. */
export const STDERR_KEEP = 16 * 1024;

/**
 * Runs ffmpeg with `args` until it exits, the deadline passes or the signal aborts. With `onProgress`, the args
 * must include `-progress pipe:1`; each parsed report is passed on. Rejects with the signal's reason when
 * aborted, and with the launcher's Error when ffmpeg cannot be started; otherwise resolves, whatever the exit.
 */
export async function runFfmpeg(
  args: string[],
  context: RunContext,
  onProgress?: (update: ProgressUpdate) => void,
): Promise<RunResult> {
  context.signal?.throwIfAborted();
  const remaining = context.deadline - Date.now();
  if (remaining <= 0) {
    return { status: { success: false, code: 1, signal: null }, stderr: "", timedOut: true };
  }
  const { child, kill, assertLaunched } = spawnTool(context.ffmpegPath ?? "ffmpeg", args, {
    tool: "ffmpeg",
    setprivPath: context.setprivPath,
    limits: { cpuSeconds: cpuSecondsFor(remaining), ...context.limits },
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, remaining);
  context.signal?.addEventListener("abort", kill, { once: true });
  try {
    const [, stderr, status] = await Promise.all([
      readProgress(child.stdout, onProgress),
      readTail(child.stderr, STDERR_KEEP),
      child.status,
    ]);
    context.signal?.throwIfAborted();
    assertLaunched(status, stderr);
    return { status, stderr, timedOut };
  } finally {
    clearTimeout(timer);
    context.signal?.removeEventListener("abort", kill);
  }
}

/**
 * ffmpeg's log without what a decoder allowlist makes it print while it probes the streams it will not decode
 * ("Codec (h264) not on whitelist", "Failed to open codec in avformat_find_stream_info"), so that the reason of
 * a real failure is the last line.
 */
export function withoutProbeNoise(log: string): string {
  const lines = log.split("\n");
  const kept: string[] = [];
  let dropped = false;
  for (const line of lines) {
    if (/Codec \([^)]*\) not on whitelist|Failed to open codec in avformat_find_stream_info/.test(line)) {
      dropped = true;
      continue;
    }
    if (dropped && /^\s*Last message repeated \d+ times?$/.test(line)) continue;
    dropped = false;
    kept.push(line);
  }
  return kept.join("\n");
}

/** The last non-empty line of ffmpeg's log, without its "[demuxer @ 0x...]" prefix, cut to 200 characters. */
export function lastMessage(log: string): string {
  const lines = log.split("\n").map((l) => l.trim()).filter(Boolean);
  const line = lines.at(-1) ?? "no error message";
  return line.replace(/^\[[^\]]*\]\s*/, "").slice(0, 200);
}

async function readProgress(
  stream: ReadableStream<Uint8Array>,
  onUpdate?: (update: ProgressUpdate) => void,
): Promise<void> {
  const parser = new ProgressParser();
  const decoder = new TextDecoder();
  const pass = (updates: ProgressUpdate[]) => {
    if (!onUpdate) return;
    for (const update of updates) onUpdate(update);
  };
  for await (const chunk of stream) pass(parser.push(decoder.decode(chunk, { stream: true })));
  pass(parser.flush());
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
