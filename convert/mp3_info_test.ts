import assert from "node:assert/strict";
import { parseFirstFrame, readMp3Info } from "./mp3_info.ts";

async function ffmpeg(args: string[]): Promise<void> {
  const out = await new Deno.Command("ffmpeg", { args: ["-nostdin", "-v", "error", "-y", ...args] }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** What ffprobe says of the file's first audio stream, in the figures the worker reports. */
async function ffprobe(path: string) {
  const out = await new Deno.Command("ffprobe", {
    args: [
      "-v",
      "error",
      "-select_streams",
      "a:0",
      "-show_entries",
      "format=duration:stream=bit_rate,sample_rate,channels",
      "-of",
      "json",
      path,
    ],
  }).output();
  const json = JSON.parse(new TextDecoder().decode(out.stdout));
  const stream = json.streams[0];
  return {
    duration: Number(json.format.duration),
    bitrate: Number(stream.bit_rate),
    sampleRate: Number(stream.sample_rate),
    channels: stream.channels,
  };
}

Deno.test("readMp3Info gives ffprobe's figures for the MP3s ffmpeg writes (CBR, VBR, copies, tags, cover)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const source = `${dir}/source.wav`;
    await ffmpeg(["-f", "lavfi", "-i", "sine=f=440:sample_rate=48000:d=3", "-ac", "2", source]);
    const vbr = `${dir}/vbr.mp3`;
    await ffmpeg(["-i", source, "-c:a", "libmp3lame", "-q:a", "2", "-ar", "44100", vbr]);
    const cover = `${dir}/cover.jpg`;
    await ffmpeg(["-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", cover]);
    const cases: Record<string, string[]> = {
      "CBR 192k, MPEG-1 stereo": ["-i", source, "-c:a", "libmp3lame", "-b:a", "192k"],
      "VBR, MPEG-1 mono": ["-i", source, "-c:a", "libmp3lame", "-q:a", "4", "-ac", "1"],
      // The Info frame itself is written at a higher rate than the audio frames here.
      "CBR 32k, MPEG-2 mono": ["-i", source, "-c:a", "libmp3lame", "-b:a", "32k", "-ar", "22050", "-ac", "1"],
      "VBR, MPEG-2.5": ["-i", source, "-c:a", "libmp3lame", "-q:a", "9", "-ar", "8000"],
      "a copy of a VBR MP3": ["-i", vbr, "-c:a", "copy"],
      "a trimmed copy": ["-ss", "1.2", "-i", vbr, "-c:a", "copy"],
      "a cover and tags in ID3v2.3": [
        ...["-i", source, "-i", cover, "-map", "0:0", "-map", "1:0", "-c:a", "libmp3lame", "-b:a", "128k"],
        ...[
          "-c:v",
          "copy",
          "-disposition:v:0",
          "attached_pic",
          "-id3v2_version",
          "3",
          "-metadata",
          "title=T",
        ],
      ],
    };
    for (const [name, args] of Object.entries(cases)) {
      const path = `${dir}/out.mp3`;
      await ffmpeg([...args, "-f", "mp3", path]);
      assert.deepEqual(await readMp3Info(path), await ffprobe(path), name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readMp3Info is null for an MP3 without a Xing/Info header, and for what is not an MP3", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const plain = `${dir}/plain.mp3`;
    await ffmpeg([
      ...["-f", "lavfi", "-i", "sine=d=1", "-c:a", "libmp3lame", "-b:a", "96k", "-write_xing", "0", plain],
    ]);
    assert.equal(await readMp3Info(plain), null);
    const text = `${dir}/text.mp3`;
    await Deno.writeTextFile(text, "not an mp3 at all");
    assert.equal(await readMp3Info(text), null);
    const empty = `${dir}/empty.mp3`;
    await Deno.writeFile(empty, new Uint8Array());
    assert.equal(await readMp3Info(empty), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseFirstFrame refuses layers other than III, reserved values, and a truncated header", () => {
  // A layer II header (MPEG-1, 192k, 48 kHz) followed by an "Info" tag where layer III would have it.
  const layer2 = new Uint8Array(64);
  layer2.set([0xff, 0xfd, 0xa4, 0x00]);
  layer2.set(new TextEncoder().encode("Info"), 36);
  assert.equal(parseFirstFrame(layer2), null);
  const badRate = new Uint8Array(64);
  badRate.set([0xff, 0xfb, 0xac, 0x00]); // sample rate index 3 (reserved)
  assert.equal(parseFirstFrame(badRate), null);
  assert.equal(parseFirstFrame(new Uint8Array([0xff, 0xfb, 0xa4, 0x00, 0, 0])), null);
});
