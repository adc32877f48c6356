import assert from "node:assert/strict";
import { join } from "node:path";
import { bitrateFromSummary, measureAudioBitrate } from "./audio_bitrate.ts";
import { withDir } from "./testing/helpers.ts";

async function ffmpeg(args: string[]): Promise<void> {
  const out = await new Deno.Command("ffmpeg", { args: ["-v", "error", "-y", ...args] }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("bitrateFromSummary reads ffmpeg's last summary line, never overstating the size", () => {
  const log = "Stream mapping: …\nvideo:0kB audio:192kB subtitle:0kB other streams:0kB global headers:0kB\n";
  assert.equal(bitrateFromSummary(log, 20), Math.round((191.5 * 1024 * 8) / 20));
  assert.equal(bitrateFromSummary("no summary", 20), undefined);
  assert.equal(bitrateFromSummary(log, 0), undefined);
});

Deno.test("measureAudioBitrate finds a WebM's Opus bitrate that ffprobe cannot state", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "clip.webm");
    await ffmpeg([
      ...["-f", "lavfi", "-i", "testsrc2=s=320x240:r=15:d=6", "-f", "lavfi", "-i", "anoisesrc=d=6:a=0.3"],
      ...["-c:v", "libvpx", "-b:v", "300k", "-c:a", "libopus", "-b:a", "64k", path],
    ]);
    const bitrate = await measureAudioBitrate(path, 1, { deadline: Date.now() + 30_000 });
    assert.ok(
      bitrate !== undefined && bitrate > 50_000 && bitrate < 80_000,
      `measured ${bitrate} bit/s for 64k`,
    );
    assert.equal(
      await measureAudioBitrate(path, 7, { deadline: Date.now() + 30_000 }),
      undefined,
      "no stream 7",
    );
  });
});
