import assert from "node:assert/strict";
import { AppError, parseCidrList } from "@vmp3/shared";
import { createPublicHttp, parsePublicUrl, publicFetcher, type PublicHttpOptions } from "./public_http.ts";
import {
  lengthResponse,
  redirectResponse,
  startCanary,
  startRawServer,
  writeAll,
} from "./testing/raw_http.ts";
import { TEST_CA_CERT, TEST_SERVER_CERT, TEST_SERVER_KEY } from "./testing/test_tls.ts";

const LOCAL = parseCidrList("127.0.0.1/32");

/** Asserts that `promise` rejects with an AppError of `code` whose message matches `message`. */
async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof AppError, `not an AppError: ${error}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

const text = (body: ReadableStream<Uint8Array>) => new Response(body).text();

/** A resolver for made-up names (no network in tests); counts its lookups. */
function fakeDns(names: Record<string, string[] | (() => string[])>) {
  const lookups: string[] = [];
  const resolve: PublicHttpOptions["resolve"] = (hostname) => {
    lookups.push(hostname);
    const entry = names[hostname];
    if (!entry) return Promise.reject(new Deno.errors.NotFound(`no records for ${hostname}`));
    return Promise.resolve(typeof entry === "function" ? entry() : entry);
  };
  return { resolve, lookups };
}

Deno.test("parsePublicUrl refuses other schemes, user info and literal private hosts, as WHATWG URL reads them", () => {
  const refused = [
    "file:///etc/passwd",
    "ftp://example.com/a.mp4",
    "gopher://example.com/",
    "data:video/mp4;base64,AAAA",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "not a url",
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://media.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
  ];
  for (const url of refused) {
    assert.throws(
      () => parsePublicUrl(url),
      (e) => e instanceof AppError && e.code === "url_not_allowed",
      url,
    );
  }
  assert.throws(() => parsePublicUrl("http://10.1.2.3/"), /private address/);
  assert.equal(parsePublicUrl("https://example.com:8443/a.mp4?x=1").port, "8443");
  assert.equal(parsePublicUrl("http://8.8.8.8/").hostname, "8.8.8.8");
  assert.equal(parsePublicUrl("http://127.0.0.1:9/", LOCAL).port, "9");
});

Deno.test("a name is refused when any address it resolves to is not public, and nothing is contacted", async () => {
  const canary = startCanary();
  try {
    const { resolve } = fakeDns({
      "evil.test": ["127.0.0.1"],
      "mixed.test": ["127.0.0.1", "10.0.0.1"],
      "mapped.test": ["::ffff:127.0.0.1"],
    });
    // 127.0.0.1 is allowed, but mixed.test also resolves to a private address.
    const http = createPublicHttp({ resolve, allow: LOCAL });
    await rejectsWith(
      http.request(`http://mixed.test:${canary.port}/`),
      "url_not_allowed",
      /private address/,
    );
    const strict = createPublicHttp({ resolve });
    await rejectsWith(strict.request(`http://evil.test:${canary.port}/`), "url_not_allowed", /loopback/);
    await rejectsWith(strict.request(`http://mapped.test:${canary.port}/`), "url_not_allowed", /loopback/);
    await rejectsWith(strict.request(`http://missing.test:${canary.port}/`), "url_fetch_failed", /resolved/);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(canary.hits, 0);
  } finally {
    canary.close();
  }
});

Deno.test("the name is resolved once per request and the vetted address is the one connected to", async () => {
  const server = startRawServer("127.0.0.1", (_, conn) => writeAll(conn, lengthResponse("vetted")));
  try {
    let calls = 0;
    // A rebinding name: public-looking (allowed) first, the metadata address after.
    const { resolve, lookups } = fakeDns({
      "rebind.test": () => (calls++ === 0 ? ["127.0.0.1"] : ["169.254.169.254"]),
    });
    const http = createPublicHttp({ resolve, allow: LOCAL });
    const response = await http.request(`http://rebind.test:${server.port}/clip.mp4`);
    assert.equal(await text(response.body), "vetted");
    assert.deepEqual(lookups, ["rebind.test"]);
    assert.equal(server.requests[0].headers.get("host"), `rebind.test:${server.port}`);
    assert.equal(server.requests[0].target, "/clip.mp4");
  } finally {
    server.close();
  }
});

Deno.test("a redirect to a blocked address is refused without contacting it", async () => {
  const canary = startCanary("127.0.0.1");
  // The redirector is on 127.0.0.2, the only address allowed.
  const redirector = startRawServer(
    "127.0.0.2",
    (_, conn) => writeAll(conn, redirectResponse(`http://127.0.0.1:${canary.port}/`)),
  );
  try {
    const http = createPublicHttp({ allow: parseCidrList("127.0.0.2/32") });
    await rejectsWith(
      http.request(`${redirector.origin}/start`),
      "url_not_allowed",
      /redirects to one that cannot be fetched: .*loopback/,
    );
    assert.equal(redirector.hits, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(canary.hits, 0);
  } finally {
    canary.close();
    redirector.close();
  }
});

Deno.test("redirects are followed within the limit, each hop checked, and 303 turns a POST into a GET", async () => {
  const server = startRawServer("127.0.0.1", async (request, conn) => {
    const hop = Number(/\/hop\/(\d+)/.exec(request.target)?.[1] ?? -1);
    if (request.target === "/see-other") return await writeAll(conn, redirectResponse("/hop/5", 303));
    if (request.target === "/bad-location") return await writeAll(conn, redirectResponse("http://[oops/"));
    if (hop >= 0 && hop < 9) {
      return await writeAll(conn, redirectResponse(`/hop/${hop + 1}`, 301 + (hop % 2)));
    }
    await writeAll(conn, lengthResponse(`${request.method} ${request.target}`));
  });
  try {
    const http = createPublicHttp({ allow: LOCAL });
    const followed = await http.request(`${server.origin}/hop/4`);
    assert.equal(await text(followed.body), "GET /hop/9");
    assert.equal(followed.url, `${server.origin}/hop/9`);
    await rejectsWith(http.request(`${server.origin}/hop/0`), "url_fetch_failed", /more than 5/);
    await rejectsWith(http.request(`${server.origin}/bad-location`), "url_fetch_failed", /invalid location/);
    const posted = await http.request(`${server.origin}/see-other`, { method: "POST", body: "{}" });
    assert.equal(await text(posted.body), "GET /hop/9");
    const manual = await http.request(`${server.origin}/hop/8`, { redirect: "manual" });
    await manual.body.cancel();
    assert.equal(manual.status, 301);
    assert.equal(manual.headers.get("location"), "/hop/9");
  } finally {
    server.close();
  }
});

Deno.test("bodies framed by Content-Length, chunked encoding and the end of the connection are read whole", async () => {
  const big = "x".repeat(200_000);
  const server = startRawServer("127.0.0.1", async (request, conn) => {
    if (request.target === "/length") return await writeAll(conn, lengthResponse(big));
    if (request.target === "/chunked") {
      await writeAll(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
      for (const piece of ["hello", " ", "chunked ", "world"]) {
        await writeAll(conn, `${piece.length.toString(16)};ext=1\r\n${piece}\r\n`);
        await new Promise((r) => setTimeout(r, 5));
      }
      return await writeAll(conn, "0\r\nX-Trailer: t\r\n\r\n");
    }
    if (request.target === "/close") {
      return await writeAll(conn, `HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n\r\n${big}`);
    }
    if (request.target === "/continue") {
      return await writeAll(
        conn,
        `HTTP/1.1 100 Continue\r\n\r\n${new TextDecoder().decode(lengthResponse("ok"))}`,
      );
    }
    if (request.target === "/short") {
      return await writeAll(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
    }
    if (request.target === "/garbage") return await writeAll(conn, "SSH-2.0-OpenSSH\r\n\r\n");
    await writeAll(conn, lengthResponse("missing", {}, 404));
  });
  try {
    const http = createPublicHttp({ allow: LOCAL });
    const length = await http.request(`${server.origin}/length`);
    assert.equal(length.contentLength, big.length);
    assert.equal(await text(length.body), big);
    assert.equal(await text((await http.request(`${server.origin}/chunked`)).body), "hello chunked world");
    const close = await http.request(`${server.origin}/close`);
    assert.equal(close.headers.get("content-type"), "video/mp4");
    assert.equal(await text(close.body), big);
    assert.equal(await text((await http.request(`${server.origin}/continue`)).body), "ok");
    const missing = await http.request(`${server.origin}/nothing`);
    assert.equal(missing.status, 404);
    assert.equal(await text(missing.body), "missing");
    const short = await http.request(`${server.origin}/short`);
    await rejectsWith(text(short.body), "url_fetch_failed", /before the whole body/);
    await rejectsWith(http.request(`${server.origin}/garbage`), "url_fetch_failed", /HTTP\/1\.1/);
  } finally {
    server.close();
  }
});

Deno.test("a POST carries its body and headers, and the client's own headers cannot be overridden", async () => {
  const server = startRawServer(
    "127.0.0.1",
    (request, conn) => writeAll(conn, lengthResponse(new TextDecoder().decode(request.body), {}, 500)),
  );
  try {
    const http = createPublicHttp({ allow: LOCAL });
    const response = await http.request(`${server.origin}/hook?x=1`, {
      method: "POST",
      headers: { "content-type": "application/json", "webhook-id": "msg_1", host: "evil.example" },
      body: '{"type":"job.done"}',
    });
    assert.equal(response.status, 500);
    assert.equal(await text(response.body), '{"type":"job.done"}');
    const [request] = server.requests;
    assert.equal(request.method, "POST");
    assert.equal(request.target, "/hook?x=1");
    assert.equal(request.headers.get("host"), `127.0.0.1:${server.port}`);
    assert.equal(request.headers.get("webhook-id"), "msg_1");
    assert.equal(request.headers.get("content-length"), "19");
    assert.equal(request.headers.get("connection"), "close");
  } finally {
    server.close();
  }
});

Deno.test("a body over maxBytes fails with payload_too_large: at once from Content-Length, else while streaming", async () => {
  const server = startRawServer("127.0.0.1", async (request, conn) => {
    if (request.target === "/declared") return await writeAll(conn, lengthResponse("y".repeat(5000)));
    await writeAll(conn, `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n`);
    for (let i = 0; i < 10; i++) await writeAll(conn, `3e8\r\n${"z".repeat(1000)}\r\n`);
    await writeAll(conn, "0\r\n\r\n");
  });
  try {
    const http = createPublicHttp({ allow: LOCAL });
    await rejectsWith(http.request(`${server.origin}/declared`, { maxBytes: 4999 }), "payload_too_large");
    const chunked = await http.request(`${server.origin}/chunked`, { maxBytes: 4999 });
    await rejectsWith(text(chunked.body), "payload_too_large", /4999 bytes/);
    const exact = await http.request(`${server.origin}/declared`, { maxBytes: 5000 });
    assert.equal((await text(exact.body)).length, 5000);
  } finally {
    server.close();
  }
});

Deno.test("a server that stalls, answers too late or takes too long in all is cut off with url_fetch_failed", async () => {
  const hang = Promise.withResolvers<void>();
  const server = startRawServer("127.0.0.1", async (request, conn) => {
    if (request.target === "/stall") {
      await writeAll(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
    } else if (request.target === "/trickle") {
      await writeAll(conn, "HTTP/1.1 200 OK\r\n\r\n");
      for (let i = 0; i < 40; i++) {
        await writeAll(conn, "a");
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    await hang.promise; // "/silent" never answers
  });
  try {
    const http = createPublicHttp({
      allow: LOCAL,
      stallTimeoutMs: 300,
      firstByteTimeoutMs: 200,
      totalTimeoutMs: 1000,
    });
    let started = Date.now();
    await rejectsWith(http.request(`${server.origin}/silent`), "url_fetch_failed", /did not start answering/);
    assert.ok(Date.now() - started < 1000);
    started = Date.now();
    const stalled = await http.request(`${server.origin}/stall`);
    await rejectsWith(text(stalled.body), "url_fetch_failed", /sent nothing for 0\.3 s/);
    assert.ok(Date.now() - started < 1000);
    // Each byte comes before the stall limit, but the whole takes longer than the total limit.
    const trickle = await http.request(`${server.origin}/trickle`);
    await rejectsWith(text(trickle.body), "url_fetch_failed", /longer than 1 s/);
  } finally {
    hang.resolve();
    server.close();
  }
});

Deno.test("a request is cancelled by its signal, and a refused connection is url_fetch_failed", async () => {
  const hang = Promise.withResolvers<void>();
  const server = startRawServer("127.0.0.1", async (_, conn) => {
    await writeAll(conn, "HTTP/1.1 200 OK\r\n\r\nstart");
    await hang.promise;
  });
  try {
    const http = createPublicHttp({ allow: LOCAL });
    const controller = new AbortController();
    const response = await http.request(server.origin, { signal: controller.signal });
    const reader = response.body.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "start");
    const pending = reader.read();
    controller.abort(new Error("client gone"));
    await assert.rejects(pending, /client gone/);

    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    await rejectsWith(http.request(`http://127.0.0.1:${port}/`), "url_fetch_failed", /Could not connect/);
  } finally {
    hang.resolve();
    server.close();
  }
});

Deno.test("https: TLS runs on the vetted socket for the URL's own name, and an untrusted certificate fails", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: TEST_SERVER_CERT, key: TEST_SERVER_KEY, onListen: () => {} },
    (request) => new Response(`secure ${new URL(request.url).host}`),
  );
  try {
    const port = server.addr.port;
    const { resolve } = fakeDns({ "media.test": ["127.0.0.1"], "other.test": ["127.0.0.1"] });
    const trusting = createPublicHttp({ allow: LOCAL, resolve, caCerts: [TEST_CA_CERT] });
    const response = await trusting.request(`https://media.test:${port}/clip.mp4`);
    assert.equal(await text(response.body), `secure media.test:${port}`);
    const byAddress = await trusting.request(`https://127.0.0.1:${port}/`);
    assert.equal(byAddress.status, 200);
    await byAddress.body.cancel();
    // The certificate does not name other.test, though the address is the same.
    await rejectsWith(trusting.request(`https://other.test:${port}/`), "url_fetch_failed", /TLS failed/);
    const untrusting = createPublicHttp({ allow: LOCAL, resolve });
    await rejectsWith(untrusting.request(`https://media.test:${port}/`), "url_fetch_failed", /TLS failed/);
  } finally {
    await server.shutdown();
  }
});

Deno.test("an allowed IPv6 literal is reached, its Host header bracketed", async () => {
  const server = Deno.serve(
    { hostname: "::1", port: 0, onListen: () => {} },
    (request) => new Response(`host ${request.headers.get("host")}`),
  );
  try {
    const http = createPublicHttp({ allow: parseCidrList("::1/128") });
    const response = await http.request(`http://[::1]:${server.addr.port}/`);
    assert.equal(await text(response.body), `host [::1]:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
});

Deno.test("publicFetcher passes a webhook receiver's answer on, a body-less 204 included, and refuses private hosts", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = await request.text();
    if (request.headers.get("x-want") === "204") return new Response(null, { status: 204 });
    return new Response(`got ${request.method} ${body}`, { status: 202 });
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/hook`;
    const fetcher = publicFetcher(createPublicHttp({ allow: LOCAL }));
    const noContent = await fetcher(
      new Request(url, { method: "POST", body: "{}", headers: { "x-want": "204" } }),
    );
    assert.deepEqual([noContent.status, noContent.body], [204, null]);
    const accepted = await fetcher(new Request(url, { method: "POST", body: '{"a":1}' }));
    assert.deepEqual([accepted.status, await accepted.text()], [202, 'got POST {"a":1}']);
    const strict = publicFetcher(createPublicHttp());
    const refused = await Promise.resolve(strict(new Request(url, { method: "POST", body: "{}" }))).then(
      () => null,
      (error) => error,
    );
    assert.ok(refused instanceof AppError && refused.code === "url_not_allowed", String(refused));
  } finally {
    await server.shutdown();
  }
});
