import assert from "node:assert/strict";
import { AppError, type ErrorCode, errorResponse } from "@vmp3/shared";
import {
  filenameFromDisposition,
  multipartFilename,
  receiveUpload,
  stallGuard,
  type StallLimit,
} from "./receive.ts";

/** Receives `request`, reading its file to the end; the file's name, type and bytes, and the form's fields. */
async function receive(request: Request, stall?: Partial<StallLimit>) {
  const { result, fields } = await receiveUpload(request, async (file) => ({
    filename: file.filename,
    contentType: file.contentType,
    bytes: new Uint8Array(await new Response(file.stream).arrayBuffer()),
  }), { maxBytes: 1_000_000, stall });
  return { ...result, fields };
}

/** Asserts that `promise` rejects within 5 s with an AppError of `code` whose message matches `message`. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<AppError> {
  const error = await Promise.race([
    promise.then(() => assert.fail(`expected ${code}, but it resolved`), (e: unknown) => e),
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`no answer in 5 s (expected ${code})`)), 5000)
    ),
  ]);
  assert.ok(error instanceof AppError, `expected AppError ${code}, got ${error}`);
  assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  return error;
}

/** Hostile client file names and what is shown of them. */
const NAMES: [string, string][] = [
  ["../../etc/passwd.mp4", "passwd.mp4"],
  ["a\u0000b.mp4", "ab.mp4"],
  ["evil\u202Egpj.mp4", "evilgpj.mp4"],
  [`say "hi" 'there'; 100%.mp4`, `say "hi" 'there'; 100%.mp4`],
  ["back\\slash.mp4", "slash.mp4"],
  ["cr\r\nlf.mp4", "crlf.mp4"],
  [`${"x".repeat(10_000)}.mp4`, `${"x".repeat(251)}.mp4`],
  ["été ☃.mp4", "été ☃.mp4"],
];

const raw = (query: string, headers: Record<string, string> = {}) =>
  new Request(`http://upload/uploads${query}`, {
    method: "POST",
    headers: { "content-type": "video/mp4", ...headers },
    body: new Uint8Array([1, 2, 3]),
  });

Deno.test("a raw upload named by ?filename= shows a harmless name", async () => {
  for (const [name, shown] of NAMES) {
    const got = await receive(raw(`?filename=${encodeURIComponent(name)}`));
    assert.deepEqual([got.filename, got.bytes.length], [shown, 3], JSON.stringify(name));
  }
});

Deno.test("a raw upload named by Content-Disposition filename* shows a harmless name", async () => {
  for (const [name, shown] of NAMES) {
    const header = `attachment; filename="fallback.mp4"; filename*=UTF-8''${encodeURIComponent(name)}`;
    const got = await receive(raw("", { "content-disposition": header }));
    assert.deepEqual(got.filename, shown, JSON.stringify(name));
  }
});

Deno.test("filenameFromDisposition reads filename* (UTF-8, ISO-8859-1, a language), quoted escapes and raw UTF-8", () => {
  assert.deepEqual(filenameFromDisposition(`attachment; filename*=UTF-8'fr'%C3%A9t%C3%A9.mp4`), "été.mp4");
  assert.deepEqual(filenameFromDisposition(`attachment; filename*=iso-8859-1''%E9t%E9.mp4`), "été.mp4");
  assert.deepEqual(
    filenameFromDisposition(`attachment; filename="say \\"hi\\" \\\\o/.mp4"`),
    `say "hi" \\o/.mp4`,
  );
  // fetch hands header bytes over as characters 0-255: raw UTF-8 "été" arrives as "Ã©tÃ©".
  assert.deepEqual(
    filenameFromDisposition(`attachment; filename="\u00c3\u00a9t\u00c3\u00a9.mp4"`),
    "été.mp4",
  );
  assert.deepEqual(
    filenameFromDisposition(`attachment; filename="\u00e9t\u00e9.mp4"`),
    "été.mp4",
    "ISO-8859-1",
  );
  assert.deepEqual(filenameFromDisposition(`attachment; filename=clip.mp4`), "clip.mp4");
  assert.deepEqual(
    filenameFromDisposition(`attachment; xfilename="bad.mp4"; filename="good.mp4"`),
    "good.mp4",
  );
  assert.deepEqual(
    filenameFromDisposition(`attachment; filename*=UTF-8''%FF.mp4; filename="ok.mp4"`),
    "ok.mp4",
  );
  assert.deepEqual(filenameFromDisposition("attachment"), undefined);
});

Deno.test("a multipart upload shows a harmless name, with the quotes and line breaks browsers write as %22 %0D %0A", async () => {
  for (const [name, shown] of NAMES.filter(([name]) => !name.includes("\u0000"))) {
    const form = new FormData();
    form.append("file", new File([new Uint8Array([1, 2, 3])], name));
    const got = await receive(new Request("http://upload/uploads", { method: "POST", body: form }));
    assert.deepEqual([got.filename, got.bytes.length], [shown, 3], JSON.stringify(name));
  }
  assert.deepEqual(multipartFilename("a%22b%0d%0Ac%41.mp4"), 'a"b\r\nc%41.mp4');
});

Deno.test("a raw NUL in a multipart header is a malformed body (fetch sends one as is; browsers never do)", async () => {
  const form = new FormData();
  form.append("file", new File([new Uint8Array([1, 2, 3])], "a\u0000b.mp4"));
  await rejectsWith(
    receive(new Request("http://upload/uploads", { method: "POST", body: form })),
    "invalid_request",
    /malformed/,
  );
});

/** A multipart request of `body` (a string, sent as is) with `boundary`. */
const multipart = (body: string, contentType = "multipart/form-data; boundary=XX") =>
  new Request("http://upload/uploads", { method: "POST", headers: { "content-type": contentType }, body });

const part = (name: string, value: string, filename?: string) =>
  `--XX\r\nContent-Disposition: form-data; name="${name}"${
    filename ? `; filename="${filename}"` : ""
  }\r\n\r\n` +
  `${value}\r\n`;

Deno.test("a form with fields before and after the file gives them all", async () => {
  const got = await receive(
    multipart(part("bitrate", "128") + part("file", "abc", "a.mp4") + part("title", "T") + "--XX--\r\n"),
  );
  assert.deepEqual([got.filename, new TextDecoder().decode(got.bytes)], ["a.mp4", "abc"]);
  assert.deepEqual(got.fields, { bitrate: "128", title: "T" });
});

Deno.test("malformed multipart bodies answer invalid_request, never hang", async () => {
  const cases: [string, Request, RegExp][] = [
    ["no boundary", multipart(part("file", "abc", "a.mp4"), "multipart/form-data"), /no valid boundary/],
    ["not multipart at all", multipart("just some bytes, no boundary in sight"), /malformed|no file field/],
    [
      "cut off in the file",
      multipart(`--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\nabc`),
      /malformed|cut off/,
    ],
    [
      "cut off in a part header",
      multipart(`--XX\r\nContent-Disposition: form-da`),
      /malformed|cut off|no file/,
    ],
    ["no file field", multipart(part("bitrate", "128") + "--XX--\r\n"), /no file field/],
    ["the file under another name", multipart(part("video", "abc", "a.mp4") + "--XX--\r\n"), /no file field/],
    [
      "two files",
      multipart(part("file", "abc", "a.mp4") + part("file", "def", "b.mp4") + "--XX--\r\n"),
      /more than one file/,
    ],
    [
      "a file and another file field",
      multipart(part("file", "abc", "a.mp4") + part("cover", "def", "b.jpg") + "--XX--\r\n"),
      /more than one file/,
    ],
    [
      "a part header line of 64 KiB",
      multipart(
        `--XX\r\nContent-Disposition: form-data; name="file"; filename="${
          "x".repeat(65536)
        }"\r\n\r\nabc\r\n--XX--\r\n`,
      ),
      /malformed/,
    ],
    [
      "a field of 5000 bytes",
      multipart(part("title", "t".repeat(5000)) + part("file", "abc", "a.mp4") + "--XX--\r\n"),
      /too long/,
    ],
    [
      "40 fields",
      multipart(
        Array.from({ length: 40 }, (_, i) => part(`f${i}`, "v")).join("") + part("file", "abc", "a.mp4") +
          "--XX--\r\n",
      ),
      /too many fields/,
    ],
  ];
  for (const [label, request, message] of cases) {
    const error = await rejectsWith(receive(request), "invalid_request", message).catch((e) => {
      throw new Error(`${label}: ${e.message}`);
    });
    assert.equal(error.status, 400, label);
  }
});

Deno.test("a body that is neither a form nor video, audio or octet-stream is 415; no body is 400", async () => {
  for (
    const type of [
      "text/plain",
      "application/json",
      "multipart/mixed; boundary=XX",
      "text/html; charset=utf-8",
    ]
  ) {
    await rejectsWith(
      receive(multipart("abc", type)),
      "unsupported_media_type",
      /not (text|application|multipart)\//,
    );
  }
  await rejectsWith(
    receive(new Request("http://upload/uploads", { method: "POST" })),
    "invalid_request",
    /no body/,
  );
});

/** A body that sends `chunks` (each after `everyMs`), then stays open sending nothing until cancelled. */
function trickle(chunks: Uint8Array[], everyMs: number, then: "stall" | "end" = "stall") {
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = chunks.shift();
      if (chunk === undefined) {
        if (then === "end") controller.close();
        return new Promise(() => {}); // never more
      }
      await new Promise((r) => setTimeout(r, everyMs));
      controller.enqueue(chunk);
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

Deno.test("stallGuard fails a body that stops sending with request_timeout, and cancels it", async () => {
  const body = trickle([new Uint8Array(10)], 0);
  const guard = stallGuard(body.stream, { timeoutMs: 200, minBytes: 1 });
  const started = Date.now();
  await rejectsWith(
    new Response(guard.stream).arrayBuffer(),
    "request_timeout",
    /less than 1 bytes in 0.2 s/,
  );
  assert.ok(Date.now() - started >= 190 && Date.now() - started < 1000, `after ${Date.now() - started} ms`);
  assert.ok(guard.timedOut() && body.cancelled());
});

Deno.test("stallGuard fails a body that trickles too few bytes, however steadily", async () => {
  // One byte every 20 ms (the "1 byte a second" attack, sped up): 15 bytes in each 300 ms, 100 needed.
  const body = trickle(Array.from({ length: 1000 }, () => new Uint8Array(1)), 20);
  const guard = stallGuard(body.stream, { timeoutMs: 300, minBytes: 100 });
  const started = Date.now();
  await rejectsWith(new Response(guard.stream).arrayBuffer(), "request_timeout");
  assert.ok(Date.now() - started < 1000, `after ${Date.now() - started} ms`);
});

Deno.test("stallGuard passes a slow but sufficient body, and never counts a slow reader against the client", async () => {
  const steady = trickle(Array.from({ length: 12 }, () => new Uint8Array(100)), 50, "end");
  const guarded = stallGuard(steady.stream, { timeoutMs: 300, minBytes: 100 });
  assert.equal((await new Response(guarded.stream).arrayBuffer()).byteLength, 1200);

  const ready = ReadableStream.from([new Uint8Array(10), new Uint8Array(10), new Uint8Array(10)]);
  const slowReader = stallGuard(ready, { timeoutMs: 100, minBytes: 1000 });
  let total = 0;
  for await (const chunk of slowReader.stream) {
    total += chunk.length;
    await new Promise((r) => setTimeout(r, 250)); // storage taking its time
  }
  assert.equal(total, 30);
  assert.equal(slowReader.timedOut(), false);
});

/** Sends `head` over a raw TCP connection, then one body byte every `everyMs`; resolves with the first answer. */
async function slowRequest(port: number, head: string, everyMs: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(head));
  let open = true;
  const writing = (async () => {
    while (open) {
      await new Promise((r) => setTimeout(r, everyMs));
      if (open) await conn.write(new Uint8Array([0x30])).catch(() => (open = false));
    }
  })();
  const buffer = new Uint8Array(4096);
  const n = await conn.read(buffer);
  open = false;
  await writing;
  conn.close();
  return new TextDecoder().decode(buffer.subarray(0, n ?? 0));
}

Deno.test("over HTTP, a client sending its body a byte at a time gets 408 request_timeout; others are served meanwhile", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    try {
      // The slow client is cut off after 2.5 s: well after the normal upload must be done (2 s), so that one served
      // only once the slow one ended would fail, yet loose enough for a loaded machine.
      const got = await receive(request, { timeoutMs: 2500, minBytes: 1024 });
      return Response.json({ filename: got.filename, size: got.bytes.length });
    } catch (error) {
      if (error instanceof AppError) return errorResponse(error.code, error.message);
      throw error;
    }
  });
  try {
    const { port } = server.addr;
    const started = Date.now();
    const slow = slowRequest(
      port,
      "POST /uploads?filename=slow.mp4 HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 100000\r\n\r\n",
      50,
    );
    const normal = await fetch(`http://127.0.0.1:${port}/uploads?filename=ok.mp4`, {
      method: "POST",
      headers: { "content-type": "video/mp4" },
      body: new Uint8Array(5000),
    });
    assert.deepEqual(await normal.json(), { filename: "ok.mp4", size: 5000 });
    const normalMs = Date.now() - started;
    assert.ok(normalMs < 2000, `the normal upload waited for the slow one: ${normalMs} ms`);
    const answer = await slow;
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /"code":"request_timeout"/);
    assert.ok(Date.now() - started < 8000, `cut off after ${Date.now() - started} ms`);
  } finally {
    await server.shutdown();
  }
});
