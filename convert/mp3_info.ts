/**
 * What a finished MP3 is (duration, bitrate, sample rate, channels), read from its own first frame and the
 * Xing/Info header ffmpeg's MP3 muxer writes there, in the figures ffprobe gives: no ffprobe run (~70 ms of
 * process start on a short job). A file without that header, or not laid out as ffmpeg writes it, reads as
 * null, and the caller asks ffprobe instead.
 */

/** An MP3's figures, as ffprobe would give them. */
export interface Mp3Info {
  /** Seconds: the frames the Xing/Info header counts, times the samples per frame, over the sample rate. */
  duration: number;
  /**
   * bit/s: for a CBR file ("Info"), the header of its first audio frame (the Info frame itself may be written at
   * a higher rate, to hold the header); else the header's byte count over the duration ("Xing").
   */
  bitrate: number;
  sampleRate: number;
  channels: number;
}

/** kbit/s by bitrate index, MPEG-1 then MPEG-2/2.5, layer III. */
const BITRATES = [
  [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];
const SAMPLE_RATES = [44100, 48000, 32000];

/** Reads `path`'s figures from its Xing/Info header; null when it has none where ffmpeg puts it. */
export async function readMp3Info(path: string): Promise<Mp3Info | null> {
  using file = await Deno.open(path, { read: true });
  const id3 = await readAt(file, 0, 10);
  let start = 0;
  if (id3.length === 10 && id3[0] === 0x49 && id3[1] === 0x44 && id3[2] === 0x33) { // "ID3"
    if ((id3[6] | id3[7] | id3[8] | id3[9]) & 0x80) return null; // not a syncsafe size
    const size = (id3[6] << 21) | (id3[7] << 14) | (id3[8] << 7) | id3[9];
    start = 10 + size + (id3[5] & 0x10 ? 10 : 0); // a footer, if flagged
  }
  return parseFirstFrame(await readAt(file, start, 4096));
}

/** A layer III frame header: its figures and its length in bytes. */
interface FrameHeader {
  mpeg1: boolean;
  sampleRate: number;
  bitrate: number;
  mono: boolean;
  length: number;
}

function frameHeader(bytes: Uint8Array): FrameHeader | null {
  if (bytes.length < 4 || bytes[0] !== 0xff || (bytes[1] & 0xe0) !== 0xe0) return null;
  const version = (bytes[1] >> 3) & 3; // 0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1
  const layer = (bytes[1] >> 1) & 3; // 1: layer III
  const bitrateIndex = bytes[2] >> 4;
  const rateIndex = (bytes[2] >> 2) & 3;
  if (version === 1 || layer !== 1 || bitrateIndex === 0 || bitrateIndex === 15 || rateIndex === 3) {
    return null;
  }
  const mpeg1 = version === 3;
  const sampleRate = SAMPLE_RATES[rateIndex] / (mpeg1 ? 1 : version === 2 ? 2 : 4);
  const bitrate = BITRATES[mpeg1 ? 0 : 1][bitrateIndex] * 1000;
  const padding = (bytes[2] >> 1) & 1;
  const length = Math.floor(((mpeg1 ? 144 : 72) * bitrate) / sampleRate) + padding;
  return { mpeg1, sampleRate, bitrate, mono: bytes[3] >> 6 === 3, length };
}

/**
 * The figures of the MP3 whose first frame starts `bytes` (give a few KB: a CBR file's second frame is read too),
 * if that is a layer III frame with a Xing/Info header.
 */
export function parseFirstFrame(bytes: Uint8Array): Mp3Info | null {
  const first = frameHeader(bytes);
  if (!first) return null;
  const { mpeg1, sampleRate, mono } = first;
  const samplesPerFrame = mpeg1 ? 1152 : 576;
  const at = 4 + (mpeg1 ? (mono ? 17 : 32) : (mono ? 9 : 17));
  if (bytes.length < at + 16) return null;
  const tag = String.fromCharCode(...bytes.subarray(at, at + 4));
  if (tag !== "Xing" && tag !== "Info") return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset + at + 4);
  const flags = view.getUint32(0);
  if (!(flags & 1)) return null; // no frame count: no duration
  const frames = view.getUint32(4);
  const size = flags & 2 ? view.getUint32(8) : 0;
  if (frames === 0) return null;
  const duration = (frames * samplesPerFrame) / sampleRate;
  let bitrate: number;
  if (tag === "Info" || !size) {
    const second = frameHeader(bytes.subarray(first.length));
    if (!second || second.sampleRate !== sampleRate) return null;
    bitrate = second.bitrate;
  } else {
    bitrate = Math.round((size * 8) / duration);
  }
  // ffprobe states seconds to the microsecond.
  return { duration: Math.round(duration * 1e6) / 1e6, bitrate, sampleRate, channels: mono ? 1 : 2 };
}

async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const buffer = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const n = await file.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return buffer.subarray(0, filled);
}
