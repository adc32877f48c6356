/** A file served over HTTP with byte ranges, as a store serves a presigned GET; it can be told to fail. */

/** A running range server. */
export interface RangeServer {
  /** The file's URL, with a query like a presigned URL's (its "signature" must never reach a client). */
  url: string;
  /** How many requests it has answered. */
  requests: number;
  /** While true, every request gets 503. */
  failing: boolean;
  /** When set, every answer's body breaks off (the connection is cut) once this many bytes of the file are sent. */
  breakAfter?: number;
  /** While true, a Range header is ignored: the whole file is sent with 200, as a store without ranges would. */
  ignoreRanges: boolean;
  close(): Promise<void>;
}

/** Serves `path` on a free loopback port: `Range: bytes=a-b` gets 206 with Content-Range, else 200. */
export function startRangeServer(path: string): RangeServer {
  const state: { requests: number; failing: boolean; ignoreRanges: boolean; breakAfter?: number } = {
    requests: 0,
    failing: false,
    ignoreRanges: false,
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    state.requests++;
    if (state.failing) return new Response("SlowDown", { status: 503 });
    const file = await Deno.open(path, { read: true });
    const { size } = await file.stat();
    const range = state.ignoreRanges ? null : /^bytes=(\d+)-(\d*)$/.exec(request.headers.get("range") ?? "");
    if (!range) {
      return new Response(file.readable, {
        headers: { "content-length": String(size), "accept-ranges": "bytes" },
      });
    }
    const start = Number(range[1]);
    const end = Math.min(range[2] ? Number(range[2]) : size - 1, size - 1);
    if (start >= size) {
      file.close();
      return new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } });
    }
    if (state.breakAfter !== undefined && start >= state.breakAfter) {
      file.close();
      return new Response("SlowDown", { status: 503 });
    }
    await file.seek(start, Deno.SeekMode.Start);
    let left = end - start + 1;
    let at = start;
    const body = file.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          if (left <= 0) return;
          let part = chunk.subarray(0, left);
          const cut = state.breakAfter !== undefined && at + part.length > state.breakAfter;
          if (cut) part = part.subarray(0, Math.max(0, state.breakAfter! - at));
          left -= part.length;
          at += part.length;
          if (part.length) controller.enqueue(part);
          if (cut) controller.error(new Error("the connection broke off")); // the client sees the body end early
          else if (left <= 0) controller.terminate();
        },
      }),
    );
    return new Response(body, {
      status: 206,
      headers: {
        "content-length": String(end - start + 1),
        "content-range": `bytes ${start}-${end}/${size}`,
        "accept-ranges": "bytes",
      },
    });
  });
  const { port } = server.addr as Deno.NetAddr;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/bucket/input?X-Amz-Signature=secret0123456789&X-Amz-Expires=60`,
    async close() {
      await server.shutdown();
    },
  }) as RangeServer;
}
