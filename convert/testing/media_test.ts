import assert from "node:assert/strict";
import {
  audioDuration,
  containsBytes,
  makeConcatTrap,
  makeHlsTrap,
  makeMedia,
  probeJson,
  type Trap,
} from "./media.ts";
import { withDir } from "./helpers.ts";

const ascii = (text: string) => new TextEncoder().encode(text);

function indexOf(bytes: Uint8Array, text: string): number {
  const needle = ascii(text);
  for (let i = 0; i + needle.length <= bytes.length; i++) {
    if (needle.every((b, j) => bytes[i + j] === b)) return i;
  }
  return -1;
}

Deno.test("makeMedia makes an mp4 with its moov atom after the media data (not faststart)", async () => {
  await withDir(async (dir) => {
    const bytes = await Deno.readFile(await makeMedia(dir, "mp4"));
    assert.equal(new TextDecoder().decode(bytes.subarray(4, 8)), "ftyp");
    assert.ok(indexOf(bytes, "mdat") < indexOf(bytes, "moov"));
  });
});

Deno.test("makeMedia makes a truncated mp4 that starts like an mp4 but has no moov atom", async () => {
  await withDir(async (dir) => {
    const bytes = await Deno.readFile(await makeMedia(dir, "truncated-mp4"));
    assert.equal(new TextDecoder().decode(bytes.subarray(4, 8)), "ftyp");
    assert.equal(indexOf(bytes, "moov"), -1);
  });
});

Deno.test("makeMedia makes the same 64 KiB of random bytes every time", async () => {
  await withDir(async (dir) => {
    const a = await Deno.readFile(await makeMedia(dir, "random-bytes"));
    const b = await Deno.readFile(await makeMedia(dir, "random-bytes"));
    assert.equal(a.length, 64 * 1024);
    assert.deepEqual(a, b);
  });
});

Deno.test("makeMedia honours seconds, and audioDuration counts decoded samples", async () => {
  await withDir(async (dir) => {
    assert.equal(await audioDuration(await makeMedia(dir, "flac", { seconds: 5 })), 5);
    const json = await probeJson(await makeMedia(dir, "mkv", { seconds: 2 }));
    assert.deepEqual(json.streams.map((s) => s.codec_name), ["vp9", "opus"]);
  });
});

for (const [label, make] of [["HLS", makeHlsTrap], ["ffconcat", makeConcatTrap]] as const) {
  Deno.test(`the ${label} trap is real: a naive ffmpeg run copies the canary's bytes into its output`, async () => {
    await withDir(async (dir) => {
      const trap: Trap = await make(dir);
      const output = `${dir}/naive.mp3`;
      const { success } = await new Deno.Command("ffmpeg", {
        args: ["-v", "error", "-nostdin", "-i", trap.path, "-c:a", "copy", "-y", output],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.ok(success);
      assert.ok(containsBytes(await Deno.readFile(output), ascii(trap.canaryText)));
    });
  });
}
