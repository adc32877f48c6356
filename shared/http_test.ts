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

const utf8 = (text: string) => new TextEncoder().encode(text).length;

Deno.test("displayFilename removes NUL, CR, LF, other controls, bidi and zero-width marks and lone surrogates", () => {
  assert.deepEqual(displayFilename("a\u0000b\r\nc\td\u007f\u0085e.mp4"), "abcde.mp4");
  assert.deepEqual(displayFilename("my\u202Ekcod.exe"), "mykcod.exe");
  assert.deepEqual(displayFilename("\u200Bx\u200E\u2066y\uFEFF.mp4"), "xy.mp4");
  assert.deepEqual(displayFilename("x\uD800y.mp4"), "xy.mp4");
  assert.deepEqual(displayFilename("line\u2028para\u2029.mp4"), "linepara.mp4");
});

Deno.test("displayFilename keeps quotes, percent signs and semicolons, drops paths, and falls back for dots only", () => {
  assert.deepEqual(displayFilename(`say "hi"; 100% 'live'.mp4`), `say "hi"; 100% 'live'.mp4`);
  assert.deepEqual(displayFilename("..\\..\\windows\\clip.mp4"), "clip.mp4");
  assert.deepEqual(displayFilename("../.."), "upload");
  assert.deepEqual(displayFilename(".."), "upload");
  assert.deepEqual(displayFilename("clip/"), "upload");
  assert.deepEqual(displayFilename(" \u0000 "), "upload");
});

Deno.test("displayFilename cuts a name over 255 bytes of UTF-8 between characters and keeps its extension", () => {
  const long = displayFilename(`${"x".repeat(10_000)}.mp4`);
  assert.deepEqual([utf8(long), long.endsWith(".mp4")], [255, true]);
  const accents = displayFilename(`${"é".repeat(5_000)}.webm`); // 2 bytes each: 125 fit before ".webm"
  assert.deepEqual(accents, `${"é".repeat(125)}.webm`);
  const combining = displayFilename(`${"e\u0301".repeat(200)}.mp4`); // 3 bytes a character: e + U+0301
  assert.deepEqual(combining, `${"e\u0301".repeat(83)}.mp4`, "an accent is never cut from its letter");
  const emoji = displayFilename("🎵".repeat(100)); // 4 bytes each, no extension
  assert.deepEqual(emoji, "🎵".repeat(63));
  const noExtension = displayFilename(`${"y".repeat(300)}.${"z".repeat(40)}`); // too long to be an extension
  assert.deepEqual(noExtension, "y".repeat(255));
});

Deno.test("mp3Filename stays within 255 bytes of UTF-8", () => {
  const name = mp3Filename(displayFilename(`${"x".repeat(300)}.m`));
  assert.deepEqual([utf8(name), name.endsWith(".mp3")], [255, true]);
});

Deno.test("contentDisposition cannot be used to inject a header or a parameter, and its filename* round-trips", () => {
  for (
    const name of ["a\r\nSet-Cookie: x=1.mp3", 'q"; filename="evil.exe.mp3', "back\\slash.mp3", "é\u202E.mp3"]
  ) {
    const value = contentDisposition(name);
    assert.doesNotMatch(value, /\p{Cc}/u);
    new Headers({ "content-disposition": value }); // a valid header value
    const match = /^attachment; filename="([^"\\]*)"; filename\*=UTF-8''([A-Za-z0-9!\-._~%]+)$/.exec(value);
    assert.ok(match, value);
    assert.deepEqual(decodeURIComponent(match[2]), name);
  }
  assert.match(contentDisposition("x\uD800.mp3"), /filename\*=UTF-8''x%EF%BF%BD\.mp3$/);
});
