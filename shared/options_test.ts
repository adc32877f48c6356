import assert from "node:assert/strict";
import { AppError } from "./errors.ts";
import { cacheKey, canonicalOptions, parseOptions, parseTime } from "./options.ts";

function rejects(raw: Record<string, unknown>, field: string): void {
  try {
    const parsed = parseOptions(raw);
    throw new Error(`${JSON.stringify(raw)} was accepted as ${JSON.stringify(parsed)}`);
  } catch (error) {
    assert(error instanceof AppError && error.code === "invalid_option", String(error));
    assert(error.message.includes(`"${field}"`), `${JSON.stringify(raw)}: ${error.message}`);
    assert.equal(error.status, 400);
  }
}

Deno.test("parseOptions leaves absent options absent (defaults are decided from the source) and drops empty fields", () => {
  assert.deepEqual(parseOptions({}), {});
  assert.deepEqual(parseOptions({ bitrate: "", title: "" }), {});
});

Deno.test("parseOptions reads form strings: bitrate, quality, rate, channels, times, track, flags, tags", () => {
  assert.deepEqual(parseOptions({ bitrate: "320" }), { bitrate: 320 });
  assert.deepEqual(parseOptions({ bitrate: "128k" }), { bitrate: 128 });
  assert.deepEqual(parseOptions({ quality: "V2" }), { quality: 2 });
  assert.deepEqual(parseOptions({ sample_rate: "22050", channels: "1" }), {
    sample_rate: 22050,
    channels: 1,
  });
  assert.deepEqual(parseOptions({ start: "1:30", end: "00:02:00.500" }), { start: 90, end: 120.5 });
  assert.deepEqual(parseOptions({ start: "2.5", duration: "10" }), { start: 2.5, duration: 10 });
  assert.deepEqual(parseOptions({ audio_track: "FRA" }), { audio_track: "fra" });
  assert.deepEqual(parseOptions({ audio_track: "1" }), { audio_track: 1 });
  assert.deepEqual(parseOptions({ normalize: "true" }), { normalize: true });
  assert.deepEqual(parseOptions({ normalize: "false" }), {});
  assert.deepEqual(parseOptions({ loudness: "-14" }), { loudness: -14, normalize: true });
  assert.deepEqual(parseOptions({ loudness: "-23.5" }), { loudness: -23.5, normalize: true });
  assert.deepEqual(parseOptions({ cover: "none" }), { cover: "none" });
  assert.deepEqual(parseOptions({ cover: "12.5" }), { cover: 12.5 });
  assert.deepEqual(
    parseOptions({ title: "Ünïcode \u202eRTL", year: "2024", track: "3/12", id3v2_version: "4" }),
    { title: "Ünïcode \u202eRTL", year: 2024, track: "3/12", id3v2_version: 4 },
  );
});

Deno.test("parseOptions accepts its own output again unchanged (the task carries the parsed form)", () => {
  const once = parseOptions({ bitrate: "128k", start: "0:05", end: "0:09.5", track: "2", cover: "3" });
  assert.deepEqual(parseOptions(once), once);
});

Deno.test("parseOptions rejects bad values with invalid_option naming the field", () => {
  rejects({ bitrate: "16" }, "bitrate");
  rejects({ bitrate: "100" }, "bitrate"); // not an MP3 bitrate
  rejects({ bitrate: "loud" }, "bitrate");
  rejects({ quality: "10" }, "quality");
  rejects({ sample_rate: "96000" }, "sample_rate");
  rejects({ channels: "6" }, "channels");
  rejects({ start: "1:75" }, "start");
  rejects({ duration: "0" }, "duration");
  rejects({ duration: "abc" }, "duration");
  rejects({ audio_track: "french" }, "audio_track");
  rejects({ normalize: "maybe" }, "normalize");
  rejects({ loudness: "0" }, "loudness");
  rejects({ title: "a\u0000b" }, "title");
  rejects({ comment: "x".repeat(1025) }, "comment");
  rejects({ year: "20245" }, "year");
  rejects({ track: "three" }, "track");
  rejects({ id3v2_version: "2" }, "id3v2_version");
  rejects({ cover: "banana" }, "cover");
  // Nothing looser than digits: JavaScript's Number() would read all of these.
  for (const loose of [" ", "0x80", "1e2", "128.0", "+128", "Infinity"]) {
    rejects({ bitrate: loose }, "bitrate");
  }
  rejects({ audio_track: " " }, "audio_track");
  rejects({ year: " " }, "year");
  rejects({ channels: " 1e0" }, "channels");
  rejects({ loudness: "-0x10" }, "loudness");
});

Deno.test("parseOptions leaves out options that equal their default, so equal requests are equal", () => {
  assert.deepEqual(parseOptions({ normalize: "true", loudness: "-16", cover: "auto", id3v2_version: "3" }), {
    normalize: true,
  });
  assert.deepEqual(parseOptions({ loudness: "-16" }), parseOptions({ normalize: "true" }));
});

Deno.test("parseOptions rejects options that contradict each other, naming one of them", () => {
  rejects({ bitrate: "128", quality: "2" }, "quality");
  rejects({ end: "10", duration: "5" }, "duration");
  rejects({ start: "10", end: "5" }, "end");
  rejects({ sample_rate: "8000", bitrate: "128" }, "bitrate");
  rejects({ sample_rate: "22050", bitrate: "192" }, "bitrate");
  rejects({ normalize: "false", loudness: "-14" }, "loudness");
});

Deno.test("parseTime reads seconds and clocks, and nothing else", () => {
  assert.deepEqual(
    ["90", "12.5", "1:30", "01:02:03.500", "0:00:00"].map(parseTime),
    [90, 12.5, 90, 3723.5, 0],
  );
  for (const bad of ["", "1:2:3:4", "-5", "1e3", "0x10", "1:60"]) assert(Number.isNaN(parseTime(bad)), bad);
});

Deno.test("equal options give equal cache keys whatever their order or spelling; different ones differ", async () => {
  const a = parseOptions({ bitrate: "128k", title: "Song" });
  const b = parseOptions({ title: "Song", bitrate: "128" });
  assert.equal(canonicalOptions(a), canonicalOptions(b));
  const sha = "0".repeat(64);
  assert.equal(await cacheKey(sha, a), await cacheKey(sha, b));
  assert.notEqual(await cacheKey(sha, a), await cacheKey("1".repeat(64), a));
  assert.notEqual(await cacheKey(sha, a), await cacheKey(sha, parseOptions({ bitrate: "128" })));
  assert.match(await cacheKey(sha, a), /^[0-9a-f]{64}$/);
});
