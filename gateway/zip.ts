/**
 * A streaming ZIP writer, for downloading many MP3s as one file. It needs only Web streams (it runs on Deno
 * Deploy): each entry's bytes pass straight through, STORED (MP3 does not compress), their CRC-32 computed on the
 * way, with sizes and CRC written after the data in a data descriptor (general-purpose bit 3), so nothing is
 * known or buffered up front. Memory stays flat whatever the sizes: one chunk at a time, plus a central-directory
 * record (about 100 bytes) per entry.
 *
 * Format (PKWARE APPNOTE 6.3.10): names are UTF-8 (bit 11); each entry carries an extended timestamp (0x5455) so
 * extractors restore the exact modification time; ZIP64 is used only where a value does not fit: an entry of
 * 4 GiB or more (a ZIP64 data descriptor and central-directory extra), an entry starting 4 GiB or more into the
 * archive, and 65535 entries or more, or a central directory past 4 GiB (the ZIP64 end records). Since sizes are
 * not known when the local header is written, the local header never carries a ZIP64 extra field; readers that
 * use the central directory (unzip, 7-Zip, Python's zipfile, Windows, macOS) read every entry, while a reader
 * that walks local headers alone could not read an entry of 4 GiB or more (no MP3 the service makes is that big).
 */
import { limitFilename } from "@vmp3/shared";

/** One file of a ZIP archive. */
export interface ZipEntry {
  /** Its name; it is made safe with {@linkcode zipEntryName} and made unique in the archive. */
  name: string;
  /** Its bytes, read only as the archive is read. */
  body: ReadableStream<Uint8Array>;
  /** When it was last modified (default: when {@linkcode zipStream} was called). */
  modified?: Date;
}

/** Options of {@linkcode zipStream}; the limits exist so tests can reach the ZIP64 paths without 4 GiB. */
export interface ZipOptions {
  /** Sizes and offsets at or above this are written as ZIP64. Default (and most): 0xFFFFFFFF. */
  zip64SizeLimit?: number;
  /** Entry counts at or above this are written as ZIP64. Default (and most): 0xFFFF. */
  zip64CountLimit?: number;
}

const MAX_U32 = 0xffffffff;
const MAX_U16 = 0xffff;
/** Central-directory records are sent in pieces of about this many bytes. */
const CENTRAL_PIECE_BYTES = 64 * 1024;

const SIG_LOCAL = 0x04034b50;
const SIG_DESCRIPTOR = 0x08074b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_END64 = 0x06064b50;
const SIG_END64_LOCATOR = 0x07064b50;
const SIG_END = 0x06054b50;
/** Bit 3: sizes and CRC follow the data; bit 11: the name is UTF-8. */
const FLAGS = 0x0008 | 0x0800;
/** Version 2.0 (deflate-era features, data descriptors) or 4.5 (ZIP64) of the format. */
const VERSION_20 = 20;
const VERSION_45 = 45;
/** Made by: Unix (3) in the high byte, so extractors honour the permission bits in the external attributes. */
const MADE_BY = (3 << 8) | VERSION_45;
/** A regular file, rw-r--r--. */
const EXTERNAL_ATTRIBUTES = (0o100644 << 16) >>> 0;
const EXTRA_TIMESTAMP = 0x5455;
const EXTRA_ZIP64 = 0x0001;

/**
 * A ZIP archive of `entries`, made as it is read (pull-based: an entry's body is read only as fast as the archive
 * is). Entries are taken from the iterable one at a time, only when the previous one is written. An entry whose
 * body errors (or an iterable that throws) errors the archive with that same error; cancelling the archive
 * cancels the body being read and closes the iterable.
 */
export function zipStream(
  entries: AsyncIterable<ZipEntry> | Iterable<ZipEntry>,
  options: ZipOptions = {},
): ReadableStream<Uint8Array> {
  const state: ZipState = { cancelled: false };
  const parts = zipParts(entries, options, state);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { value, done } = await parts.next();
      if (state.cancelled) return;
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel(reason) {
      state.cancelled = true;
      state.reason = reason;
      await state.reader?.cancel(reason).catch(() => {});
      await parts.return(undefined);
    },
  }, { highWaterMark: 0 });
}

interface ZipState {
  cancelled: boolean;
  /** Why the archive was cancelled, passed on to the body being read. */
  reason?: unknown;
  /** The reader of the body being written, so a cancel can end a read that waits. */
  reader?: ReadableStreamDefaultReader<Uint8Array>;
}

async function* zipParts(
  entries: AsyncIterable<ZipEntry> | Iterable<ZipEntry>,
  options: ZipOptions,
  state: ZipState,
): AsyncGenerator<Uint8Array, void, undefined> {
  const sizeLimit = Math.min(options.zip64SizeLimit ?? MAX_U32, MAX_U32);
  const countLimit = Math.min(options.zip64CountLimit ?? MAX_U16, MAX_U16);
  const names = new UniqueNames();
  const central: Uint8Array[] = [];
  const started = new Date();
  let offset = 0;

  for await (const entry of entries) {
    // The entry is ours from here: its body is cancelled if the archive ends before it is read through.
    const reader = entry.body.getReader();
    state.reader = reader;
    let crc = 0;
    let size = 0;
    let finished = false;
    const name = new TextEncoder().encode(names.take(zipEntryName(entry.name)));
    const time = zipTime(entry.modified ?? started);
    const headerOffset = offset;
    try {
      const local = localHeader(name, time);
      yield local;
      offset += local.length;
      while (true) {
        const { value, done } = await reader.read();
        if (state.cancelled) return;
        if (done) break;
        if (!(value instanceof Uint8Array)) {
          throw new TypeError(
            `The body of zip entry ${JSON.stringify(entry.name)} gave a chunk that is not bytes`,
          );
        }
        if (value.length === 0) continue;
        crc = crc32(value, crc);
        size += value.length;
        offset += value.length;
        yield value;
      }
      finished = true;
    } finally {
      state.reader = undefined;
      if (!finished) await reader.cancel(state.reason).catch(() => {});
      reader.releaseLock();
    }

    const descriptor = dataDescriptor(crc, size, size >= sizeLimit);
    yield descriptor;
    offset += descriptor.length;
    central.push(centralHeader({ name, time, crc, size, offset: headerOffset }, sizeLimit));
  }

  const centralOffset = offset;
  let centralSize = 0;
  for (let i = 0; i < central.length;) {
    const piece: Uint8Array[] = [];
    let bytes = 0;
    while (i < central.length && (bytes === 0 || bytes + central[i].length <= CENTRAL_PIECE_BYTES)) {
      bytes += central[i].length;
      piece.push(central[i++]);
    }
    centralSize += bytes;
    yield concat(piece, bytes);
  }
  const count = central.length;
  central.length = 0;
  yield endRecords({ count, centralOffset, centralSize, sizeLimit, countLimit });
}

/** Date and time as MS-DOS stores them (UTC, 2-second steps, 1980 to 2107), and as Unix seconds. */
interface ZipTime {
  dosTime: number;
  dosDate: number;
  unix: number;
}

function zipTime(date: Date): ZipTime {
  const ms = Number.isFinite(date.getTime()) ? date.getTime() : 0;
  const clamped = new Date(Math.min(Math.max(ms, Date.UTC(1980, 0, 1)), Date.UTC(2107, 11, 31, 23, 59, 58)));
  return {
    dosTime: (clamped.getUTCHours() << 11) | (clamped.getUTCMinutes() << 5) | (clamped.getUTCSeconds() >> 1),
    dosDate: ((clamped.getUTCFullYear() - 1980) << 9) | ((clamped.getUTCMonth() + 1) << 5) |
      clamped.getUTCDate(),
    unix: Math.min(Math.max(Math.floor(ms / 1000), 0), MAX_U32),
  };
}

/** A little-endian byte writer over a buffer of known size. */
class Bytes {
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }
  u8(value: number): this {
    this.#view.setUint8(this.#at, value);
    this.#at += 1;
    return this;
  }
  u16(value: number): this {
    this.#view.setUint16(this.#at, value, true);
    this.#at += 2;
    return this;
  }
  u32(value: number): this {
    this.#view.setUint32(this.#at, value, true);
    this.#at += 4;
    return this;
  }
  u64(value: number): this {
    this.#view.setBigUint64(this.#at, BigInt(value), true);
    this.#at += 8;
    return this;
  }
  raw(bytes: Uint8Array): this {
    this.bytes.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }
  /** The bytes, after checking that exactly all of them were written. */
  done(): Uint8Array {
    if (this.#at !== this.bytes.length) {
      throw new Error(`zip record: wrote ${this.#at} of ${this.bytes.length}`);
    }
    return this.bytes;
  }
}

/** The extended timestamp extra field (0x5455) with the modification time only: the same in both headers. */
function timestampExtra(out: Bytes, time: ZipTime): void {
  out.u16(EXTRA_TIMESTAMP).u16(5).u8(1).u32(time.unix);
}

function localHeader(name: Uint8Array, time: ZipTime): Uint8Array {
  const out = new Bytes(30 + name.length + 9);
  out.u32(SIG_LOCAL).u16(VERSION_20).u16(FLAGS).u16(0).u16(time.dosTime).u16(time.dosDate);
  out.u32(0).u32(0).u32(0); // CRC and sizes: in the data descriptor
  out.u16(name.length).u16(9).raw(name);
  timestampExtra(out, time);
  return out.done();
}

function dataDescriptor(crc: number, size: number, zip64: boolean): Uint8Array {
  if (zip64) return new Bytes(24).u32(SIG_DESCRIPTOR).u32(crc).u64(size).u64(size).done();
  return new Bytes(16).u32(SIG_DESCRIPTOR).u32(crc).u32(size).u32(size).done();
}

function centralHeader(
  entry: { name: Uint8Array; time: ZipTime; crc: number; size: number; offset: number },
  sizeLimit: number,
): Uint8Array {
  const bigSize = entry.size >= sizeLimit;
  const bigOffset = entry.offset >= sizeLimit;
  // The ZIP64 extra holds, in this order, only the values whose header field is 0xFFFFFFFF.
  const wide = [...(bigSize ? [entry.size, entry.size] : []), ...(bigOffset ? [entry.offset] : [])];
  const zip64Length = wide.length === 0 ? 0 : 4 + 8 * wide.length;
  const out = new Bytes(46 + entry.name.length + 9 + zip64Length);
  out.u32(SIG_CENTRAL).u16(MADE_BY).u16(wide.length > 0 ? VERSION_45 : VERSION_20).u16(FLAGS).u16(0);
  out.u16(entry.time.dosTime).u16(entry.time.dosDate).u32(entry.crc);
  out.u32(bigSize ? MAX_U32 : entry.size).u32(bigSize ? MAX_U32 : entry.size);
  out.u16(entry.name.length).u16(9 + zip64Length).u16(0); // name, extra and comment lengths
  out.u16(0).u16(0).u32(EXTERNAL_ATTRIBUTES); // disk, internal attributes, external attributes
  out.u32(bigOffset ? MAX_U32 : entry.offset).raw(entry.name);
  timestampExtra(out, entry.time);
  if (zip64Length > 0) {
    out.u16(EXTRA_ZIP64).u16(8 * wide.length);
    for (const value of wide) out.u64(value);
  }
  return out.done();
}

function endRecords(
  end: { count: number; centralOffset: number; centralSize: number; sizeLimit: number; countLimit: number },
): Uint8Array {
  const bigCount = end.count >= end.countLimit;
  const bigSize = end.centralSize >= end.sizeLimit;
  const bigOffset = end.centralOffset >= end.sizeLimit;
  const zip64 = bigCount || bigSize || bigOffset;
  const out = new Bytes((zip64 ? 56 + 20 : 0) + 22);
  if (zip64) {
    const recordOffset = end.centralOffset + end.centralSize;
    out.u32(SIG_END64).u64(44).u16(MADE_BY).u16(VERSION_45).u32(0).u32(0); // size of the rest, versions, disks
    out.u64(end.count).u64(end.count).u64(end.centralSize).u64(end.centralOffset);
    out.u32(SIG_END64_LOCATOR).u32(0).u64(recordOffset).u32(1);
  }
  const count = bigCount ? MAX_U16 : end.count;
  out.u32(SIG_END).u16(0).u16(0).u16(count).u16(count);
  out.u32(bigSize ? MAX_U32 : end.centralSize).u32(bigOffset ? MAX_U32 : end.centralOffset).u16(0);
  return out.done();
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\.|$)/i;

/**
 * A name safe to extract anywhere: one file name, never a path. Control and format characters (bidi overrides,
 * zero-width characters), line separators and unpaired surrogates are removed; `/`, `\` and the characters
 * Windows refuses (`<>:"|?*`) become `_`; runs of dots become one dot, so no `..` is left; dots and spaces at
 * either end are removed (no hidden files; Windows drops trailing ones); a Windows device name (`CON`, `nul.mp3`)
 * gets a leading `_`; the result is NFC and at most 255 bytes of UTF-8 (its extension kept). An empty result is
 * `fallback`.
 */
export function zipEntryName(raw: string, fallback = "file"): string {
  let name = raw.normalize("NFC")
    .replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu, "")
    .replace(/[/\\<>:"|?*]/g, "_")
    .replace(/\.{2,}/g, ".")
    .replace(/^[\s.]+|[\s.]+$/gu, "");
  if (name === "") name = fallback;
  if (WINDOWS_DEVICE.test(name)) name = `_${name}`;
  return limitFilename(name).replace(/[\s.]+$/u, "") || fallback;
}

/**
 * Hands out names unique in one archive, compared as Windows and macOS do (case-insensitively): a taken name gets
 * " (2)", " (3)", ... before its extension.
 */
export class UniqueNames {
  readonly #taken = new Set<string>();
  /** For each name asked for more than once, the suffix number to try next. */
  readonly #next = new Map<string, number>();

  /** `name`, or the first free `name (n).ext`, now taken. */
  take(name: string): string {
    const key = name.toLowerCase();
    if (!this.#taken.has(key)) {
      this.#taken.add(key);
      return name;
    }
    const dot = name.lastIndexOf(".");
    const hasExtension = dot > 0 && name.length - dot <= 16;
    const stem = hasExtension ? name.slice(0, dot) : name;
    const extension = hasExtension ? name.slice(dot) : "";
    for (let n = this.#next.get(key) ?? 2;; n++) {
      const tail = ` (${n})${extension}`;
      const candidate = limitFilename(stem, 255 - new TextEncoder().encode(tail).length) + tail;
      if (!this.#taken.has(candidate.toLowerCase())) {
        this.#next.set(key, n + 1);
        this.#taken.add(candidate.toLowerCase());
        return candidate;
      }
    }
  }
}

/** CRC-32 (IEEE 802.3, as ZIP, gzip and PNG use) lookup tables for slicing by 8 bytes. */
const CRC_TABLES = (() => {
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/**
 * The CRC-32 of `data`, continuing from `crc` (the CRC of the bytes before it; 0 to start). Table-driven, eight
 * bytes a step.
 */
export function crc32(data: Uint8Array, crc = 0): number {
  const t = CRC_TABLES;
  let c = ~crc;
  let i = 0;
  const end = data.length - 8;
  for (; i <= end; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = t[1792 + (c & 0xff)] ^ t[1536 + ((c >>> 8) & 0xff)] ^ t[1280 + ((c >>> 16) & 0xff)] ^
      t[1024 + (c >>> 24)] ^ t[768 + data[i + 4]] ^ t[512 + data[i + 5]] ^ t[256 + data[i + 6]] ^
      t[data[i + 7]];
  }
  for (; i < data.length; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
