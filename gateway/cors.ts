/**
 * CORS for browser clients (a web page uploading with tus-js-client or Uppy, following a job's events): any
 * origin may call the API, since every call carries its own API key in a header and no cookie is ever used. A
 * preflight (OPTIONS with Access-Control-Request-Method) is answered here; a tus OPTIONS without it (a client
 * asking what the server supports) goes on to the tus endpoint. Every answer exposes the headers clients read.
 */
import type { MiddlewareHandler } from "hono";

/** Request headers a browser may send. */
const ALLOWED = [
  "authorization",
  "content-type",
  "content-disposition",
  "idempotency-key",
  "last-event-id",
  "tus-resumable",
  "upload-length",
  "upload-metadata",
  "upload-offset",
  "upload-defer-length",
  "upload-concat",
  "x-http-method-override",
];

/** Answer headers a browser's script may read. */
const EXPOSED = [
  "location",
  "content-disposition",
  "idempotent-replayed",
  "retry-after",
  "ratelimit-limit",
  "ratelimit-remaining",
  "ratelimit-reset",
  "ratelimit-policy",
  "x-job-id",
  "vmp3-job-id",
  "tus-resumable",
  "tus-version",
  "tus-extension",
  "tus-max-size",
  "upload-offset",
  "upload-length",
  "upload-metadata",
  "upload-expires",
];

/** The CORS middleware. */
export function cors(): MiddlewareHandler {
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (!origin) return await next();
    if (c.req.method === "OPTIONS" && c.req.header("access-control-request-method")) {
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": "*",
          "access-control-allow-methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
          "access-control-allow-headers": ALLOWED.join(", "),
          "access-control-max-age": "86400",
        },
      });
    }
    await next();
    // Relayed answers (from another service) have immutable headers: answer a copy.
    c.res = new Response(c.res.body, c.res);
    c.res.headers.set("access-control-allow-origin", "*");
    c.res.headers.set("access-control-expose-headers", EXPOSED.join(", "));
  };
}
