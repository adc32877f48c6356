import assert from "node:assert/strict";
import { inputArgs, lastMessage, runFfmpeg, seconds, withoutProbeNoise } from "./ffmpeg_run.ts";

Deno.test("inputArgs opens one file: input seeking, file protocol, demuxer and decoder allowlists, file: prefix", () => {
  assert.deepEqual(
    inputArgs({ path: "/w/-i x", demuxers: ["mov", "mp4"], decoders: ["aac"], seek: 1.25, format: "mov" }),
    [
      "-ss",
      "1.25",
      "-protocol_whitelist",
      "file",
      "-format_whitelist",
      "mov,mp4",
      "-codec_whitelist",
      "aac",
      "-f",
      "mov",
      "-i",
      "file:/w/-i x",
    ],
  );
  assert.ok(!inputArgs({ path: "/a", demuxers: ["mp3"], decoders: ["mp3"], seek: 0 }).includes("-ss"));
});

Deno.test("seconds writes plain decimals to the microsecond", () => {
  assert.equal(seconds(1.2000000000000002), "1.2");
  assert.equal(seconds(10), "10");
  assert.equal(seconds(0), "0");
  assert.equal(seconds(1e-7), "0");
  assert.equal(seconds(3600.5), "3600.5");
});

Deno.test("withoutProbeNoise drops the decoder allowlist's probing messages, so the real reason is last", () => {
  const log = [
    "[h264 @ 0x1] Codec (h264) not on whitelist 'aac'",
    "    Last message repeated 1 times",
    "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x2] Failed to open codec in avformat_find_stream_info",
    "[aac @ 0x3] Error decoding frame",
    "Error while decoding stream #0:1: Invalid data found when processing input",
    "[h264 @ 0x1] Codec (h264) not on whitelist 'aac'",
  ].join("\n");
  const clean = withoutProbeNoise(log);
  assert.ok(!/whitelist|repeated|avformat_find_stream_info/.test(clean), clean);
  assert.equal(
    lastMessage(clean),
    "Error while decoding stream #0:1: Invalid data found when processing input",
  );
});

Deno.test("runFfmpeg past the deadline does not start ffmpeg and says it timed out", async () => {
  const result = await runFfmpeg(["-version"], {
    deadline: Date.now() - 1,
    ffmpegPath: "/nonexistent/ffmpeg",
  });
  assert.equal(result.timedOut, true);
  assert.equal(result.status.success, false);
});

Deno.test("runFfmpeg runs ffmpeg and returns its status and the end of its stderr", async () => {
  const result = await runFfmpeg(["-hide_banner", "-v", "error", "-i", "file:/nonexistent/x.mp4"], {
    deadline: Date.now() + 10_000,
  });
  assert.equal(result.timedOut, false);
  assert.equal(result.status.success, false);
  assert.match(result.stderr, /No such file or directory/);
});
