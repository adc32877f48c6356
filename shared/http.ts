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

/**
 * A filename safe to show: no control, bidi or format characters, no path, at most 255 characters.
 * Filenames are display data only; storage never uses them.
 */
export function displayFilename(raw: string | undefined | null, fallback = "upload"): string {
  const base = (raw ?? "").split(/[\\/]/).pop() ?? "";
  const clean = base.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, "").trim();
  return [...(clean || fallback)].slice(0, 255).join("");
}

/** The name of the MP3 made from `filename`: its extension replaced by `.mp3`. */
export function mp3Filename(filename: string): string {
  const dot = filename.lastIndexOf(".");
  const stem = dot > 0 ? filename.slice(0, dot) : filename;
  return `${stem || "audio"}.mp3`;
}

/** A Content-Disposition: attachment with an ASCII fallback and a UTF-8 `filename*` (RFC 6266). */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\%]/g, "_").trim() || "download";
  const encoded = encodeURIComponent(filename).replace(
    /['()*]/g,
    (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}
