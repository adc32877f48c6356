import assert from "node:assert/strict";
import { AppError } from "@vmp3/shared";
import { COVER_MAX_SIZE, coverArgs, makeCover } from "./cover.ts";
import { makeMedia, probeJson } from "./testing/media.ts";
import { withDir } from "./testing/helpers.ts";

const context = (name = "clip.mp4") => ({
  deadline: Date.now() + 30_000,
  name,
  timeoutError: () => new Error("timed out"),
});

Deno.test("makeCover scales a big attached picture down to fit 1000x1000 as one JPEG", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-cover", { picture: "2000x1500" });
    const output = await makeCover(input, `${dir}/cover.jpg`, { from: "stream", index: 2 }, context());
    assert.equal(output, `${dir}/cover.jpg`);
    const json = await probeJson(output!);
    assert.equal(json.format.format_name, "image2");
    assert.equal(json.streams[0].codec_name, "mjpeg");
    assert.deepEqual([json.streams[0].width, json.streams[0].height], [COVER_MAX_SIZE, 750]);
  });
});

Deno.test("makeCover leaves a small picture at its size", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4-cover", { picture: "120x90" });
    const output = await makeCover(input, `${dir}/cover.jpg`, { from: "stream", index: 2 }, context());
    const json = await probeJson(output!);
    assert.deepEqual([json.streams[0].width, json.streams[0].height], [120, 90]);
  });
});

Deno.test("makeCover skips a source picture it cannot read: the MP3 is made without one", async () => {
  await withDir(async (dir) => {
    // Stream 1 is the audio: no picture decoder may read it.
    const input = await makeMedia(dir, "mp4-cover");
    assert.equal(await makeCover(input, `${dir}/cover.jpg`, { from: "stream", index: 1 }, context()), null);
    assert.equal(await Deno.stat(`${dir}/cover.jpg`).then(() => true, () => false), false);
  });
});

Deno.test("makeCover takes a frame of the video, decoding it only with the video decoder allowlist", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4");
    const output = await makeCover(input, `${dir}/frame.jpg`, { from: "frame", at: 1 }, context());
    const json = await probeJson(output!);
    assert.deepEqual([json.streams[0].width, json.streams[0].height], [320, 240]);
    const args = coverArgs(input, `${dir}/frame.jpg`, { from: "frame", at: 1 });
    const decoders = args[args.indexOf("-codec_whitelist") + 1].split(",");
    assert.ok(decoders.includes("h264") && !decoders.includes("aac"));
    assert.deepEqual(args.slice(args.indexOf("-ss"), args.indexOf("-ss") + 2), ["-ss", "1"]);
    assert.ok(args.indexOf("-ss") < args.indexOf("-i"));
  });
});

Deno.test("makeCover fails with invalid_option naming cover where the video has no frame", async () => {
  await withDir(async (dir) => {
    const input = await makeMedia(dir, "mp4");
    const error = await makeCover(input, `${dir}/frame.jpg`, { from: "frame", at: 50 }, context()).catch((
      e,
    ) => e);
    assert.ok(error instanceof AppError, String(error));
    assert.equal(error.code, "invalid_option");
    assert.match(error.message, /"cover"/);
    assert.ok(!error.message.includes(dir), error.message);
  });
});
