import assert from "node:assert/strict";
import { Hono } from "hono";
import { cors } from "./cors.ts";

function app(): Hono {
  return new Hono()
    .use("*", cors())
    .options("/v1/uploads", (c) => c.body(null, 204, { "tus-version": "1.0.0" }))
    .get("/relayed", () => fetchLike())
    .get("/plain", (c) => c.json({ ok: true }, 200, { location: "/x" }));
}

/** An answer with immutable headers, as fetch gives. */
function fetchLike(): Response {
  const response = Response.redirect("http://example.com/", 302);
  assert.throws(() => response.headers.set("x", "y"));
  return response;
}

Deno.test("a browser's preflight is answered with the methods and headers tus and the API need", async () => {
  const res = await app().request("/v1/jobs", {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example",
      "access-control-request-method": "PATCH",
      "access-control-request-headers": "authorization, upload-offset",
    },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  assert.match(res.headers.get("access-control-allow-methods") ?? "", /PATCH/);
  for (
    const name of ["authorization", "upload-offset", "tus-resumable", "idempotency-key", "last-event-id"]
  ) {
    assert.match(res.headers.get("access-control-allow-headers") ?? "", new RegExp(name));
  }
});

Deno.test("a tus OPTIONS that is not a preflight reaches the tus endpoint, with CORS headers added", async () => {
  const res = await app().request("/v1/uploads", {
    method: "OPTIONS",
    headers: { origin: "https://app.example" },
  });
  assert.equal(res.headers.get("tus-version"), "1.0.0");
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
});

Deno.test("answers expose Location, tus and RateLimit headers, relayed answers too; no Origin, no CORS", async () => {
  for (const path of ["/plain", "/relayed"]) {
    const res = await app().request(path, { headers: { origin: "https://app.example" } });
    assert.equal(res.headers.get("access-control-allow-origin"), "*", path);
    for (const name of ["location", "upload-offset", "ratelimit-remaining", "vmp3-job-id", "retry-after"]) {
      assert.match(res.headers.get("access-control-expose-headers") ?? "", new RegExp(name), path);
    }
    await res.body?.cancel();
  }
  const plain = await app().request("/plain");
  assert.equal(plain.headers.get("access-control-allow-origin"), null);
});
