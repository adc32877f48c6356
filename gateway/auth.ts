/**
 * Who is calling: the Gateway's middleware that turns `Authorization: Bearer <token>` into the caller's key (one
 * call to Metadata, which also counts the request against the key's rate limit), sets the RateLimit headers, and
 * refuses a request past the limit with 429 and Retry-After. Where the API runs open (embedded dev mode), a
 * request without a token is let in as nobody's; a token given is still checked.
 */
import type { MiddlewareHandler } from "hono";
import { AppError, errorResponse } from "@vmp3/shared";
import type { MetadataClient, PublicJob, Scope } from "@vmp3/metadata";

/** Whether a request needs an API key. */
export type AuthMode = "required" | "open";

/** What the auth middleware puts on the context. */
export interface AuthVariables {
  /** The caller's scope: its key id, or `{}` for a caller without one (open mode). */
  scope: Scope;
  /**
   * The job a status read asks for (see `jobOf`), read in the same call to Metadata as the caller's key: null if
   * there is none in the caller's scope; unset if it was not read with the key.
   */
  job?: PublicJob | null;
}

/**
 * The middleware, for the routes that need a caller. `skip` lets a request through unchecked (signed links).
 * `jobOf` names the job a request reads (a status read), which is then read with the caller's key in one call to
 * Metadata instead of two (where the client can: `MetadataClient.authenticateJob`).
 */
export function authenticate(
  metadata: MetadataClient,
  mode: AuthMode,
  skip?: (request: Request) => boolean | Promise<boolean>,
  jobOf?: (request: Request) => string | undefined,
): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const header = c.req.header("authorization");
    if (header === undefined) {
      if (mode === "required" && !(await skip?.(c.req.raw))) {
        return errorResponse("unauthorized", "Give an API key: Authorization: Bearer <key>", {
          "www-authenticate": 'Bearer realm="vmp3"',
        });
      }
      c.set("scope", {});
      return await next();
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    // A 401 always names the scheme (RFC 9110 §11.6.1), and says the token was refused (RFC 6750 §3).
    const refused = (message: string) =>
      errorResponse("unauthorized", message, {
        "www-authenticate": 'Bearer realm="vmp3", error="invalid_token"',
      });
    if (!match) return refused("The Authorization header must read: Bearer <key>");
    let checked: Awaited<ReturnType<MetadataClient["authenticate"]>> & { job?: PublicJob | null };
    const jobId = metadata.authenticateJob ? jobOf?.(c.req.raw) : undefined;
    try {
      checked = jobId === undefined
        ? await metadata.authenticate(match[1])
        : await metadata.authenticateJob!(match[1], jobId);
    } catch (error) {
      if (error instanceof AppError && error.code === "unauthorized") return refused(error.message);
      throw error;
    }
    const { key, rate } = checked;
    const headers = {
      "ratelimit-limit": String(rate.limit),
      "ratelimit-remaining": String(rate.remaining),
      "ratelimit-reset": String(rate.resetSeconds),
      "ratelimit-policy": `${rate.limit};w=60`,
    };
    if (!rate.allowed) {
      return errorResponse(
        "rate_limited",
        `This key may make ${rate.limit} requests a minute; try again in ${rate.resetSeconds} s`,
        { ...headers, "retry-after": String(rate.resetSeconds) },
      );
    }
    c.set("scope", { owner: key.id });
    if (jobId !== undefined) c.set("job", checked.job ?? null);
    await next();
    const setHeaders = () => {
      for (const [name, value] of Object.entries(headers)) c.res.headers.set(name, value);
    };
    try {
      setHeaders();
    } catch {
      // An answer relayed from another service over HTTP (fetch's answers have immutable headers): the same
      // answer, its body still streaming, with headers of its own.
      c.res = new Response(c.res.body, c.res);
      setHeaders();
    }
  };
}
