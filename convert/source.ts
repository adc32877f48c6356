/**
 * Where a conversion reads its input: a local file, or a URL of the store that serves byte ranges (a presigned
 * GET), which FFmpeg reads as it converts instead of after a whole download. This file says how each kind is given
 * to FFmpeg, which of FFmpeg's failures mean the storage read broke rather than the file, and how our own checks
 * read a few bytes at a given position of either kind.
 */
import { resolve } from "node:path";
import { AppError } from "@vmp3/shared";

/** Whether `source` is a URL read over HTTP(S) rather than a local file. */
export function isUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

/** A file path made absolute; a URL as it is. */
export function resolveSource(source: string): string {
  return isUrl(source) ? source : resolve(source);
}

/**
 * The input options that let FFmpeg read `source` and nothing else: only the file protocol for a file (named
 * `file:<path>`, so that no name is ever read as a protocol); for a URL, only its own scheme's protocols, with
 * reconnects through short network faults and a cap on a stalled read. The demuxer allowlist (never playlists or
 * file lists) keeps any other URL from being opened.
 */
export function sourceOptions(source: string): { options: string[]; input: string } {
  if (!isUrl(source)) return { options: ["-protocol_whitelist", "file"], input: `file:${source}` };
  return {
    options: [
      "-protocol_whitelist",
      /^https:/i.test(source) ? "https,tls,tcp" : "http,tcp",
      "-reconnect",
      "1",
      "-reconnect_on_network_error",
      "1",
      "-reconnect_delay_max",
      "4",
      "-rw_timeout",
      String(READ_STALL_US),
    ],
    input: source,
  };
}

/** How long one read of a URL may stall before FFmpeg gives up on it (µs). */
const READ_STALL_US = 30_000_000;

/** What FFmpeg writes when reading a URL failed: the network or the store, not the file. */
const READ_FAILURE =
  /Connection refused|Connection reset|Connection timed out|Operation timed out|Server returned [45]\d\d|Server returned [45]XX|HTTP error [45]\d\d|Stream ends prematurely|Failed to reconnect|Will reconnect at|Broken pipe|No route to host|Network is unreachable|Input\/output error/i;

/** Whether FFmpeg's log says that it could not read `source` because a URL read broke. */
export function sourceReadFailed(source: string, log: string): boolean {
  return isUrl(source) && READ_FAILURE.test(log);
}

/**
 * Throws a passing failure (service_unavailable) when FFmpeg's log shows that reading `source` broke, whatever
 * its exit code: FFmpeg 5.1 takes a broken read for the end of the input, so a run can exit 0 with an output
 * cut short. The caller then works on a fetched copy. `log` may be raw: the URL is hidden here.
 */
export function throwIfSourceReadFailed(source: string, log: string, name: string): void {
  if (!sourceReadFailed(source, log)) return;
  const shown = hideSource(log, source, name);
  const last = shown.split("\n").map((line) => line.trim()).filter(Boolean).at(-1) ?? "";
  throw new AppError(
    "service_unavailable",
    `Reading "${name}" from storage failed (${last.replace(/^\[[^\]]*\]\s*/, "").slice(0, 200)})`,
    { cause: new Error(shown) },
  );
}

/** `log` with the source shown as `name`: a URL carries a signature that must not reach a client. */
export function hideSource(log: string, source: string, name: string): string {
  let text = log;
  if (isUrl(source)) {
    text = text.replaceAll(source, name);
    const withoutQuery = source.split("?")[0];
    text = text.replaceAll(withoutQuery, name).replace(/X-Amz-[A-Za-z-]+=[^&\s'"]*/g, "");
  }
  return text;
}

/** Reads bytes of an input at any position. */
export interface SourceReader {
  /** The input's length in bytes. */
  size: number;
  /** Up to `length` bytes from `at`; fewer only at the end. */
  readAt(at: number, length: number): Promise<Uint8Array>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A reader of `source`. A URL is read in blocks of `blockBytes` by range requests, the last blocks kept, so that
 * walking a file's box headers costs a few requests, not one per header; each block fails after `readTimeoutMs`
 * (default 30 s, FFmpeg's own stall cap).
 */
export async function openSource(
  source: string,
  options: { blockBytes?: number; signal?: AbortSignal; readTimeoutMs?: number } = {},
): Promise<SourceReader> {
  if (!isUrl(source)) return await openFile(source);
  const blockBytes = options.blockBytes ?? 256 * 1024;
  const readTimeoutMs = options.readTimeoutMs ?? READ_STALL_US / 1000;
  const blocks = new Map<number, Uint8Array>();
  const fetchBlock = async (index: number): Promise<{ bytes: Uint8Array; total: number }> => {
    const start = index * blockBytes;
    // The body's read is covered too: a store that stalls fails the read, it never hangs the probe.
    const signal = options.signal
      ? AbortSignal.any([options.signal, AbortSignal.timeout(readTimeoutMs)])
      : AbortSignal.timeout(readTimeoutMs);
    const response = await fetch(source, {
      headers: { range: `bytes=${start}-${start + blockBytes - 1}` },
      signal,
    }).catch((error) => {
      if (options.signal?.aborted) throw error;
      // The store cannot be reached; the message must not carry the URL's signature into the logs.
      const why = hideSource(String(error?.message ?? error), source, "the input");
      throw new Error(`Reading the input from storage failed: ${why}`);
    });
    if (response.status === 416) {
      await response.body?.cancel();
      return {
        bytes: new Uint8Array(0),
        total: rangeTotal(response) ?? start,
      };
    }
    if (response.status !== 206 && response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`Reading the input from storage failed: HTTP ${response.status}`);
    }
    if (response.status === 200) {
      // The store ignored the range and sends the whole object: keep the block, drop the rest unread.
      const length = Number(response.headers.get("content-length"));
      const bytes = await readSpan(response.body!, start, start + blockBytes);
      return { bytes, total: Number.isFinite(length) && length > 0 ? length : start + bytes.length };
    }
    const whole = new Uint8Array(
      await response.arrayBuffer().catch((error) => {
        if (options.signal?.aborted) throw error;
        throw new Error(`Reading the input from storage failed: ${error?.name ?? "the body broke off"}`);
      }),
    );
    return { bytes: whole, total: rangeTotal(response) ?? start + whole.length };
  };
  const first = await fetchBlock(0);
  blocks.set(0, first.bytes);
  const block = async (index: number): Promise<Uint8Array> => {
    let bytes = blocks.get(index);
    if (!bytes) {
      bytes = (await fetchBlock(index)).bytes;
      if (blocks.size >= 8) blocks.delete(blocks.keys().next().value!);
      blocks.set(index, bytes);
    }
    return bytes;
  };
  return {
    size: first.total,
    async readAt(at, length) {
      const end = Math.min(at + length, first.total);
      if (at >= end) return new Uint8Array(0);
      const out = new Uint8Array(end - at);
      for (let pos = at; pos < end;) {
        const index = Math.floor(pos / blockBytes);
        const bytes = await block(index);
        const from = pos - index * blockBytes;
        const take = Math.min(bytes.length - from, end - pos);
        if (take <= 0) return out.subarray(0, pos - at);
        out.set(bytes.subarray(from, from + take), pos - at);
        pos += take;
      }
      return out;
    },
    [Symbol.asyncDispose]() {
      blocks.clear();
      return Promise.resolve();
    },
  };
}

async function openFile(path: string): Promise<SourceReader> {
  const file = await Deno.open(path, { read: true });
  const { size } = await file.stat();
  return {
    size,
    async readAt(at, length) {
      await file.seek(at, Deno.SeekMode.Start);
      const buffer = new Uint8Array(Math.max(0, Math.min(length, size - at)));
      let filled = 0;
      while (filled < buffer.length) {
        const n = await file.read(buffer.subarray(filled));
        if (n === null) break;
        filled += n;
      }
      return buffer.subarray(0, filled);
    },
    [Symbol.asyncDispose]() {
      file.close();
      return Promise.resolve();
    },
  };
}

/** The object's whole length as a range answer's Content-Range gives it (the N of "bytes a-b/N"). */
function rangeTotal(response: Response): number | undefined {
  const total = /\/(\d+)$/.exec(response.headers.get("content-range") ?? "")?.[1];
  return total === undefined ? undefined : Number(total);
}

/** The bytes of `body` from `start` to `end` (or its end), reading no further and cancelling the rest. */
async function readSpan(body: ReadableStream<Uint8Array>, start: number, end: number): Promise<Uint8Array> {
  const out = new Uint8Array(end - start);
  let filled = 0;
  let at = 0;
  const reader = body.getReader();
  try {
    while (at < end) {
      const { value, done } = await reader.read();
      if (done) break;
      const from = Math.max(start - at, 0);
      const to = Math.min(value.length, end - at);
      if (to > from) {
        out.set(value.subarray(from, to), filled);
        filled += to - from;
      }
      at += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return out.subarray(0, filled);
}
