import assert from "node:assert/strict";
import { hideSource, isUrl, openSource, sourceOptions, sourceReadFailed } from "./source.ts";
import { startRangeServer } from "./testing/range_server.ts";
import { withDir } from "./testing/helpers.ts";

Deno.test("source: a file is given to FFmpeg as file:<path> with only the file protocol; a URL with only its scheme's", () => {
  assert.deepEqual(sourceOptions("/w/in"), { options: ["-protocol_whitelist", "file"], input: "file:/w/in" });
  const http = sourceOptions("http://s3:9000/b/k?X-Amz-Signature=x");
  assert.deepEqual(http.options.slice(0, 2), ["-protocol_whitelist", "http,tcp"]);
  assert.equal(http.input, "http://s3:9000/b/k?X-Amz-Signature=x");
  assert.ok(http.options.includes("-reconnect") && http.options.includes("-rw_timeout"));
  assert.deepEqual(sourceOptions("https://b.s3.amazonaws.com/k").options.slice(0, 2), [
    "-protocol_whitelist",
    "https,tls,tcp",
  ]);
  assert.equal(isUrl("file:/x"), false);
  assert.equal(isUrl("/tmp/http://x"), false);
});

Deno.test("source: only a URL's read failures count as the store's, never a file's log", () => {
  const url = "http://127.0.0.1:9/b/k";
  assert.equal(sourceReadFailed(url, "[http @ 0x1] HTTP error 503 Service Unavailable"), true);
  assert.equal(sourceReadFailed(url, "Server returned 5XX Server Error reply"), true);
  assert.equal(sourceReadFailed(url, "Connection to tcp://127.0.0.1:9 failed: Connection refused"), true);
  assert.equal(sourceReadFailed(url, "[mov,mp4 @ 0x1] moov atom not found"), false);
  assert.equal(sourceReadFailed("/w/input", "Connection refused"), false);
});

Deno.test("source: hideSource shows the name instead of the URL and drops any signature", () => {
  const url = "http://127.0.0.1:9/b/inputs/k?X-Amz-Signature=abc&X-Amz-Credential=K%2F1";
  const log = `${url}: Invalid data\nOpening '${url.split("?")[0]}' X-Amz-Signature=abc`;
  const shown = hideSource(log, url, "clip.mp4");
  assert.ok(!shown.includes("127.0.0.1") && !shown.includes("abc"), shown);
  assert.match(shown, /^clip\.mp4: Invalid data/);
});

Deno.test("source: a URL reader and a file reader read the same bytes anywhere, the URL in a few range requests", async () => {
  await withDir(async (dir) => {
    const bytes = crypto.getRandomValues(new Uint8Array(60_000));
    await Deno.writeFile(`${dir}/f`, bytes);
    const server = startRangeServer(`${dir}/f`);
    try {
      await using file = await openSource(`${dir}/f`);
      await using url = await openSource(server.url, { blockBytes: 16_384 });
      assert.equal(file.size, 60_000);
      assert.equal(url.size, 60_000);
      for (const [at, length] of [[0, 512], [16_000, 1_000], [59_990, 100], [60_000, 10], [5, 40_000]]) {
        const expected = bytes.subarray(at, Math.min(at + length, 60_000));
        assert.deepEqual(await file.readAt(at, length), expected, `file ${at}+${length}`);
        assert.deepEqual(await url.readAt(at, length), expected, `url ${at}+${length}`);
      }
      assert.ok(server.requests <= 5, `${server.requests} requests for 4 blocks`);
      server.ignoreRanges = true; // a store that sends the whole object: the block is kept, the rest not read
      await using whole = await openSource(server.url, { blockBytes: 16_384 });
      assert.equal(whole.size, 60_000);
      assert.deepEqual(await whole.readAt(20_000, 5_000), bytes.subarray(20_000, 25_000));
      server.failing = true;
      await assert.rejects(openSource(server.url), /HTTP 503/);
      const closed = server.url.replace(/:\d+\//, ":9/"); // nothing listens on port 9
      await assert.rejects(openSource(closed), (error: Error) => {
        assert.match(error.message, /^Reading the input from storage failed/);
        assert.ok(!error.message.includes("secret0123"), error.message);
        return true;
      });
    } finally {
      await server.close();
    }
  });
});
