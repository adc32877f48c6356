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
  | "mkv-two-tracks"
  | "flac-5.1"
  | "flac-7.1"
  | "wav-96k"
  | "wav-8k-mono"
  | "mp4-aac-128k"
  | "mp4-tagged"
  | "mp4-cover"
  | "mp3-tagged"
  | "flac-quiet"
  | "ogg-tagged"
  | "mp4-no-audio"
  | "zero-bytes"
  | "random-bytes"
  | "truncated-mp4"
  | "hls-playlist-as-mp4"
  | "ffconcat-as-mp4"
  | "mp4-720p";

/** The tone of each audio track of an "mkv-two-tracks" file, in Hz: track 0 (eng), track 1 (fra, the default). */
export const TWO_TRACK_TONES = { eng: 440, fra: 3000 } as const;

/** The tags of the "mp4-tagged" and "mp3-tagged" files (the mp4 also has a comment and a copyright). */
export const SOURCE_TAGS = {
  title: "Source Title",
  artist: "Source Artist",
  album: "Source Album",
  date: "2019",
};

/** The chapters of an "mp4-tagged" file: [start, end, title], in seconds. */
export const SOURCE_CHAPTERS: [number, number, string][] = [[0, 1, "Intro"], [1, 2, "Middle"], [
  2,
  3,
  "End part",
]];

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
const SINE_AT = (frequency: number, seconds: number, rate: number) => [
  "-f",
  "lavfi",
  "-i",
  `sine=f=${frequency}:sample_rate=${rate}:d=${seconds}`,
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

/** A small H.264 video, for files where the video only has to be there. */
const SMALL_VIDEO = (seconds: number) => [
  "-f",
  "lavfi",
  "-i",
  `testsrc2=s=160x120:r=15:d=${seconds}`,
];

/**
 * Writes a file of `kind` into `dir` and returns its path. Media kinds last `seconds` (default 3); an "mp4" keeps
 * its moov atom at the end (no faststart), like most phone and camera files.
 *
 * - "mkv-two-tracks": video, then two Opus tracks: eng at 440 Hz (not default), fra at 3000 Hz (default)
 *   ({@linkcode TWO_TRACK_TONES}).
 * - "flac-5.1", "flac-7.1": a 440 Hz tone in the centre channel only, every other channel silent, 48 kHz.
 * - "wav-96k": a stereo 96 kHz PCM tone. "wav-8k-mono": an 8 kHz mono PCM tone.
 * - "mp4-aac-128k": video and stereo pink noise as 128 kbit/s AAC.
 * - "mp4-tagged": video and AAC with {@linkcode SOURCE_TAGS} (plus comment and copyright) and
 *   {@linkcode SOURCE_CHAPTERS} (3 s).
 * - "mp4-cover": video, AAC, and a PNG attached picture (cover art) of `picture` pixels (default "300x200").
 * - "mp3-tagged": a 128 kbit/s CBR stereo MP3 at 44.1 kHz with {@linkcode SOURCE_TAGS} as ID3v2.4.
 * - "flac-quiet": a 1 kHz tone at -40 dBFS (about -43 LUFS), mono.
 * - "ogg-tagged": Vorbis in Ogg with {@linkcode SOURCE_TAGS} as upper-case Vorbis comments (stream tags).
 * - "mp4-720p": 1280x720 30 fps H.264 and 48 kHz AAC, the size of a usual upload.
 */
export async function makeMedia(
  dir: string,
  kind: MediaKind,
  options: { seconds?: number; picture?: string } = {},
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
    case "mkv-two-tracks": {
      const path = file("mkv");
      await ffmpeg([
        ...SMALL_VIDEO(s),
        ...SINE_AT(TWO_TRACK_TONES.eng, s, 48000),
        ...SINE_AT(TWO_TRACK_TONES.fra, s, 48000),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        ...H264,
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:1",
        "language=fra",
        "-disposition:a:0",
        "0",
        "-disposition:a:1",
        "default",
        "-t",
        String(s),
        path,
      ]);
      return path;
    }
    case "flac-5.1":
    case "flac-7.1": {
      const path = file("flac");
      const [layout, count] = kind === "flac-5.1" ? ["5.1", 6] : ["7.1", 8];
      // FL FR FC LFE ...: the tone in channel 2 (front centre) only.
      const channels = Array.from({ length: count }, (_, i) => (i === 2 ? "0.5*sin(440*2*PI*t)" : "0"));
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        `aevalsrc=${channels.join("|")}:c=${layout}:s=48000:d=${s}`,
        "-c:a",
        "flac",
        path,
      ]);
      return path;
    }
    case "wav-96k":
    case "wav-8k-mono": {
      const path = file("wav");
      const [rate, layout] = kind === "wav-96k" ? [96000, "stereo"] : [8000, "mono"];
      await ffmpeg([...SINE(s, rate), "-ac", layout === "stereo" ? "2" : "1", "-c:a", "pcm_s16le", path]);
      return path;
    }
    case "mp4-aac-128k": {
      const path = file("mp4");
      await ffmpeg([
        ...SMALL_VIDEO(s),
        "-f",
        "lavfi",
        "-i",
        `anoisesrc=c=pink:a=0.3:r=44100:d=${s}`,
        ...H264,
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-shortest",
        path,
      ]);
      return path;
    }
    case "mp4-tagged": {
      const path = file("mp4");
      const meta = join(dir, `meta-${tag}.txt`);
      const lines = [";FFMETADATA1", ...Object.entries(SOURCE_TAGS).map(([k, v]) => `${k}=${v}`)];
      lines.push("comment=a source comment", "copyright=a source copyright");
      for (const [start, end, title] of SOURCE_CHAPTERS) {
        lines.push(
          "",
          "[CHAPTER]",
          "TIMEBASE=1/1000",
          `START=${start * 1000}`,
          `END=${end * 1000}`,
          `title=${title}`,
        );
      }
      await Deno.writeTextFile(meta, lines.join("\n") + "\n");
      await ffmpeg([
        ...SMALL_VIDEO(s),
        ...SINE(s, 44100),
        "-f",
        "ffmetadata",
        "-i",
        meta,
        "-map",
        "0",
        "-map",
        "1",
        "-map_metadata",
        "2",
        "-map_chapters",
        "2",
        ...H264,
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-shortest",
        path,
      ]);
      await Deno.remove(meta);
      return path;
    }
    case "mp4-cover": {
      const path = file("mp4");
      const picture = join(dir, `picture-${tag}.png`);
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        `testsrc2=s=${options.picture ?? "300x200"}:d=1`,
        "-frames:v",
        "1",
        picture,
      ]);
      await ffmpeg([
        ...SMALL_VIDEO(s),
        ...SINE(s, 44100),
        "-i",
        picture,
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        ...H264.map((a) => (a === "-c:v" ? "-c:v:0" : a)),
        "-c:v:1",
        "png",
        "-disposition:v:1",
        "attached_pic",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-t",
        String(s),
        path,
      ]);
      await Deno.remove(picture);
      return path;
    }
    case "mp3-tagged": {
      const path = file("mp3");
      await ffmpeg([
        ...SINE(s, 44100),
        "-ac",
        "2",
        ...Object.entries(SOURCE_TAGS).flatMap(([k, v]) => ["-metadata", `${k}=${v}`]),
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-id3v2_version",
        "4",
        path,
      ]);
      return path;
    }
    case "flac-quiet": {
      const path = file("flac");
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        `sine=f=1000:sample_rate=44100:d=${s}`,
        "-af",
        "volume=-22dB",
        path,
      ]);
      return path;
    }
    case "ogg-tagged": {
      const path = file("ogg");
      await ffmpeg([
        ...SINE(s, 44100),
        ...Object.entries(SOURCE_TAGS).flatMap(([k, v]) => ["-metadata", `${k.toUpperCase()}=${v}`]),
        "-c:a",
        "libvorbis",
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
    case "mp4-720p": {
      const path = file("mp4");
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        `testsrc2=s=1280x720:r=30:d=${s}`,
        ...SINE(s, 48000),
        ...H264,
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        path,
      ]);
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

/**
 * A loopback HTTP listener that must never be reached: it counts every request (and answers the canary MP3's
 * bytes, so a tool that follows a URL to it gets media it would happily convert).
 */
export interface CanaryServer {
  /** Its base URL, `http://127.0.0.1:<port>`. */
  url: string;
  /** The paths requested so far. */
  requests: string[];
  close(): Promise<void>;
}

/** Starts a {@linkcode CanaryServer} on 127.0.0.1 (a free port) that answers with the bytes of `canaryPath`. */
export function startCanaryServer(canaryPath: string): CanaryServer {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    requests.push(new URL(request.url).pathname);
    return new Response(await Deno.readFile(canaryPath), { headers: { "content-type": "audio/mpeg" } });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close: () => server.shutdown(),
  };
}

/** The canary MP3 a trap points at, made in `dir` (for traps that only name URLs, or several traps at one). */
export function makeCanaryFile(dir: string): Promise<{ canaryPath: string; canaryText: string }> {
  return makeCanary(dir);
}

/** An HLS playlist (saved as .mp4) whose segments are `urls`. */
export async function makeHlsUrlTrap(dir: string, canary: Omit<Trap, "path">, urls: string[]): Promise<Trap> {
  const path = join(dir, `hls-url-${crypto.randomUUID().slice(0, 8)}.mp4`);
  await Deno.writeTextFile(path, hlsPlaylist(urls));
  return { path, ...canary };
}

/**
 * A Matroska file with a real audio track that carries playlists as inert data: an HLS playlist naming the canary
 * (and `urls`) as an attachment (`playlist.m3u8`, application/vnd.apple.mpegurl), and an ffconcat list as the
 * text of a subtitle track. Nothing in a Matroska file makes a demuxer open them.
 */
export async function makeMkvEmbeddedTrap(dir: string, urls: string[] = []): Promise<Trap> {
  const { canaryPath, canaryText } = await makeCanary(dir);
  const id = crypto.randomUUID().slice(0, 8);
  const playlist = join(dir, `playlist-${id}.m3u8`);
  await Deno.writeTextFile(playlist, hlsPlaylist([canaryPath, pathToFileURL(canaryPath).href, ...urls]));
  const subtitles = join(dir, `list-${id}.srt`);
  const list = `ffconcat version 1.0\nfile '${canaryPath}'\nfile '${canaryPath.slice(dir.length + 1)}'`;
  await Deno.writeTextFile(subtitles, `1\n00:00:00,000 --> 00:00:02,000\n${list}\n`);
  const path = join(dir, `mkv-embedded-${id}.mkv`);
  await ffmpeg([
    ...SINE(2, 44100),
    "-i",
    subtitles,
    "-attach",
    playlist,
    "-metadata:s:t",
    "mimetype=application/vnd.apple.mpegurl",
    "-map",
    "0",
    "-map",
    "1",
    "-c:a",
    "libopus",
    "-c:s",
    "srt",
    path,
  ]);
  await Deno.remove(playlist);
  await Deno.remove(subtitles);
  return { path, canaryPath, canaryText };
}

/**
 * An MP4 (AAC audio) whose audio track's data reference is a Mac alias record naming the canary MP3 in the same
 * folder (absolute path, one level up and down: what mov's `enable_drefs` would follow). Read with
 * `-enable_drefs 1`, its samples come from the canary; by default ffmpeg skips the external track.
 */
export async function makeDrefTrap(dir: string): Promise<Trap> {
  const { canaryPath, canaryText } = await makeCanary(dir);
  const source = join(dir, `dref-source-${crypto.randomUUID().slice(0, 8)}.mp4`);
  await ffmpeg([...SINE(2, 44100), "-c:a", "aac", "-b:a", "64k", source]);
  const bytes = await Deno.readFile(source);
  await Deno.remove(source);
  const path = join(dir, `dref-${crypto.randomUUID().slice(0, 8)}.mp4`);
  await Deno.writeFile(
    path,
    replaceBox(bytes, ["moov", "trak", "mdia", "minf", "dinf", "dref"], aliasDref(canaryPath)),
  );
  return { path, canaryPath, canaryText };
}

/**
 * An AVI with a PCM audio track and a text track whose one chunk is a GAB2 subtitle carrying `content` (by
 * default an HLS playlist naming the canary, as in CVE-2016-1898 and CVE-2017-9993). ffmpeg's AVI demuxer probes a
 * GAB2 payload and opens a demuxer on it; an SRT payload shows that the chunk is read.
 */
export async function makeAviGab2Trap(
  dir: string,
  options: { urls?: string[]; content?: string } = {},
): Promise<Trap> {
  const { canaryPath, canaryText } = await makeCanary(dir);
  const content = options.content ??
    hlsPlaylist([canaryPath, pathToFileURL(canaryPath).href, ...(options.urls ?? [])]);
  const path = join(dir, `avi-gab2-${crypto.randomUUID().slice(0, 8)}.avi`);
  await Deno.writeFile(path, gab2Avi(new TextEncoder().encode(content)));
  return { path, canaryPath, canaryText };
}

function hlsPlaylist(entries: string[]): string {
  return [
    "#EXTM3U",
    "#EXT-X-VERSION:3",
    "#EXT-X-TARGETDURATION:2",
    "#EXT-X-MEDIA-SEQUENCE:0",
    ...entries.flatMap((entry) => ["#EXTINF:2.0,", entry]),
    "#EXT-X-ENDLIST",
    "",
  ].join("\n");
}

/** `bytes` (an ISO BMFF file) with the box at `path` replaced by `box`, its ancestors' sizes fixed. */
function replaceBox(bytes: Uint8Array, path: string[], box: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const walk = (start: number, end: number, depth: number): Uint8Array => {
    const parts: Uint8Array[] = [];
    let at = start;
    let found = false;
    while (at + 8 <= end) {
      const size = view.getUint32(at);
      const type = ascii(bytes, at + 4, at + 8);
      if (size < 8) throw new Error(`replaceBox: box ${type} has a size of ${size}`);
      if (!found && type === path[depth]) {
        found = true;
        if (depth === path.length - 1) {
          parts.push(box);
        } else {
          const inner = walk(at + 8, at + size, depth + 1);
          const head = new Uint8Array(8);
          new DataView(head.buffer).setUint32(0, 8 + inner.length);
          head.set(bytes.subarray(at + 4, at + 8), 4);
          parts.push(head, inner);
        }
      } else {
        parts.push(bytes.subarray(at, at + size));
      }
      at += size;
    }
    if (!found) throw new Error(`replaceBox: no ${path[depth]} box`);
    return concat(parts);
  };
  return walk(0, bytes.length, 0);
}

/** A `dref` box with one Mac alias record (`alis`) whose absolute path is `target`, one level up and down. */
function aliasDref(target: string): Uint8Array {
  const name = new TextEncoder().encode(target.split("/").pop()!);
  const fullPath = new TextEncoder().encode(target);
  const record: number[] = [];
  const u8 = (n: number) => record.push(n & 0xff);
  const u16 = (n: number) => record.push((n >> 8) & 0xff, n & 0xff);
  const fixed = (data: Uint8Array, length: number) => {
    for (let i = 0; i < length; i++) u8(data[i] ?? 0);
  };
  fixed(new Uint8Array(), 10); // user type, record size, version, kind
  u8(0); // volume name length: no volume
  fixed(new Uint8Array(), 27);
  fixed(new Uint8Array(), 12); // created, file system, disk type, parent folder
  u8(Math.min(name.length, 63));
  fixed(name, 63);
  fixed(new Uint8Array(), 16); // file number, created, type, creator
  u16(1); // levels up from the alias to the common folder
  u16(1); // levels down from there to the target
  fixed(new Uint8Array(), 16); // volume attributes, file system id, reserved
  u16(2); // an absolute path
  u16(fullPath.length);
  fixed(fullPath, fullPath.length + (fullPath.length & 1));
  u16(0xffff); // end
  u16(0);
  const entry = fullBox("alis", 0, new Uint8Array(record));
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, 1);
  return fullBox("dref", 0, concat([count, entry]));
}

/** An ISO BMFF full box: size, type, version 0 and `flags`, `body`. */
function fullBox(type: string, flags: number, body: Uint8Array): Uint8Array {
  const head = new Uint8Array(12);
  const view = new DataView(head.buffer);
  view.setUint32(0, 12 + body.length);
  head.set(new TextEncoder().encode(type), 4);
  view.setUint32(8, flags & 0xffffff);
  return concat([head, body]);
}

/** An AVI: 2 s of 8 kHz mono 16-bit PCM silence (stream 0), and a text stream (1) with one GAB2 chunk. */
function gab2Avi(subtitle: Uint8Array): Uint8Array {
  const le = (size: number, values: number[]) => {
    const out = new Uint8Array(values.length * size);
    const view = new DataView(out.buffer);
    values.forEach((v, i) => size === 2 ? view.setUint16(i * 2, v, true) : view.setUint32(i * 4, v, true));
    return out;
  };
  const chunk = (id: string, data: Uint8Array) =>
    concat([new TextEncoder().encode(id), le(4, [data.length]), data, new Uint8Array(data.length & 1)]);
  const list = (kind: "RIFF" | "LIST", type: string, children: Uint8Array[]) => {
    const body = concat([new TextEncoder().encode(type), ...children]);
    return concat([new TextEncoder().encode(kind), le(4, [body.length]), body]);
  };
  const fourcc = (s: string) => new TextEncoder().encode(s);
  const rate = 8000;
  const pieces = 20;
  const piece = new Uint8Array((rate * 2) / 10); // 0.1 s of 16-bit mono, `pieces` times
  const strh = (type: string, scale: number, rateValue: number, length: number, sampleSize: number) =>
    chunk(
      "strh",
      concat([
        fourcc(type),
        le(4, [0, 0, 0, 0, scale, rateValue, 0, length, 0, 0xffffffff, sampleSize]),
        le(2, [0, 0, 0, 0]),
      ]),
    );
  const audio = list("LIST", "strl", [
    strh("auds", 2, rate * 2, rate * 2, 2),
    chunk("strf", concat([le(2, [1, 1]), le(4, [rate, rate * 2]), le(2, [2, 16, 0])])),
  ]);
  const text = list("LIST", "strl", [strh("txts", 1, 1, 1, 0), chunk("strf", new Uint8Array())]);
  const title = new Uint8Array(4); // no description: an empty UTF-16 string
  const gab2 = concat([
    fourcc("GAB2"),
    new Uint8Array([0]),
    le(2, [2]),
    le(4, [title.length]),
    title,
    le(2, [4]),
    le(4, [subtitle.length]),
    subtitle,
  ]);
  const chunks = [chunk("01tx", gab2), ...Array.from({ length: pieces }, () => chunk("00wb", piece))];
  const index: Uint8Array[] = [];
  let offset = 4; // from the "movi" type
  for (const c of chunks) {
    const size = new DataView(c.buffer, c.byteOffset).getUint32(4, true);
    index.push(concat([c.subarray(0, 4), le(4, [0x10, offset, size])]));
    offset += c.length;
  }
  const avih = chunk("avih", le(4, [100_000, rate * 2, 0, 0x10, pieces, 0, 2, 0, 0, 0, 0, 0, 0, 0]));
  return list("RIFF", "AVI ", [
    list("LIST", "hdrl", [avih, audio, text]),
    list("LIST", "movi", chunks),
    chunk("idx1", concat(index)),
  ]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function ascii(bytes: Uint8Array, start: number, end: number): string {
  return String.fromCharCode(...bytes.subarray(start, end));
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

/** The decoded audio of `path` as interleaved 16-bit samples, resampled to `rate` with `channels` channels. */
export async function pcm(path: string, channels: number, rate: number): Promise<Int16Array> {
  const { success, stdout, stderr } = await new Deno.Command("ffmpeg", {
    args: ["-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-ac", String(channels)]
      .concat(["-ar", String(rate), "-f", "s16le", "-"]),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`decoding ${path} failed: ${new TextDecoder().decode(stderr)}`);
  return new Int16Array(stdout.buffer, stdout.byteOffset, Math.floor(stdout.byteLength / 2));
}

/** Zero crossings per second of channel `channel` of interleaved `samples` (a tone of f Hz gives about 2f). */
export function zeroCrossingRate(samples: Int16Array, channels: number, rate: number, channel = 0): number {
  let crossings = 0;
  let previous = 0;
  let frames = 0;
  for (let i = channel; i < samples.length; i += channels, frames++) {
    const sign = Math.sign(samples[i]);
    if (sign !== 0) {
      if (previous !== 0 && sign !== previous) crossings++;
      previous = sign;
    }
  }
  return frames === 0 ? 0 : crossings / (frames / rate);
}

/** The RMS level of channel `channel` of interleaved `samples`, in dBFS (-Infinity for digital silence). */
export function rmsDb(samples: Int16Array, channels: number, channel: number): number {
  let sum = 0;
  let frames = 0;
  for (let i = channel; i < samples.length; i += channels, frames++) sum += (samples[i] / 32768) ** 2;
  return frames === 0 ? -Infinity : 10 * Math.log10(sum / frames);
}

/** The integrated loudness of `path` in LUFS, as ffmpeg's ebur128 filter measures it. */
export async function integratedLoudness(path: string): Promise<number> {
  const { stderr } = await new Deno.Command("ffmpeg", {
    args: [
      "-hide_banner",
      "-nostdin",
      "-nostats",
      "-i",
      path,
      "-map",
      "0:a:0",
      "-af",
      "ebur128",
      "-f",
      "null",
      "-",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stderr);
  const match = /Integrated loudness:\s*I:\s*(-?[\d.]+|-inf) LUFS/.exec(
    text.slice(text.lastIndexOf("Summary:")),
  );
  if (!match) throw new Error(`no ebur128 summary for ${path}: ${text.slice(-500)}`);
  return Number.parseFloat(match[1]);
}

/** The chapters of `path` as ffprobe reads them: [start, end, title], in seconds. */
export async function chaptersOf(path: string): Promise<[number, number, string][]> {
  const out = await run("ffprobe", ["-v", "error", "-print_format", "json", "-show_chapters", path]);
  const json = JSON.parse(out) as {
    chapters: { start_time: string; end_time: string; tags?: { title?: string } }[];
  };
  return json.chapters.map((c) => [Number(c.start_time), Number(c.end_time), c.tags?.title ?? ""]);
}

/** The MD5 of each packet of the first audio stream of `path` (ffmpeg's framemd5, timestamps left out). */
export async function audioPacketHashes(path: string): Promise<string[]> {
  const out = await run("ffmpeg", [
    "-hide_banner",
    "-nostdin",
    "-v",
    "error",
    "-i",
    path,
    "-map",
    "0:a:0",
    "-c",
    "copy",
    "-f",
    "framemd5",
    "-",
  ]);
  // stream, dts, pts, duration, size, hash[, side data]
  return out.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(",")[5].trim());
}

/** The ID3v2 major version of an MP3 (3 or 4), or undefined where it does not start with an ID3v2 tag. */
export function id3Version(bytes: Uint8Array): number | undefined {
  return bytes[0] === 0x49 && bytes[1] === 0x44 && bytes[2] === 0x33 ? bytes[3] : undefined;
}

/**
 * The header of the first MPEG frame after the ID3v2 tag: "Xing" (LAME's VBR header), "Info" (the same header in
 * a CBR file), or undefined (no such header).
 */
export function firstFrameHeader(bytes: Uint8Array): "Xing" | "Info" | undefined {
  let at = 0;
  if (id3Version(bytes) !== undefined) {
    // A syncsafe size (7 bits a byte) after the 10-byte header; a footer flag adds 10 more.
    const size = (bytes[6] << 21) | (bytes[7] << 14) | (bytes[8] << 7) | bytes[9];
    at = 10 + size + ((bytes[5] & 0x10) ? 10 : 0);
  }
  while (at + 1 < bytes.length && !(bytes[at] === 0xff && (bytes[at + 1] & 0xe0) === 0xe0)) at++;
  const frame = bytes.subarray(at, at + 200);
  if (containsBytes(frame, new TextEncoder().encode("Xing"))) return "Xing";
  if (containsBytes(frame, new TextEncoder().encode("Info"))) return "Info";
  return undefined;
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
