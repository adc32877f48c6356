import assert from "node:assert/strict";
import { AppError, parseOptions } from "@vmp3/shared";
import {
  autoEncoder,
  defaultSampleRate,
  MAX_CHAPTERS,
  planConversion,
  streamToMeasure,
  survivingChapters,
} from "./plan.ts";
import { type AudioStreamInfo, probeInput, type ProbeResult } from "./probe.ts";
import { makeMedia } from "./testing/media.ts";
import { withDir } from "./testing/helpers.ts";

function stream(overrides: Partial<AudioStreamInfo> = {}): AudioStreamInfo {
  return {
    index: 1,
    codec: "aac",
    channels: 2,
    sampleRate: 44100,
    bitrate: 128_000,
    isDefault: true,
    tags: {},
    ...overrides,
  };
}

/** A probe of a 3 s video with one AAC stream (or the streams given). */
function probe(overrides: Partial<ProbeResult> = {}, audio: AudioStreamInfo[] = [stream()]): ProbeResult {
  return {
    format: "mov,mp4,m4a,3gp,3g2,mj2",
    duration: 3,
    streams: 1 + audio.length,
    audioStreams: audio.length,
    audioCodec: audio[0].codec,
    audio,
    hasVideo: true,
    videoDuration: 3,
    tags: {},
    chapters: 0,
    chapterList: [],
    startTime: 0,
    ...overrides,
  };
}

/** A plain MP3 file's probe. */
function mp3(overrides: Partial<AudioStreamInfo> = {}): ProbeResult {
  const audio = [stream({ index: 0, codec: "mp3", ...overrides })];
  return probe({ format: "mp3", streams: 1, hasVideo: false, videoDuration: undefined }, audio);
}

const plan = (p: ProbeResult, raw: Record<string, string> = {}) => planConversion(p, parseOptions(raw));

function throwsOption(fn: () => unknown, option: string, message?: RegExp): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.code, "invalid_option");
    assert.match(e.message, new RegExp(`"${option}"`));
    if (message) assert.match(e.message, message);
    return true;
  });
}

Deno.test("auto encodes CBR at the largest MP3 bitrate not above the source's, from 32 up to 192", () => {
  const cases: [number, number][] = [
    [128_000, 128],
    [127_000, 112],
    [96_585, 96],
    [64_000, 64],
    [20_000, 32],
    [200_000, 192],
    [255_999, 192],
  ];
  for (const [source, kbps] of cases) {
    assert.deepEqual(autoEncoder(source, "aac", 44100), { mode: "cbr", bitrate: kbps }, `${source}`);
  }
});

Deno.test("auto encodes VBR V2 for 256 kbit/s and higher, and for lossless sources whatever their bitrate", () => {
  for (
    const [bitrate, codec] of [[256_000, "aac"], [1_411_200, "pcm_s16le"], [90_000, "flac"], [
      undefined,
      "flac",
    ]]
  ) {
    assert.deepEqual(autoEncoder(bitrate as number | undefined, codec as string, 44100), {
      mode: "vbr",
      quality: 2,
    });
  }
});

Deno.test("auto falls back to a modest CBR for a lossy source whose bitrate is unknown (the worker measures it first)", () => {
  assert.deepEqual(autoEncoder(undefined, "opus", 48000), { mode: "cbr", bitrate: 128 });
  assert.deepEqual(autoEncoder(undefined, "vorbis", 8000), { mode: "cbr", bitrate: 64 });
});

Deno.test("streamToMeasure names the stream whose bitrate auto needs and nobody states, and only then", async () => {
  await withDir(async (dir) => {
    const probe = await probeInput(await makeMedia(dir, "webm"), { maxDuration: 3600, maxStreams: 16 });
    const opus = probe.audio[0];
    assert.equal(opus.bitrate, undefined, "ffprobe states no bitrate for WebM's Opus");
    assert.equal(streamToMeasure(probe, {}), opus);
    assert.equal(streamToMeasure(probe, { bitrate: 128 }), undefined, "not when a bitrate is given");
    assert.equal(streamToMeasure(probe, { quality: 3 }), undefined, "nor a quality");
    const measured = { ...probe, audio: [{ ...opus, bitrate: 64_000 }] };
    assert.equal(streamToMeasure(measured, {}), undefined, "nor once known");
    assert.deepEqual(planConversion(measured, {}).encoder, { mode: "cbr", bitrate: 64 });
  });
});

Deno.test("auto's CBR stays within what the sample rate allows", () => {
  assert.deepEqual(autoEncoder(192_000, "aac", 22050), { mode: "cbr", bitrate: 160 });
  assert.deepEqual(autoEncoder(192_000, "aac", 8000), { mode: "cbr", bitrate: 64 });
});

Deno.test("auto uses the file's bitrate for a stream without one only when the file holds nothing else", () => {
  const audioOnly = probe({ streams: 1, hasVideo: false, bitrate: 100_000 }, [
    stream({ bitrate: undefined }),
  ]);
  assert.deepEqual(plan(audioOnly).encoder, { mode: "cbr", bitrate: 96 });
  const withVideo = probe({ bitrate: 100_000 }, [stream({ bitrate: undefined })]);
  assert.deepEqual(plan(withVideo).encoder, { mode: "cbr", bitrate: 128 }, "unknown: the modest fallback");
});

Deno.test("bitrate and quality options are used as given", () => {
  assert.deepEqual(plan(probe(), { bitrate: "320" }).encoder, { mode: "cbr", bitrate: 320 });
  assert.deepEqual(plan(probe(), { quality: "V5" }).encoder, { mode: "vbr", quality: 5 });
});

Deno.test("the default sample rate: the source's if an MP3 can have it, else the nearest MP3 rate", () => {
  const cases: [number, number][] = [
    [44100, 44100],
    [48000, 48000],
    [8000, 8000],
    [11025, 11025],
    [96000, 48000],
    [192000, 48000],
    [88200, 44100],
    [176400, 44100],
    [37800, 44100],
    [6000, 8000],
    [0, 44100],
  ];
  for (const [source, expected] of cases) assert.equal(defaultSampleRate(source), expected, `${source}`);
  assert.equal(plan(probe({}, [stream({ sampleRate: 96000 })])).sampleRate, 48000);
  assert.equal(plan(probe({}, [stream({ sampleRate: 96000 })]), { sample_rate: "32000" }).sampleRate, 32000);
});

Deno.test("an explicit bitrate raises a default sample rate too low for it", () => {
  const low = probe({}, [stream({ sampleRate: 8000, channels: 1 })]);
  assert.equal(plan(low, { bitrate: "128" }).sampleRate, 16000, "MPEG-2 goes up to 160 kbit/s");
  assert.equal(plan(low, { bitrate: "192" }).sampleRate, 32000);
  assert.equal(plan(probe({}, [stream({ sampleRate: 8000 })]), { bitrate: "64" }).sampleRate, 8000);
});

Deno.test("channels: the source's up to 2 by default, more downmixed to 2; the option wins", () => {
  assert.equal(plan(probe({}, [stream({ channels: 1 })])).channels, 1);
  assert.equal(plan(probe({}, [stream({ channels: 6 })])).channels, 2);
  assert.equal(plan(probe({}, [stream({ channels: 8 })]), { channels: "1" }).channels, 1);
  assert.equal(plan(probe({}, [stream({ channels: 1 })]), { channels: "2" }).channels, 2);
});

Deno.test("an MP3 source with nothing forcing an encode is copied, trims included", () => {
  assert.equal(plan(mp3()).method, "copy");
  assert.equal(plan(mp3()).encoder, undefined);
  assert.equal(plan(mp3(), { start: "1", end: "2", title: "x", cover: "none" }).method, "copy");
  assert.equal(plan(mp3(), { sample_rate: "44100", channels: "2" }).method, "copy", "the same as the source");
});

Deno.test("an MP3 source is encoded when an option changes its audio", () => {
  const cases: Record<string, string>[] = [
    { bitrate: "128" },
    { quality: "2" },
    { sample_rate: "22050" },
    { channels: "1" },
    { normalize: "true" },
    { loudness: "-20" },
  ];
  for (const raw of cases) {
    const p = plan(mp3(), raw);
    assert.equal(p.method, "encode", JSON.stringify(raw));
    assert.ok(p.encoder, JSON.stringify(raw));
  }
  // Auto re-encoding an MP3 never goes above its bitrate.
  assert.deepEqual(plan(mp3({ bitrate: 128_000 }), { channels: "1" }).encoder, { mode: "cbr", bitrate: 128 });
  assert.equal(plan(probe()).method, "encode", "not an MP3");
});

Deno.test("the default audio stream is the one marked default, else the first", () => {
  const a = stream({ index: 1, isDefault: false, language: "eng" });
  const b = stream({ index: 2, isDefault: true, language: "fra" });
  assert.equal(plan(probe({}, [a, b])).audioStream, 2);
  assert.equal(plan(probe({}, [a, { ...b, isDefault: false }])).audioStream, 1);
  assert.equal(plan(probe({}, [{ ...a, isDefault: true }, b])).audioStream, 1);
});

Deno.test("audio_track picks by index among the audio streams or by language (B or T code)", () => {
  const a = stream({ index: 3, isDefault: true, language: "eng" });
  const b = stream({ index: 5, isDefault: false, language: "fra" });
  const p = probe({ streams: 6 }, [a, b]);
  assert.equal(plan(p, { audio_track: "1" }).audioStream, 5);
  assert.equal(plan(p, { audio_track: "0" }).audioStream, 3);
  assert.equal(plan(p, { audio_track: "fra" }).audioStream, 5);
  assert.equal(plan(p, { audio_track: "FRE" }).audioStream, 5);
});

Deno.test("audio_track that the file lacks is an invalid_option that lists its tracks", () => {
  const p = probe({}, [stream({ index: 1, language: "eng" }), stream({ index: 2, language: "fra" })]);
  throwsOption(() => plan(p, { audio_track: "deu" }), "audio_track", /"deu".*tracks: 0 eng, 1 fra/);
  throwsOption(
    () => plan(p, { audio_track: "2" }),
    "audio_track",
    /no audio track 2 \(tracks: 0 eng, 1 fra\)/,
  );
});

Deno.test("trim: the expected duration is the trimmed length, clipped at the source's end", () => {
  const p = probe({ duration: 10 });
  assert.deepEqual(pick(plan(p, { start: "2", end: "5" })), { start: 2, cut: 3, duration: 3 });
  assert.deepEqual(pick(plan(p, { start: "2", duration: "4" })), { start: 2, cut: 4, duration: 4 });
  assert.deepEqual(pick(plan(p, { start: "8", duration: "4" })), { start: 8, cut: 4, duration: 2 });
  assert.deepEqual(pick(plan(p, { end: "20" })), { start: undefined, cut: 20, duration: 10 });
  assert.deepEqual(pick(plan(p, { start: "4" })), { start: 4, cut: undefined, duration: 6 });
  assert.deepEqual(pick(plan(p)), { start: undefined, cut: undefined, duration: 10 });
  const unknown = probe({ duration: undefined });
  assert.deepEqual(pick(plan(unknown, { start: "1", end: "3" })), { start: 1, cut: 2, duration: 2 });
  assert.deepEqual(pick(plan(unknown)), { start: undefined, cut: undefined, duration: undefined });
});

function pick(p: ReturnType<typeof plan>) {
  return { start: p.start, cut: p.cut, duration: p.duration };
}

Deno.test("start at or past the end is an invalid_option naming start", () => {
  throwsOption(() => plan(probe({ duration: 3 }), { start: "3" }), "start", /3 s, but the file lasts 3 s/);
  throwsOption(() => plan(probe({ duration: 3 }), { start: "1:00" }), "start");
});

Deno.test("tags: the source's title, artist, album and date, overridden by the options; year is the date", () => {
  const source = probe({ tags: { title: "T", artist: "A", album: "B", date: "2019-05-04" } });
  assert.deepEqual(plan(source).tags, { title: "T", artist: "A", album: "B", date: "2019-05-04" });
  assert.deepEqual(
    plan(source, { title: "New", year: "2001", track: "3/12", genre: "Rock", comment: "c" }).tags,
    {
      title: "New",
      artist: "A",
      album: "B",
      date: "2001",
      track: "3/12",
      genre: "Rock",
      comment: "c",
    },
  );
  // Ogg keeps its tags on the stream; the container's win where both have one.
  const ogg = probe({ tags: { album: "Container" } }, [
    stream({ tags: { title: "Stream", album: "Stream" } }),
  ]);
  assert.deepEqual(plan(ogg).tags, { title: "Stream", album: "Container" });
  assert.equal(plan(probe()).id3v2Version, 3);
  assert.equal(plan(probe(), { id3v2_version: "4" }).id3v2Version, 4);
});

Deno.test("cover: auto takes the attached picture if any; none; seconds take a frame of the video", () => {
  assert.deepEqual(plan(probe({ attachedPicture: 2 })).cover, { from: "stream", index: 2 });
  assert.equal(plan(probe()).cover, null);
  assert.equal(plan(probe({ attachedPicture: 2 }), { cover: "none" }).cover, null);
  assert.deepEqual(plan(probe({ attachedPicture: 2 }), { cover: "1.5" }).cover, { from: "frame", at: 1.5 });
});

Deno.test("cover=<seconds> without video or past its end is an invalid_option naming cover", () => {
  throwsOption(() => plan(mp3({}), { cover: "1" }), "cover", /no video/);
  throwsOption(
    () => plan(probe({ attachedPicture: 2, hasVideo: false }), { cover: "1" }),
    "cover",
    /no video/,
  );
  throwsOption(() => plan(probe({ videoDuration: 2 }), { cover: "2.5" }), "cover", /past the end.*lasts 2 s/);
});

Deno.test("chapters are carried over unless there are none or absurdly many", () => {
  assert.equal(plan(probe({ chapters: 0 })).chapters, false);
  assert.equal(plan(probe({ chapters: 3 })).chapters, true);
  assert.equal(plan(probe({ chapters: MAX_CHAPTERS + 1 })).chapters, false);
});

Deno.test("normalize: off by default, -16 LUFS when asked, the loudness given otherwise", () => {
  assert.equal(plan(probe()).normalize, undefined);
  assert.deepEqual(plan(probe(), { normalize: "true" }).normalize, { target: -16 });
  assert.deepEqual(plan(probe(), { loudness: "-23" }).normalize, { target: -23 });
});

// The same decisions on real files, through the real probe.

Deno.test("on a real two-track MKV: the default stream, by language, and the errors that list the tracks", async () => {
  await withDir(async (dir) => {
    const result = await probeInput(await makeMedia(dir, "mkv-two-tracks"), {
      maxDuration: 60,
      maxStreams: 8,
    });
    assert.equal(plan(result).audioStream, 2);
    assert.equal(plan(result, { audio_track: "eng" }).audioStream, 1);
    throwsOption(() => plan(result, { audio_track: "deu" }), "audio_track", /tracks: 0 eng, 1 fra/);
    throwsOption(() => plan(result, { audio_track: "7" }), "audio_track", /tracks: 0 eng, 1 fra/);
    throwsOption(() => plan(result, { start: "5" }), "start");
    throwsOption(() => plan(result, { cover: "4" }), "cover");
    assert.deepEqual(plan(result, { cover: "1" }).cover, { from: "frame", at: 1 });
  });
});

Deno.test("on a real MP3: copied by default; a cover frame is an invalid_option since it has no video", async () => {
  await withDir(async (dir) => {
    const result = await probeInput(await makeMedia(dir, "mp3-tagged"), { maxDuration: 60, maxStreams: 8 });
    assert.equal(plan(result).method, "copy");
    throwsOption(() => plan(result, { cover: "1" }), "cover", /no video/);
  });
});

Deno.test("survivingChapters keeps what ffmpeg keeps for a trim: from the one the start falls in, to the one the end falls in", () => {
  const chapters = [{ start: 0, end: 1, title: "a" }, { start: 1, end: 2, title: "b" }, { start: 2, end: 3 }];
  const titles = (start: number, length: number, origin = 0) =>
    survivingChapters(chapters, origin, start, length).map((c) => c.title ?? "-");
  assert.deepEqual(titles(0, 10), ["a", "b", "-"]);
  assert.deepEqual(titles(1.5, 1.2), ["b", "-"]);
  assert.deepEqual(titles(0.2, 0.5), ["a"]);
  assert.deepEqual(titles(2.5, 10), ["-"]);
  assert.deepEqual(titles(0, 10, 1.4).length, 2, "a timeline that starts at 1.4 s");
});
