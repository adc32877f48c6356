import assert from "node:assert/strict";
import type { ErrorCode } from "@vmp3/shared";
import { probeInput, refersToOtherFiles } from "./probe.ts";
import { makeDrefTrap, makeHlsTrap, makeMedia, type MediaKind, SOURCE_TAGS } from "./testing/media.ts";
import { rejectsWith, withDir } from "./testing/helpers.ts";
import { startRangeServer } from "./testing/range_server.ts";

const LIMITS = { maxDuration: 6 * 3600, maxStreams: 16 };

const GOOD: [MediaKind, string, string][] = [
  ["mp4", "mov,mp4,m4a,3gp,3g2,mj2", "aac"],
  ["mov", "mov,mp4,m4a,3gp,3g2,mj2", "aac"],
  ["mkv", "matroska,webm", "opus"],
  ["webm", "matroska,webm", "opus"],
  ["avi", "avi", "mp3"],
  ["flac", "flac", "flac"],
];

for (const [kind, format, audioCodec] of GOOD) {
  Deno.test(`probeInput accepts a ${kind} file and reports its format, audio and duration`, async () => {
    await withDir(async (dir) => {
      const result = await probeInput(await makeMedia(dir, kind), LIMITS);
      assert.equal(result.format, format);
      assert.equal(result.audioCodec, audioCodec);
      assert.equal(result.audioStreams, 1);
      assert.equal(result.streams, kind === "flac" ? 1 : 2);
      assert.ok(Math.abs(result.duration! - 3) < 0.1, `duration ${result.duration}`);
    });
  });
}

const BAD: [MediaKind, ErrorCode, RegExp][] = [
  ["mp4-no-audio", "no_audio_stream", /^Cannot convert "clip\.mp4": the file has no audio stream$/],
  ["zero-bytes", "unsupported_input", /^Cannot convert "clip\.mp4": the file is empty$/],
  [
    "random-bytes",
    "unsupported_input",
    /^Cannot convert "clip\.mp4": the file is not a video or audio format we accept$/,
  ],
  [
    "truncated-mp4",
    "corrupt_input",
    /looks like an MP4\/MOV file but is damaged or incomplete \(moov atom not found\)/,
  ],
  ["hls-playlist-as-mp4", "unsupported_input", /playlist or file list \(hls\)/],
  ["ffconcat-as-mp4", "unsupported_input", /playlist or file list \(concat\)/],
];

for (const [kind, code, message] of BAD) {
  Deno.test(`probeInput rejects a ${kind} file with ${code}`, async () => {
    await withDir(async (dir) => {
      const path = await makeMedia(dir, kind);
      await rejectsWith(probeInput(path, { ...LIMITS, name: "clip.mp4" }), code, message);
    });
  });
}

Deno.test("probeInput rejects an HLS playlist named .mp4 with unsupported_input and never names the server path", async () => {
  await withDir(async (dir) => {
    const trap = await makeHlsTrap(dir);
    const error = await rejectsWith(probeInput(trap.path, LIMITS), "unsupported_input");
    assert.ok(!error.message.includes(dir), error.message);
    assert.ok(!error.message.includes(trap.canaryText));
  });
});

Deno.test("probeInput rejects an MP4 whose track is a reference to another file, which ffmpeg would skip", async () => {
  await withDir(async (dir) => {
    const trap = await makeDrefTrap(dir);
    const error = await rejectsWith(
      probeInput(trap.path, { ...LIMITS, name: "clip.mp4" }),
      "unsupported_input",
      /^Cannot convert "clip\.mp4": a track of it is a reference to data in another file/,
    );
    assert.ok(!error.message.includes(trap.canaryPath));
  });
});

Deno.test("refersToOtherFiles finds no reference in ordinary MP4 and MOV files (cover art, tags, chapters too)", async () => {
  await withDir(async (dir) => {
    for (const kind of ["mp4", "mov", "mp4-cover", "mp4-tagged"] as const) {
      assert.equal(await refersToOtherFiles(await makeMedia(dir, kind)), false, kind);
    }
    assert.equal(await refersToOtherFiles((await makeDrefTrap(dir)).path), true);
  });
});

Deno.test("probeInput reads a storage URL as it reads the file: the same description, the same refusals, no URL in messages", async () => {
  await withDir(async (dir) => {
    for (const kind of ["mp4", "mkv", "mp4-tagged"] as const) {
      const path = await makeMedia(dir, kind);
      const server = startRangeServer(path);
      try {
        const fromFile = await probeInput(path, { ...LIMITS, name: "v" });
        const fromUrl = await probeInput(server.url, { ...LIMITS, name: "v" });
        assert.deepEqual(fromUrl, fromFile, kind);
      } finally {
        await server.close();
      }
    }
    const trap = startRangeServer((await makeDrefTrap(dir)).path);
    const hls = startRangeServer((await makeHlsTrap(dir)).path);
    try {
      await rejectsWith(
        probeInput(trap.url, { ...LIMITS, name: "trap.mov" }),
        "unsupported_input",
        /another file/,
      );
      const error = await rejectsWith(
        probeInput(hls.url, { ...LIMITS, name: "list.m3u8" }),
        "unsupported_input",
      );
      assert.ok(!/127\.0\.0\.1|X-Amz|secret/.test(`${error.message} ${error.cause}`), error.message);
      hls.failing = true;
      await assert.rejects(probeInput(hls.url, { ...LIMITS, name: "list.m3u8" }), /HTTP 503/);
    } finally {
      await trap.close();
      await hls.close();
    }
  });
});

Deno.test("probeInput rejects an input longer than maxDuration with input_too_long", async () => {
  await withDir(async (dir) => {
    const path = await makeMedia(dir, "flac", { seconds: 90 });
    await rejectsWith(
      probeInput(path, { ...LIMITS, maxDuration: 60, name: "long.flac" }),
      "input_too_long",
      /^Cannot convert "long\.flac": it lasts 1:30, longer than the limit of 1:00$/,
    );
  });
});

Deno.test("probeInput rejects an input with more streams than maxStreams with too_many_streams", async () => {
  await withDir(async (dir) => {
    const path = await makeMedia(dir, "mp4");
    await rejectsWith(
      probeInput(path, { ...LIMITS, maxStreams: 1 }),
      "too_many_streams",
      /it has 2 streams; the limit is 1/,
    );
  });
});

Deno.test("probeInput reads a file whose name looks like a protocol (concat:a|b) as a plain local file", async () => {
  await withDir(async (dir) => {
    const mp4 = await makeMedia(dir, "mp4");
    const odd = `${dir}/concat:${mp4.slice(dir.length + 1)}|x`;
    await Deno.copyFile(mp4, odd);
    const result = await probeInput(odd, LIMITS);
    assert.equal(result.audioCodec, "aac");
  });
});

Deno.test("probeInput rejects with the reason of an aborted signal without running ffprobe", async () => {
  await withDir(async (dir) => {
    const path = await makeMedia(dir, "mp4");
    const reason = new Error("stop");
    await assert.rejects(
      probeInput(path, { ...LIMITS, signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
  });
});

Deno.test("probeInput says the default launcher refuses an ffprobe outside its folders", async () => {
  await withDir(async (dir) => {
    const path = await makeMedia(dir, "mp4");
    await assert.rejects(
      probeInput(path, { ...LIMITS, ffprobePath: "/nonexistent/ffprobe" }),
      /ffprobe at "\/nonexistent\/ffprobe" cannot be started: ff_guard: runs only ffmpeg or ffprobe/,
    );
  });
});

Deno.test("probeInput names a missing ffprobe and how to install it", async () => {
  await withDir(async (dir) => {
    const path = await makeMedia(dir, "zero-bytes");
    await Deno.writeTextFile(path, "x");
    // Plain setpriv and none: the default launcher would refuse a path outside its folders (tested below).
    for (const setprivPath of ["setpriv", null]) {
      await assert.rejects(
        probeInput(path, { ...LIMITS, ffprobePath: "/nonexistent/ffprobe", setprivPath }),
        /ffprobe was not found at "\/nonexistent\/ffprobe"\. Install it/,
      );
    }
  });
});

Deno.test("probeInput accepts a WebM written as a stream, whose duration is unknown", async () => {
  await withDir(async (dir) => {
    const result = await probeInput(await makeMedia(dir, "webm-streamed"), {
      maxDuration: 60,
      maxStreams: 16,
    });
    assert.equal(result.duration, undefined);
    assert.equal(result.audioCodec, "opus");
  });
});

Deno.test("probeInput describes each audio stream: index, codec, channels, rate, language, default", async () => {
  await withDir(async (dir) => {
    const result = await probeInput(await makeMedia(dir, "mkv-two-tracks"), LIMITS);
    assert.deepEqual(result.audio, [
      {
        index: 1,
        codec: "opus",
        channels: 1,
        sampleRate: 48000,
        language: "eng",
        isDefault: false,
        tags: {},
      },
      { index: 2, codec: "opus", channels: 1, sampleRate: 48000, language: "fra", isDefault: true, tags: {} },
    ]);
    assert.equal(result.channels, 1);
    assert.equal(result.sampleRate, 48000);
    assert.equal(result.hasVideo, true);
    // Matroska states no stream durations: the plan then takes the file's.
    assert.equal(result.videoDuration, undefined);
    assert.equal(result.attachedPicture, undefined);
    assert.deepEqual(result.tags, {});
    assert.equal(result.chapters, 0);
  });
});

Deno.test("probeInput tells cover art (an attached picture) from a real video", async () => {
  await withDir(async (dir) => {
    const cover = await probeInput(await makeMedia(dir, "mp4-cover"), LIMITS);
    assert.equal(cover.attachedPicture, 2);
    assert.equal(cover.hasVideo, true);
    assert.ok(Math.abs(cover.videoDuration! - 3) < 0.1, `video lasts ${cover.videoDuration}`);
    const audioOnly = await probeInput(await makeMedia(dir, "mp3-tagged"), LIMITS);
    assert.equal(audioOnly.hasVideo, false);
    assert.equal(audioOnly.attachedPicture, undefined);
  });
});

Deno.test("probeInput reads the container's tags and counts its chapters", async () => {
  await withDir(async (dir) => {
    const result = await probeInput(await makeMedia(dir, "mp4-tagged"), LIMITS);
    assert.deepEqual(result.tags, SOURCE_TAGS);
    assert.equal(result.chapters, 3);
    assert.equal(result.audio[0].bitrate !== undefined && result.audio[0].bitrate > 50_000, true);
  });
});

Deno.test("probeInput reads an MP3's stream and an Ogg's upper-case stream tags", async () => {
  await withDir(async (dir) => {
    const mp3 = await probeInput(await makeMedia(dir, "mp3-tagged"), LIMITS);
    assert.equal(mp3.audio[0].codec, "mp3");
    assert.equal(mp3.audio[0].channels, 2);
    assert.equal(mp3.audio[0].sampleRate, 44100);
    assert.ok(Math.abs(mp3.audioBitrate! - 128_000) < 2000, `${mp3.audioBitrate}`);
    assert.deepEqual(mp3.tags, SOURCE_TAGS);
    const ogg = await probeInput(await makeMedia(dir, "ogg-tagged"), LIMITS);
    assert.deepEqual(ogg.tags, {});
    assert.deepEqual(ogg.audio[0].tags, SOURCE_TAGS);
    const surround = await probeInput(await makeMedia(dir, "flac-7.1"), LIMITS);
    assert.equal(surround.channels, 8);
    assert.ok(surround.bitrate! > 0, "the file's bitrate");
  });
});
