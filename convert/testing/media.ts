/**
 * @module
 * Test helper: real media files made with ffmpeg's lavfi sources, hostile files (random bytes, truncated MP4,
 * playlists disguised as MP4), and ffprobe helpers to check outputs. Not a test file; tests import it.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/** The kinds of input {@linkcode makeMedia} can make. */
export type MediaKind =
  | "mp4"
  | "mov"
  | "mkv"
  | "webm"
  | "webm-streamed"
  | "avi"
  | "flac"
  | "mp4-no-audio"
  | "zero-bytes"
  | "random-bytes"
  | "truncated-mp4"
  | "hls-playlist-as-mp4"
  | "ffconcat-as-mp4";

/** A playlist or file list disguised as MP4, and the local file it points at. */
export interface Trap {
  /** The disguised playlist (named .mp4). */
  path: string;
  /** The local file it lists: an MP3 whose frames carry `canaryText`. */
  canaryPath: string;
  /** A unique text written into every frame of the canary, so a copy of its bytes can be found in any output. */
  canaryText: string;
}

/** ffprobe's JSON view of a file (format and streams). */
export interface ProbeJson {
  format: Record<string, unknown>;
  streams: Record<string, unknown>[];
}

const VIDEO = (seconds: number) => ["-f", "lavfi", "-i", `testsrc2=s=320x240:r=15:d=${seconds}`];
const SINE = (seconds: number, rate: number) => [
  "-f",
  "lavfi",
  "-i",
  `sine=f=440:sample_rate=${rate}:d=${seconds}`,
];
const H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"];
const VP9_OPUS = [
  "-c:v",
  "libvpx-vp9",
  "-deadline",
  "realtime",
  "-cpu-used",
  "8",
  "-b:v",
  "200k",
  "-c:a",
  "libopus",
  "-b:a",
  "64k",
];

/**
 * Writes a file of `kind` into `dir` and returns its path. Media kinds last `seconds` (default 3); an "mp4" keeps
 * its moov atom at the end (no faststart), like most phone and camera files.
 */
export async function makeMedia(
  dir: string,
  kind: MediaKind,
  options: { seconds?: number } = {},
): Promise<string> {
  const s = options.seconds ?? 3;
  const tag = crypto.randomUUID().slice(0, 8);
  const file = (ext: string) => join(dir, `${kind}-${tag}.${ext}`);
  switch (kind) {
    case "mp4":
    case "mov": {
      const path = file(kind);
      await ffmpeg([
        ...VIDEO(s),
        ...SINE(s, 44100),
        ...H264,
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-shortest",
        path,
      ]);
      return path;
    }
    case "mkv":
    case "webm": {
      const path = file(kind);
      await ffmpeg([...VIDEO(s), ...SINE(s, 48000), ...VP9_OPUS, "-shortest", path]);
      return path;
    }
    case "webm-streamed": {
      // Written to a pipe, as MediaRecorder and live recorders do: no Duration, no Cues.
      const path = file("webm");
      const args = ["-hide_banner", "-nostdin", "-v", "error", ...VIDEO(s), ...SINE(s, 48000), ...VP9_OPUS];
      const quoted = [...args, "-shortest", "-f", "webm", "pipe:1"].map((a) => `'${a}'`).join(" ");
      await run("bash", ["-c", `ffmpeg ${quoted} > '${path}'`]);
      return path;
    }
    case "avi": {
      const path = file("avi");
      await ffmpeg([
        ...VIDEO(s),
        ...SINE(s, 44100),
        "-c:v",
        "mpeg4",
        "-q:v",
        "5",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-shortest",
        path,
      ]);
      return path;
    }
    case "flac": {
      // Silence compresses to almost nothing, so even an hour is small and quick to make.
      const path = file("flac");
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        `anullsrc=r=44100:cl=stereo`,
        "-t",
        String(s),
        "-c:a",
        "flac",
        path,
      ]);
      return path;
    }
    case "mp4-no-audio": {
      const path = file("mp4");
      await ffmpeg([...VIDEO(s), ...H264, path]);
      return path;
    }
    case "zero-bytes": {
      const path = file("mp4");
      await Deno.writeFile(path, new Uint8Array());
      return path;
    }
    case "random-bytes": {
      const path = file("mp4");
      await Deno.writeFile(path, seededBytes(64 * 1024, 0x5eed));
      return path;
    }
    case "truncated-mp4": {
      const whole = await makeMedia(dir, "mp4", options);
      const bytes = await Deno.readFile(whole);
      await Deno.remove(whole);
      const path = file("mp4");
      await Deno.writeFile(path, bytes.subarray(0, Math.floor(bytes.length * 0.4)));
      return path;
    }
    case "hls-playlist-as-mp4":
      return (await makeHlsTrap(dir)).path;
    case "ffconcat-as-mp4":
      return (await makeConcatTrap(dir)).path;
    default: {
      const never: never = kind;
      throw new Error(`Unknown media kind ${never}`);
    }
  }
}

/**
 * An HLS playlist saved as .mp4 that lists a local canary MP3 by absolute path and as a file:// URL. A naive
 * `ffmpeg -i trap.mp4` follows it and reads the canary.
 */
export async function makeHlsTrap(dir: string): Promise<Trap> {
  const { canaryPath, canaryText } = await makeCanary(dir);
  const path = join(dir, `hls-${crypto.randomUUID().slice(0, 8)}.mp4`);
  const playlist = [
    "#EXTM3U",
    "#EXT-X-VERSION:3",
    "#EXT-X-TARGETDURATION:2",
    "#EXT-X-MEDIA-SEQUENCE:0",
    "#EXTINF:2.0,",
    canaryPath,
    "#EXTINF:2.0,",
    pathToFileURL(canaryPath).href,
    "#EXT-X-ENDLIST",
    "",
  ].join("\n");
  await Deno.writeTextFile(path, playlist);
  return { path, canaryPath, canaryText };
}

/**
 * An ffconcat list saved as .mp4 that names a local canary MP3 (by a relative name, which the concat demuxer's
 * "safe" mode allows).
 */
export async function makeConcatTrap(dir: string): Promise<Trap> {
  const { canaryPath, canaryText } = await makeCanary(dir);
  const path = join(dir, `ffconcat-${crypto.randomUUID().slice(0, 8)}.mp4`);
  const name = canaryPath.slice(dir.length + 1);
  await Deno.writeTextFile(path, `ffconcat version 1.0\nfile '${name}'\nfile '${name}'\n`);
  return { path, canaryPath, canaryText };
}

/** The duration in seconds of the first audio stream of `path`, counted from its decoded samples. */
export async function audioDuration(path: string): Promise<number> {
  const out = await run("ffprobe", [
    "-v",
    "error",
    "-select_streams",
    "a:0",
    "-show_entries",
    "stream=sample_rate:frame=nb_samples",
    "-print_format",
    "json",
    path,
  ]);
  const json = JSON.parse(out) as {
    streams: { sample_rate: string }[];
    frames: { nb_samples: number }[];
  };
  const rate = Number(json.streams[0]?.sample_rate);
  if (!rate) throw new Error(`${path} has no audio stream`);
  const samples = json.frames.reduce((sum, frame) => sum + Number(frame.nb_samples), 0);
  return samples / rate;
}

/** ffprobe's JSON description of `path` (`-show_format -show_streams`). */
export async function probeJson(path: string): Promise<ProbeJson> {
  const out = await run("ffprobe", [
    "-v",
    "error",
    "-print_format",
    "json",
    "-show_format",
    "-show_streams",
    path,
  ]);
  return JSON.parse(out) as ProbeJson;
}

/** Whether `haystack` contains the bytes of `needle`. */
export function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/**
 * A 2 s MP3 of silence (320 kbit/s CBR, no Xing or ID3 header) with `canaryText` written into the payload of
 * every frame. The frame headers stay valid, so a stream copy carries the text through.
 */
async function makeCanary(dir: string): Promise<{ canaryPath: string; canaryText: string }> {
  const id = crypto.randomUUID();
  const canaryText = `VMP3-CANARY-${id}`;
  const canaryPath = join(dir, `canary-${id.slice(0, 8)}.mp3`);
  await ffmpeg([
    "-f",
    "lavfi",
    "-i",
    "anullsrc=r=44100:cl=mono",
    "-t",
    "2",
    "-c:a",
    "libmp3lame",
    "-b:a",
    "320k",
    "-write_xing",
    "0",
    "-id3v2_version",
    "0",
    canaryPath,
  ]);
  const bytes = await Deno.readFile(canaryPath);
  const text = new TextEncoder().encode(canaryText);
  const kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
  const rates = [44100, 48000, 32000];
  let at = 0;
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff || (bytes[at + 1] & 0xfe) !== 0xfa) {
      throw new Error(`Canary MP3 has no MPEG-1 layer III frame at byte ${at}`);
    }
    const bitrate = kbps[bytes[at + 2] >> 4] * 1000;
    const rate = rates[(bytes[at + 2] >> 2) & 3];
    const size = Math.floor((144 * bitrate) / rate) + ((bytes[at + 2] >> 1) & 1);
    if (size > 40 + text.length) bytes.set(text, at + 40);
    at += size;
  }
  await Deno.writeFile(canaryPath, bytes);
  return { canaryPath, canaryText };
}

/** Deterministic pseudo-random bytes (xorshift32), so a "random" file behaves the same in every run. */
function seededBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function ffmpeg(args: string[]): Promise<void> {
  await run("ffmpeg", ["-hide_banner", "-nostdin", "-v", "error", "-y", ...args]);
}

async function run(command: string, args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
  return new TextDecoder().decode(stdout);
}
