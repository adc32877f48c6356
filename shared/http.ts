/** What every vmp3 HTTP service answers alike: error bodies, unknown routes, and download names. */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { AppError, ERROR_STATUS, type ErrorCode } from "./errors.ts";

/** An error response `{"error":{"code","message"}}` with the code's status. */
export function errorResponse(code: ErrorCode, message: string, headers?: HeadersInit): Response {
  return Response.json({ error: { code, message } }, { status: ERROR_STATUS[code], headers });
}

/** Hono's `onError`: AppErrors answer their code; anything else is logged and answers a generic 500. */
export function onError(error: Error, c: Context): Response {
  if (error instanceof AppError) return errorResponse(error.code, error.message);
  if (error instanceof HTTPException) {
    const code: ErrorCode = error.status === 413 ? "payload_too_large" : "invalid_request";
    return errorResponse(code, error.message || "The request is invalid");
  }
  console.error(`${c.req.method} ${c.req.path} failed:`, error);
  return errorResponse("internal", "Something went wrong on our side; the request was not completed");
}

/** Hono's `notFound`: a JSON 404. */
export function onNotFound(c: Context): Response {
  return errorResponse("not_found", `There is no route ${c.req.method} ${c.req.path}`);
}

/** The longest filename shown or sent back, in bytes of UTF-8 (what most file systems take as one name). */
export const FILENAME_MAX_BYTES = 255;

/** The longest ending kept as an extension when a name is cut (".mp4", ".webm", ".matroska"), in bytes. */
const EXTENSION_MAX_BYTES = 16;

/**
 * A filename safe to show and to send back (the job's `input.filename`, the download's Content-Disposition).
 * Filenames are display data only: storage keys are made by the server and never contain them. The rule:
 *
 * 1. Only the part after the last `/` or `\` is kept (clients may send a whole path, Windows ones too).
 * 2. Control characters (C0 such as NUL, TAB, CR, LF; DEL; C1), format characters (bidi controls such as U+202E
 *    RIGHT-TO-LEFT OVERRIDE, zero-width characters), line and paragraph separators and unpaired surrogates are
 *    removed, not replaced; spaces at either end are trimmed.
 * 3. A name left empty, or made only of dots (`.`, `..`), becomes `fallback`.
 * 4. A name over {@linkcode FILENAME_MAX_BYTES} bytes of UTF-8 is cut, between two characters (grapheme clusters),
 *    before its extension, which is kept (`<cut stem>.mp4`).
 *
 * Quotes, `%`, `;` and any other printable character are kept as they are: the places that send the name back
 * escape it ({@linkcode contentDisposition}, JSON).
 */
export function displayFilename(raw: string | undefined | null, fallback = "upload"): string {
  const base = (raw ?? "").split(/[\\/]/).pop() ?? "";
  const clean = base.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu, "").trim();
  return limitFilename(clean === "" || /^\.+$/.test(clean) ? fallback : clean);
}

/**
 * `name` cut to at most `maxBytes` bytes of UTF-8 between grapheme clusters, keeping its extension (the last `.x`
 * of at most 16 bytes, when there is a stem before it).
 */
export function limitFilename(name: string, maxBytes = FILENAME_MAX_BYTES): string {
  if (utf8Length(name) <= maxBytes) return name;
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 && utf8Length(name.slice(dot)) <= EXTENSION_MAX_BYTES ? name.slice(dot) : "";
  const budget = maxBytes - utf8Length(extension);
  let stem = "";
  let used = 0;
  const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });
  for (const { segment } of segmenter.segment(name.slice(0, name.length - extension.length))) {
    const size = utf8Length(segment);
    if (used + size > budget) break;
    stem += segment;
    used += size;
  }
  return stem.trimEnd() + extension;
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

/** The name of the MP3 made from `filename`: its extension replaced by `.mp3`, at most 255 bytes of UTF-8. */
export function mp3Filename(filename: string): string {
  const dot = filename.lastIndexOf(".");
  const stem = dot > 0 ? filename.slice(0, dot) : filename;
  return limitFilename(`${stem || "audio"}.mp3`);
}

/**
 * A Content-Disposition: attachment with an ASCII fallback (`filename`: anything but printable ASCII, and `"`,
 * `\` and `%`, becomes `_`) and the exact name as UTF-8 in `filename*` (RFC 6266, RFC 8187 encoding). No
 * character of `filename` can end the header or the quoted string, or add a parameter: CR and LF become `_` in
 * the fallback, and every character but letters, digits and `!-._~` is percent-encoded in `filename*`.
 */
export function contentDisposition(filename: string): string {
  const wellFormed = filename.replace(/\p{Cs}/gu, "\uFFFD");
  const ascii = wellFormed.replace(/[^\x20-\x7e]|["\\%]/g, "_").trim() || "download";
  const encoded = encodeURIComponent(wellFormed).replace(
    /['()*]/g,
    (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/**
 * The header that carries the caller's API key id from the Gateway to the Upload and Metadata services (empty for a
 * caller without a key, where the API runs open). The Gateway always sets it itself, never passing on a client's.
 */
export const OWNER_HEADER = "x-vmp3-owner";
