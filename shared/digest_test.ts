import assert from "node:assert/strict";
import { sha256Tap } from "./digest.ts";

Deno.test("sha256Tap passes bytes through unchanged and hashes all of them, across chunk boundaries", async () => {
  const bytes = crypto.getRandomValues(new Uint8Array(50_000));
  const tap = sha256Tap();
  assert.throws(() => tap.digest(), /not ended/);
  const chunks = [bytes.subarray(0, 1), bytes.subarray(1, 30_000), bytes.subarray(30_000)];
  const out = new Uint8Array(
    await new Response(ReadableStream.from(chunks).pipeThrough(tap.stream)).arrayBuffer(),
  );
  assert.deepEqual(out, bytes);
  const expected = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  assert.equal(tap.digest(), expected);
});

Deno.test("sha256Tap of nothing is the sha256 of the empty string", async () => {
  const tap = sha256Tap();
  await new Response(ReadableStream.from([]).pipeThrough(tap.stream)).arrayBuffer();
  assert.equal(tap.digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});
