import assert from "node:assert/strict";
import { contentDisposition, displayFilename, mp3Filename } from "./http.ts";

Deno.test("displayFilename keeps the name only, without paths, controls, bidi marks or excess length", () => {
  assert.deepEqual(displayFilename("../../etc/passwd"), "passwd");
  assert.deepEqual(displayFilename("C:\\Users\\me\\clip.mp4"), "clip.mp4");
  assert.deepEqual(displayFilename("evil\u202Egpj.mp4"), "evilgpj.mp4");
  assert.deepEqual(displayFilename("a\u0000b\nc.mp4"), "abc.mp4");
  assert.deepEqual(displayFilename(""), "upload");
  assert.deepEqual(displayFilename("x".repeat(10_000)).length, 255);
});

Deno.test("mp3Filename swaps the extension; contentDisposition gives an ASCII fallback and a UTF-8 filename*", () => {
  assert.deepEqual(mp3Filename("clip.final.mp4"), "clip.final.mp3");
  assert.deepEqual(mp3Filename(".hidden"), ".hidden.mp3");
  assert.deepEqual(mp3Filename("noext"), "noext.mp3");
  assert.deepEqual(
    contentDisposition('Björk "live" 100%.mp3'),
    `attachment; filename="Bj_rk _live_ 100_.mp3"; filename*=UTF-8''Bj%C3%B6rk%20%22live%22%20100%25.mp3`,
  );
});
