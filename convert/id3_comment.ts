/**
 * Writes the comment of an MP3 as an ID3 COMM frame. ffmpeg's MP3 muxer has no COMM mapping: it writes
 * `-metadata comment=…` as a user-defined TXXX frame, which iTunes, Windows and most players do not show.
 */

/** A COMM frame (language "und", empty description) for an ID3v2.`version` tag. */
export function commFrame(text: string, version: 3 | 4): Uint8Array {
  // v2.3 knows no UTF-8: UTF-16 with a byte order mark; v2.4 takes UTF-8.
  const body = version === 4
    ? concat([new Uint8Array([0x03]), ascii("und"), new Uint8Array([0x00]), new TextEncoder().encode(text)])
    : concat([new Uint8Array([0x01]), ascii("und"), utf16(""), new Uint8Array([0, 0]), utf16(text)]);
  const size = version === 4 ? syncsafe(body.length) : bigEndian(body.length);
  return concat([ascii("COMM"), size, new Uint8Array([0, 0]), body]);
}

/**
 * Adds a COMM frame with `text` to the ID3v2 tag at the start of the MP3 at `path` (rewritten in place, by way of
 * a temporary file beside it). Throws if the file does not start with a plain ID3v2.3/2.4 tag.
 */
export async function addComment(path: string, text: string): Promise<void> {
  using source = await Deno.open(path, { read: true });
  const header = new Uint8Array(10);
  if ((await source.read(header)) !== 10 || ascii("ID3").some((b, i) => header[i] !== b)) {
    throw new Error("addComment: the MP3 has no ID3v2 tag");
  }
  const version = header[3];
  // Unsynchronisation, an extended header or a footer would need more care; ffmpeg writes none of them.
  if ((version !== 3 && version !== 4) || (header[5] & 0xf0) !== 0) {
    throw new Error(`addComment: unexpected ID3v2.${version} tag flags ${header[5]}`);
  }
  const frame = commFrame(text, version);
  const size = ((header[6] & 0x7f) << 21) | ((header[7] & 0x7f) << 14) | ((header[8] & 0x7f) << 7) |
    (header[9] & 0x7f);
  const head = concat([header.subarray(0, 6), syncsafe(size + frame.length), frame]);
  const temporary = `${path}.comm`;
  try {
    using target = await Deno.open(temporary, { write: true, createNew: true });
    await writeAll(target, head);
    await source.seek(10, Deno.SeekMode.Start);
    await source.readable.pipeTo(target.writable, { preventClose: true });
    await target.sync();
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
  await Deno.rename(temporary, path);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/** UTF-16LE with its byte order mark. */
function utf16(text: string): Uint8Array {
  const out = new Uint8Array(2 + text.length * 2);
  out.set([0xff, 0xfe]);
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    out[2 + i * 2] = unit & 0xff;
    out[3 + i * 2] = unit >> 8;
  }
  return out;
}

function syncsafe(n: number): Uint8Array {
  if (n >= 1 << 28) throw new Error("ID3v2: a size past 256 MiB");
  return new Uint8Array([(n >> 21) & 0x7f, (n >> 14) & 0x7f, (n >> 7) & 0x7f, n & 0x7f]);
}

function bigEndian(n: number): Uint8Array {
  return new Uint8Array([(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
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
