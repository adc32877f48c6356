/**
 * @module
 * Test helper: TCP servers that answer HTTP with exactly the bytes a test writes (to control framing: chunked,
 * Content-Length, close-delimited, a stall), and a canary that only counts the connections it gets.
 */

/** A request as the raw server read it. */
export interface RawRequest {
  /** The request line and headers, as text. */
  head: string;
  method: string;
  target: string;
  headers: Headers;
  body: Uint8Array;
}

/** A running raw server. */
export interface RawServer {
  port: number;
  /** `http://host:port`. */
  origin: string;
  /** Connections accepted so far. */
  readonly hits: number;
  /** The requests read so far. */
  readonly requests: RawRequest[];
  close(): void;
}

const encoder = new TextEncoder();

/** Writes all of `data` (text or bytes) to `conn`. */
export async function writeAll(conn: Deno.Conn, data: string | Uint8Array) {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  for (let at = 0; at < bytes.byteLength;) at += await conn.write(bytes.subarray(at));
}

async function readRequest(conn: Deno.Conn): Promise<RawRequest | null> {
  let buffer = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  let end = -1;
  while (end === -1) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const next = new Uint8Array(buffer.byteLength + n);
    next.set(buffer);
    next.set(chunk.subarray(0, n), buffer.byteLength);
    buffer = next;
    end = new TextDecoder().decode(buffer).indexOf("\r\n\r\n");
  }
  const text = new TextDecoder().decode(buffer);
  const head = text.slice(0, end);
  const [requestLine, ...lines] = head.split("\r\n");
  const headers = new Headers();
  for (const line of lines) {
    headers.append(line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim());
  }
  const bodyStart = encoder.encode(text.slice(0, end + 4)).byteLength;
  let body = buffer.subarray(bodyStart);
  const length = Number(headers.get("content-length") ?? 0);
  while (body.byteLength < length) {
    const n = await conn.read(chunk);
    if (n === null) break;
    const next = new Uint8Array(body.byteLength + n);
    next.set(body);
    next.set(chunk.subarray(0, n), body.byteLength);
    body = next;
  }
  const [method, target] = requestLine.split(" ");
  return { head, method, target, headers, body };
}

/**
 * Starts a server on `hostname` that reads each request and hands it to `respond`, which writes the response
 * bytes itself; the connection is closed once `respond` is done.
 */
export function startRawServer(
  hostname: string,
  respond: (request: RawRequest, conn: Deno.Conn) => Promise<void> | void,
): RawServer {
  const listener = Deno.listen({ hostname, port: 0 });
  const conns = new Set<Deno.Conn>();
  const requests: RawRequest[] = [];
  let hits = 0;
  (async () => {
    for await (const conn of listener) {
      hits++;
      conns.add(conn);
      (async () => {
        try {
          const request = await readRequest(conn);
          if (request) {
            requests.push(request);
            await respond(request, conn);
          }
        } catch { /* the client went away */ }
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed already */ }
      })();
    }
  })().catch(() => {});
  const { port } = listener.addr as Deno.NetAddr;
  return {
    port,
    origin: `http://${hostname}:${port}`,
    get hits() {
      return hits;
    },
    requests,
    close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed already */ }
      }
    },
  };
}

/** A listener on `hostname` that counts connections and answers none: nothing must ever reach it. */
export function startCanary(hostname = "127.0.0.1"): RawServer {
  return startRawServer(hostname, () => {});
}

/** A complete response with a Content-Length body. */
export function lengthResponse(
  body: string | Uint8Array,
  headers: Record<string, string> = {},
  status = 200,
) {
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const lines = [`HTTP/1.1 ${status} X`, `Content-Length: ${bytes.byteLength}`, "Connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  const head = encoder.encode(lines.join("\r\n") + "\r\n\r\n");
  const out = new Uint8Array(head.byteLength + bytes.byteLength);
  out.set(head);
  out.set(bytes, head.byteLength);
  return out;
}

/** A redirect response to `location`. */
export function redirectResponse(location: string, status = 302) {
  return `HTTP/1.1 ${status} Moved\r\nLocation: ${location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
}
