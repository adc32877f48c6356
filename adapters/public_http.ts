/**
 * An HTTP(S) client that reaches only public addresses, for URLs a client gives vmp3 (an import, a webhook).
 *
 * The address is checked at connect time, so a name cannot be swapped after the check (DNS rebinding): the client
 * resolves the host itself (A and AAAA), refuses the URL if any address it resolves to is not public (see
 * shared/ip_ranges.ts), connects to a vetted address, does TLS on that socket for the URL's own host name (SNI and
 * certificate check), and speaks HTTP/1.1 itself. Each redirect is checked the same way. Only `http:` and
 * `https:` URLs without user info are fetched, on any port (the address, not the port, is what is protected; a
 * public host's port is its own business).
 *
 * Errors: url_not_allowed (400) for a URL it will not fetch, saying why (the address class, never the address);
 * url_fetch_failed (422) when the host cannot be resolved or reached, TLS fails, the server breaks HTTP, or a time
 * limit passes; payload_too_large (413) past `maxBytes`. A response's status is the caller's to judge.
 */
import {
  addressRefusal,
  AppError,
  type Cidr,
  type Fetcher,
  formatIp,
  type ImportEnv,
  type IpAddress,
  parseIp,
} from "@vmp3/shared";

/** Limits and settings of a {@linkcode PublicHttp}. */
export interface PublicHttpOptions {
  /** Ranges it may reach although they are not public (tests, private deployments); default none. */
  allow?: readonly Cidr[];
  /** Per address tried: name resolution, TCP connect and TLS handshake (default 10 s). */
  connectTimeoutMs?: number;
  /** From the request sent to the response's head received (default 30 s). */
  firstByteTimeoutMs?: number;
  /** The most a whole request may take, redirects and body included (default 10 min). */
  totalTimeoutMs?: number;
  /** The longest wait for the next bytes of a response (default 30 s). */
  stallTimeoutMs?: number;
  /** Redirects followed at most (default 5). */
  maxRedirects?: number;
  /** Resolves a host name to its addresses (default: Deno.resolveDns, A and AAAA). Tests pass their own. */
  resolve?: (hostname: string, signal: AbortSignal) => Promise<string[]>;
  /** Extra trusted CA certificates, PEM (tests with a self-signed server). */
  caCerts?: string[];
  /** The User-Agent header sent (default "vmp3"). */
  userAgent?: string;
}

/** The client's settings from the IMPORT_* variables (see shared/config.ts). */
export function publicHttpSettingsFromEnv(config: ImportEnv): PublicHttpOptions {
  return {
    allow: config.IMPORT_ALLOW_CIDRS,
    totalTimeoutMs: config.IMPORT_TIMEOUT_SECONDS * 1000,
    connectTimeoutMs: config.IMPORT_CONNECT_TIMEOUT_SECONDS * 1000,
    firstByteTimeoutMs: config.IMPORT_FIRST_BYTE_SECONDS * 1000,
    stallTimeoutMs: config.IMPORT_STALL_SECONDS * 1000,
  };
}

/** One request. */
export interface PublicRequestInit {
  /** Default GET. */
  method?: string;
  /** Host, Connection, Content-Length and Transfer-Encoding are the client's own and are ignored here. */
  headers?: HeadersInit;
  body?: string | Uint8Array;
  signal?: AbortSignal;
  /** Response bodies longer than this fail with payload_too_large (default: no cap). */
  maxBytes?: number;
  /** "follow" (default) follows up to `maxRedirects` redirects; "manual" returns them. */
  redirect?: "follow" | "manual";
}

/** A response; its body must be read to the end or cancelled, which frees the connection. */
export interface PublicResponse {
  /** The URL that answered (after redirects). */
  url: string;
  status: number;
  statusText: string;
  headers: Headers;
  /** The body's length, when the server gave one. */
  contentLength?: number;
  body: ReadableStream<Uint8Array>;
}

/** The client. */
export interface PublicHttp {
  /** Sends one request, following redirects; throws AppError url_not_allowed, url_fetch_failed or payload_too_large. */
  request(url: string | URL, init?: PublicRequestInit): Promise<PublicResponse>;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const DEFAULT_PORT: Record<string, number> = { "http:": 80, "https:": 443 };
const MAX_HEAD_BYTES = 64 * 1024;
const MAX_LINE_BYTES = 8 * 1024;
const READ_SIZE = 64 * 1024;
/** Headers the client writes itself. */
const OWN_HEADERS = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "te",
]);

function notAllowed(message: string): AppError {
  return new AppError("url_not_allowed", message);
}

function fetchFailed(message: string, cause?: unknown): AppError {
  return new AppError("url_fetch_failed", message, { cause });
}

/**
 * `text` as a URL vmp3 may try to fetch, judged on its text alone (scheme, user info, a literal address or
 * `localhost`); names are checked again once resolved. Throws AppError url_not_allowed saying why. Hosts are read
 * as WHATWG URL reads them, so `http://2130706433/`, `http://0x7f.1/` and `http://127.1/` are all 127.0.0.1.
 */
export function parsePublicUrl(text: string | URL, allow: readonly Cidr[] = []): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw notAllowed("The URL is not valid");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw notAllowed(`Only http and https URLs can be fetched, not ${url.protocol.slice(0, -1)}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw notAllowed("The URL must not carry a user name or password");
  }
  const host = url.hostname.replace(/\.$/, "").toLowerCase();
  if (host === "") throw notAllowed("The URL has no host");
  const literal = parseIp(host);
  if (literal) {
    const why = addressRefusal(literal, allow);
    if (why) throw notAllowed(`The URL's host is a ${why} address; only public addresses can be fetched`);
  } else if (host === "localhost" || host.endsWith(".localhost")) {
    throw notAllowed("The URL's host is a loopback address; only public addresses can be fetched");
  }
  return url;
}

async function resolveWithDeno(hostname: string, signal: AbortSignal): Promise<string[]> {
  const answers = await Promise.allSettled(
    (["A", "AAAA"] as const).map((type) => Deno.resolveDns(hostname, type, { signal })),
  );
  const addresses = answers.flatMap((a) => a.status === "fulfilled" ? a.value : []);
  const failure = answers.find((a) => a.status === "rejected");
  if (addresses.length === 0 && failure) throw failure.reason;
  return addresses;
}

/** Races `promise` against `ms`; on time out, `onLate` gets the value should it come after all. */
function withTimeout<T>(promise: Promise<T>, ms: number, onLate: (value: T) => void): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  return Promise.race([promise, timeout]).then((result) => {
    if (result === "timeout") promise.then(onLate, () => {});
    return result;
  }).finally(() => clearTimeout(timer));
}

const seconds = (ms: number) => `${Math.round(ms / 100) / 10} s`;

/** Creates a {@linkcode PublicHttp}. */
export function createPublicHttp(options: PublicHttpOptions = {}): PublicHttp {
  const {
    allow = [],
    connectTimeoutMs = 10_000,
    firstByteTimeoutMs = 30_000,
    totalTimeoutMs = 600_000,
    stallTimeoutMs = 30_000,
    maxRedirects = 5,
    resolve = resolveWithDeno,
    caCerts,
    userAgent = "vmp3",
  } = options;

  /** The vetted addresses of `url`'s host; throws url_not_allowed if any is not public. */
  async function addressesOf(url: URL, signal: AbortSignal): Promise<IpAddress[]> {
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const literal = parseIp(host);
    if (literal) return [literal]; // parsePublicUrl vetted it
    let answers: string[];
    try {
      answers = await resolve(host, AbortSignal.any([signal, AbortSignal.timeout(connectTimeoutMs)]));
    } catch (cause) {
      if (cause instanceof Deno.errors.NotCapable) throw cause; // the service's own permissions: not the URL's fault
      throw fetchFailed(`The host name ${url.hostname} could not be resolved`, cause);
    }
    const addresses = answers.map((text) => parseIp(text));
    if (addresses.length === 0 || addresses.some((a) => a === null)) {
      throw fetchFailed(`The host name ${url.hostname} could not be resolved`);
    }
    for (const address of addresses as IpAddress[]) {
      const why = addressRefusal(address, allow);
      if (why) {
        throw notAllowed(
          `The host ${url.hostname} resolves to a ${why} address; only public addresses can be fetched`,
        );
      }
    }
    return addresses as IpAddress[];
  }

  /** A connection to one of `addresses`, TLS done for https. */
  async function connect(url: URL, addresses: IpAddress[], deadline: number): Promise<Deno.Conn> {
    const port = Number(url.port || DEFAULT_PORT[url.protocol]);
    let lastError: unknown;
    for (const address of addresses) {
      const budget = Math.min(connectTimeoutMs, deadline - Date.now());
      if (budget <= 0) break;
      const started = Date.now();
      let conn: Deno.TcpConn;
      try {
        const tcp = await withTimeout(
          Deno.connect({ hostname: formatIp(address), port }),
          budget,
          (late) => late.close(),
        );
        if (tcp === "timeout") {
          lastError = fetchFailed(`Connecting to ${url.host} timed out after ${seconds(budget)}`);
          continue;
        }
        conn = tcp;
      } catch (cause) {
        if (cause instanceof Deno.errors.NotCapable) throw cause;
        lastError = fetchFailed(`Could not connect to ${url.host}`, cause);
        continue;
      }
      if (url.protocol === "http:") return conn;
      // TLS on the vetted socket, checked against the URL's own name (never a second lookup).
      let tls: Deno.TlsConn | undefined;
      try {
        tls = await Deno.startTls(conn, { hostname: url.hostname.replace(/^\[|\]$/g, ""), caCerts });
        const left = budget - (Date.now() - started);
        const done = await withTimeout(tls.handshake(), Math.max(1, left), () => {});
        if (done === "timeout") throw fetchFailed(`The TLS handshake with ${url.host} timed out`);
        return tls;
      } catch (cause) {
        try {
          (tls ?? conn).close();
        } catch { /* already closed */ }
        if (cause instanceof AppError) throw cause;
        throw fetchFailed(
          `A secure connection to ${url.host} could not be made (TLS failed: its certificate is not trusted ` +
            `or not valid for that name)`,
          cause,
        );
      }
    }
    throw lastError ?? fetchFailed(`Fetching ${url.host} took longer than ${seconds(totalTimeoutMs)}`);
  }

  /** One request and its response, on a new connection; no redirects. */
  async function exchange(
    url: URL,
    method: string,
    headers: Headers,
    body: Uint8Array | undefined,
    deadline: number,
    signal: AbortSignal,
    maxBytes: number | undefined,
  ): Promise<PublicResponse> {
    const addresses = await addressesOf(url, signal);
    const conn = await connect(url, addresses, deadline);
    const wire = new Wire(conn, { deadline, stallMs: stallTimeoutMs, signal, totalMs: totalTimeoutMs });
    try {
      const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
      for (const [name, value] of headers) if (!OWN_HEADERS.has(name)) lines.push(`${name}: ${value}`);
      if (body !== undefined || !["GET", "HEAD"].includes(method)) {
        lines.push(`Content-Length: ${body?.byteLength ?? 0}`);
      }
      lines.push("Connection: close", "", "");
      await wire.write(new TextEncoder().encode(lines.join("\r\n")));
      if (body) await wire.write(body);
      wire.firstByteBy = Date.now() + firstByteTimeoutMs;
      const head = await wire.readHead();
      wire.firstByteBy = undefined;
      const framing = bodyFraming(method, head.status, head.headers);
      if (maxBytes !== undefined && framing.kind === "length" && framing.length > maxBytes) {
        throw new AppError("payload_too_large", `The file is larger than the limit of ${maxBytes} bytes`);
      }
      return {
        url: url.href,
        status: head.status,
        statusText: head.statusText,
        headers: head.headers,
        contentLength: framing.kind === "length" ? framing.length : undefined,
        body: wire.body(framing, maxBytes),
      };
    } catch (error) {
      wire.close();
      throw error;
    }
  }

  return {
    async request(input, init = {}) {
      const deadline = Date.now() + totalTimeoutMs;
      const signal = init.signal ?? new AbortController().signal;
      let url = parsePublicUrl(input, allow);
      let method = (init.method ?? "GET").toUpperCase();
      const headers = new Headers(init.headers);
      if (!headers.has("user-agent")) headers.set("user-agent", userAgent);
      if (!headers.has("accept")) headers.set("accept", "*/*");
      // The bytes as stored, never a compressed form of them.
      headers.set("accept-encoding", "identity");
      let body = typeof init.body === "string" ? new TextEncoder().encode(init.body) : init.body;
      for (let hop = 0;; hop++) {
        signal.throwIfAborted();
        const response = await exchange(url, method, headers, body, deadline, signal, init.maxBytes);
        const location = response.headers.get("location");
        if (init.redirect === "manual" || !REDIRECTS.has(response.status) || location === null) {
          return response;
        }
        await response.body.cancel().catch(() => {});
        if (hop >= maxRedirects) throw fetchFailed(`The URL redirects more than ${maxRedirects} times`);
        const target = URL.parse(location, url);
        if (target === null) throw fetchFailed("The URL redirects to an invalid location");
        let next: URL;
        try {
          next = parsePublicUrl(target, allow);
        } catch (error) {
          if (!(error instanceof AppError)) throw error;
          throw new AppError(error.code, `The URL redirects to one that cannot be fetched: ${error.message}`);
        }
        if (response.status === 303 || (response.status <= 302 && method === "POST")) {
          if (method !== "HEAD") method = "GET";
          body = undefined;
          headers.delete("content-type");
        }
        if (next.origin !== url.origin) {
          for (const name of ["authorization", "cookie", "proxy-authorization"]) headers.delete(name);
        }
        url = next;
      }
    },
  };
}

/** How a response body is delimited. */
type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** The time limits of one request, and its caller's signal. */
interface Limits {
  /** When the whole request must be done (ms since the epoch). */
  deadline: number;
  stallMs: number;
  totalMs: number;
  signal: AbortSignal;
}

function bodyFraming(method: string, status: number, headers: Headers): Framing {
  if (method === "HEAD" || status === 204 || status === 304) return { kind: "none" };
  const transfer = headers.get("transfer-encoding");
  if (transfer !== null) {
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; chunked must be the last coding, else the body
    // runs to the end of the connection.
    return /(?:^|,)\s*chunked\s*$/i.test(transfer) ? { kind: "chunked" } : { kind: "close" };
  }
  const length = headers.get("content-length");
  if (length !== null) {
    const values = new Set(length.split(",").map((v) => v.trim()));
    const [only] = values;
    if (values.size !== 1 || !/^\d{1,15}$/.test(only)) {
      throw fetchFailed("The server sent a bad Content-Length");
    }
    return { kind: "length", length: Number(only) };
  }
  return { kind: "close" };
}

/** The socket of one exchange: buffered reads under the time limits, and the response body as a stream. */
class Wire {
  /** Until the response head arrives: when it must have. */
  firstByteBy: number | undefined;
  #conn: Deno.Conn;
  #pending: Uint8Array = new Uint8Array(0);
  #closed = false;
  #limits: Limits;
  #onAbort = () => this.close();

  constructor(conn: Deno.Conn, limits: Limits) {
    this.#conn = conn;
    this.#limits = limits;
    limits.signal.addEventListener("abort", this.#onAbort, { once: true });
    if (limits.signal.aborted) this.close(); // aborted while connecting: the first read or write says so
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#limits.signal.removeEventListener("abort", this.#onAbort);
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  async write(bytes: Uint8Array) {
    for (let at = 0; at < bytes.byteLength;) {
      const wait = this.#wait();
      const written = await this.#guard(this.#conn.write(bytes.subarray(at)), wait);
      at += written;
    }
  }

  /** The next bytes from the socket (buffered ones first), at most `max`; null at the end of the stream. */
  async read(max = READ_SIZE): Promise<Uint8Array | null> {
    if (this.#pending.byteLength === 0) {
      const buffer = new Uint8Array(READ_SIZE);
      const n = await this.#guard(this.#conn.read(buffer), this.#wait());
      if (n === null) return null;
      this.#pending = buffer.subarray(0, n);
    }
    const out = this.#pending.subarray(0, max);
    this.#pending = this.#pending.subarray(out.byteLength);
    return out;
  }

  /** Gives bytes back to be read again. */
  #unread(bytes: Uint8Array) {
    if (bytes.byteLength === 0) return;
    if (this.#pending.byteLength === 0) {
      this.#pending = bytes;
      return;
    }
    const joined = new Uint8Array(bytes.byteLength + this.#pending.byteLength);
    joined.set(bytes);
    joined.set(this.#pending, bytes.byteLength);
    this.#pending = joined;
  }

  /** Reads up to and including the next `\n`, as text (Latin-1); fails past `max` bytes or at the end. */
  async line(max = MAX_LINE_BYTES): Promise<string> {
    const parts: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) throw fetchFailed("The server closed the connection in the middle of its response");
      const end = chunk.indexOf(10);
      const take = end === -1 ? chunk : chunk.subarray(0, end + 1);
      if (end !== -1) this.#unread(chunk.subarray(end + 1));
      parts.push(take);
      size += take.byteLength;
      if (size > max) throw fetchFailed("The server sent a malformed response (a line too long)");
      if (end !== -1) break;
    }
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const p of parts) bytes.set(p, (at += p.byteLength) - p.byteLength);
    return new TextDecoder("latin1").decode(bytes).replace(/\r?\n$/, "");
  }

  /** Reads a response head, skipping informational (1xx) ones. */
  async readHead(): Promise<{ status: number; statusText: string; headers: Headers }> {
    for (;;) {
      let total = 0;
      const statusLine = await this.line();
      total += statusLine.length;
      const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
      if (!match) throw fetchFailed("The server did not answer with HTTP/1.1");
      const headers = new Headers();
      for (;;) {
        const line = await this.line();
        total += line.length;
        if (total > MAX_HEAD_BYTES) {
          throw fetchFailed("The server sent a malformed response (headers too long)");
        }
        if (line === "") break;
        const colon = line.indexOf(":");
        const name = line.slice(0, colon);
        if (colon < 1 || !/^[!#$%&'*+.^`|~\w-]+$/.test(name)) {
          throw fetchFailed("The server sent a malformed response header");
        }
        try {
          headers.append(name, line.slice(colon + 1).trim());
        } catch (cause) {
          throw fetchFailed("The server sent a malformed response header", cause);
        }
      }
      const status = Number(match[1]);
      if (status === 101) throw fetchFailed("The server switched protocols, which was not asked for");
      if (status >= 100 && status < 200) continue;
      return { status, statusText: match[2] ?? "", headers };
    }
  }

  /** The response body, delimited by `framing`, as a stream; the connection closes when it ends or is cancelled. */
  body(framing: Framing, maxBytes: number | undefined): ReadableStream<Uint8Array> {
    let received = 0;
    let left = framing.kind === "length" ? framing.length : 0; // bytes left of the body or of the current chunk
    let lastChunk = false;
    const count = (bytes: Uint8Array) => {
      received += bytes.byteLength;
      if (maxBytes !== undefined && received > maxBytes) {
        throw new AppError("payload_too_large", `The file is larger than the limit of ${maxBytes} bytes`);
      }
      return bytes;
    };
    const cutShort = () => fetchFailed("The server closed the connection before the whole body was sent");
    const next = async (): Promise<Uint8Array | null> => {
      switch (framing.kind) {
        case "none":
          return null;
        case "close":
          return await this.read();
        case "length": {
          if (left === 0) return null;
          const bytes = await this.read(Math.min(left, READ_SIZE));
          if (bytes === null) throw cutShort();
          left -= bytes.byteLength;
          return bytes;
        }
        case "chunked": {
          if (lastChunk) return null;
          if (left === 0) {
            const size = /^([0-9a-f]{1,15})[ \t]*(?:;.*)?$/i.exec(await this.line());
            if (!size) throw fetchFailed("The server sent a malformed chunked body");
            left = parseInt(size[1], 16);
            if (left === 0) {
              while ((await this.line()) !== ""); // trailers, ignored
              lastChunk = true;
              return null;
            }
          }
          const bytes = await this.read(Math.min(left, READ_SIZE));
          if (bytes === null) throw cutShort();
          left -= bytes.byteLength;
          if (left === 0 && (await this.line()) !== "") {
            throw fetchFailed("The server sent a malformed chunked body");
          }
          return bytes;
        }
        default:
          throw new Error(`unknown framing ${framing satisfies never}`);
      }
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const bytes = await next();
          if (bytes === null) {
            this.close();
            controller.close();
          } else controller.enqueue(count(bytes));
        } catch (error) {
          this.close();
          controller.error(error);
        }
      },
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
  }

  /** How long the next socket operation may wait, and what passes if it does not end in time. */
  #wait(): { ms: number; message: string } {
    const now = Date.now();
    const { deadline, stallMs, totalMs } = this.#limits;
    let wait = { ms: stallMs, message: `The server sent nothing for ${seconds(stallMs)}` };
    if (this.firstByteBy !== undefined && this.firstByteBy - now < wait.ms) {
      wait = { ms: this.firstByteBy - now, message: "The server did not start answering in time" };
    }
    if (deadline - now < wait.ms) {
      wait = { ms: deadline - now, message: `Fetching the URL took longer than ${seconds(totalMs)}` };
    }
    return { ms: Math.max(0, wait.ms), message: wait.message };
  }

  /** `operation` on the socket, failed with url_fetch_failed if it takes longer than `wait` or the socket fails. */
  async #guard<T>(operation: Promise<T>, wait: { ms: number; message: string }): Promise<T> {
    let result: T | "timeout";
    try {
      result = await withTimeout(operation, wait.ms, () => {});
    } catch (cause) {
      this.close();
      this.#limits.signal.throwIfAborted();
      throw fetchFailed("The connection to the server failed", cause);
    }
    if (result === "timeout") {
      this.close();
      throw fetchFailed(wait.message);
    }
    return result;
  }
}

/**
 * `http` as a {@linkcode Fetcher}, for code written against fetch (webhook delivery): the request's method,
 * headers and body go out through the public-address checks; redirects are not followed (a webhook answering one
 * has not taken the delivery). A refused address answers as an AppError thrown, like a network failure.
 */
export function publicFetcher(http: PublicHttp): Fetcher {
  return async (request) => {
    const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
    const response = await http.request(request.url, {
      method: request.method,
      headers: request.headers,
      body,
      signal: request.signal,
      redirect: "manual",
    });
    // A Response for a status that has no body (204 No Content, a webhook's usual answer) must be made without one.
    const nullBody = [101, 103, 204, 205, 304].includes(response.status);
    if (nullBody) await response.body.cancel().catch(() => {});
    return new Response(nullBody ? null : response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}
