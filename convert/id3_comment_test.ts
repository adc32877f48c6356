import assert from "node:assert/strict";
import { join } from "node:path";
import { addComment, commFrame } from "./id3_comment.ts";
import { audioDuration, probeJson } from "./testing/media.ts";
import { withDir } from "./testing/helpers.ts";

Deno.test("commFrame: UTF-16 with a BOM in ID3v2.3, UTF-8 in v2.4, language und, empty description", () => {
  assert.deepEqual(
    [...commFrame("hé", 4)],
    [0x43, 0x4f, 0x4d, 0x4d, 0, 0, 0, 8, 0, 0, 0x03, 0x75, 0x6e, 0x64, 0x00, 0x68, 0xc3, 0xa9],
  );
  assert.deepEqual(
    [...commFrame("hé", 3)],
    [
      0x43,
      0x4f,
      0x4d,
      0x4d,
      0,
      0,
      0,
      14,
      0,
      0,
      0x01,
      0x75,
      0x6e,
      0x64,
      0xff,
      0xfe,
      0,
      0,
      0xff,
      0xfe,
      0x68,
      0,
      0xe9,
      0,
    ],
  );
});

for (const version of [3, 4]) {
  Deno.test(`addComment leaves an ID3v2.${version} MP3 whole, its comment read back by ffprobe`, async () => {
    await withDir(async (dir) => {
      const path = join(dir, "a.mp3");
      const made = await new Deno.Command("ffmpeg", {
        args: [
          ...["-v", "error", "-f", "lavfi", "-i", "sine=d=2", "-c:a", "libmp3lame", "-b:a", "64k"],
          ...["-metadata", "title=Kept", "-id3v2_version", String(version), path],
        ],
      }).output();
      assert.ok(made.success);
      const before = await audioDuration(path);
      const text = "Ünïcödé 🎧 — line one\nline two";
      await addComment(path, text);
      const tags = (await probeJson(path)).format.tags as Record<string, string>;
      assert.deepEqual([tags.comment, tags.title], [text, "Kept"]);
      assert.equal(await audioDuration(path), before, "the audio is untouched");
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.mp3"], "no temporary file left");
    });
  });
}

Deno.test("addComment refuses a file with no ID3v2 tag, and leaves it as it was", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "x.mp3");
    await Deno.writeFile(path, new Uint8Array(100).fill(0xff));
    await assert.rejects(addComment(path, "x"), /no ID3v2 tag/);
    assert.deepEqual(await Deno.readFile(path), new Uint8Array(100).fill(0xff));
  });
});
