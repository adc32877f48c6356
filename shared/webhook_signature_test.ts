import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { generateWebhookSecret, signWebhook, verifyWebhook, webhookSecretKey } from "./webhook_signature.ts";

Deno.test("a signed webhook verifies with the standardwebhooks library, and the library's signature with ours", async () => {
  const secret = generateWebhookSecret();
  const body = JSON.stringify({ type: "job.done", timestamp: "2026-01-01T00:00:00.000Z", data: { id: "x" } });
  const headers = await signWebhook(secret, { id: "msg_1", body, now: new Date() });
  assert.match(headers["webhook-signature"], /^v1,[A-Za-z0-9+/]+=*$/);
  assert.deepEqual(new Webhook(secret).verify(body, headers), JSON.parse(body));
  assert.throws(() => new Webhook(secret).verify(body + " ", headers), "a changed body fails");
  assert.throws(() => new Webhook(generateWebhookSecret()).verify(body, headers), "another secret fails");

  const now = new Date();
  const theirs = new Webhook(secret).sign("msg_2", now, body);
  const fromLibrary = new Headers({
    "webhook-id": "msg_2",
    "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
    "webhook-signature": `v1,bogus ${theirs}`,
  });
  assert.equal(await verifyWebhook(secret, fromLibrary, body), true, "any of several signatures");
  assert.equal(await verifyWebhook(secret, fromLibrary, body + "x"), false);
  const later = new Date(now.getTime() + 600_000);
  assert.equal(await verifyWebhook(secret, fromLibrary, body, { now: later }), false, "too old");
});

Deno.test("a webhook secret is whsec_ and at least 16 bytes of base64", async () => {
  assert.equal(webhookSecretKey(generateWebhookSecret())?.length, 32);
  assert.equal(webhookSecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?.length, 24);
  for (const bad of ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_short", "whsec_!!!!", ""]) {
    assert.equal(webhookSecretKey(bad), null, bad);
  }
  await assert.rejects(signWebhook("nope", { id: "m", body: "", now: new Date() }), RangeError);
});
