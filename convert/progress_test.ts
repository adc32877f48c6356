import assert from "node:assert/strict";
import { ProgressParser, progressStream, type ProgressUpdate } from "./progress.ts";

// Captured from ffmpeg 5.1: `-progress pipe:1 -stats_period 0.25`, a 10 s FLAC to MP3.
const CAPTURED = `bitrate=6596.6kbits/s
total_size=879
out_time_us=1066
out_time_ms=1066
out_time=00:00:00.001066
dup_frames=0
drop_frames=0
speed=35.5x
progress=continue
bitrate= 128.7kbits/s
total_size=160958
out_time_us=10005964
out_time_ms=10005964
out_time=00:00:10.005964
dup_frames=0
drop_frames=0
speed= 172x
progress=end
`;

// What ffmpeg writes before it knows a timestamp.
const UNKNOWN = `bitrate=N/A
total_size=0
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
speed=N/A
progress=continue
`;

Deno.test("ProgressParser reads out_time_us as microseconds and speed as a multiple", () => {
  const updates = new ProgressParser().push(CAPTURED);
  assert.deepEqual(updates, [
    { outTimeSeconds: 0.001066, speed: 35.5, done: false },
    { outTimeSeconds: 10.005964, speed: 172, done: true },
  ]);
});

Deno.test("ProgressParser keeps the last known time when ffmpeg reports N/A", () => {
  const parser = new ProgressParser();
  assert.deepEqual(parser.push(UNKNOWN), [{ outTimeSeconds: 0, done: false }]);
  parser.push(CAPTURED.split("progress=end")[0]);
  assert.deepEqual(parser.push(UNKNOWN), [{ outTimeSeconds: 10.005964, done: false }]);
});

Deno.test("ProgressParser joins lines split across chunks, including CRLF and a last line without newline", () => {
  const parser = new ProgressParser();
  const text = CAPTURED.replaceAll("\n", "\r\n").trimEnd();
  const updates: ProgressUpdate[] = [];
  for (let i = 0; i < text.length; i += 7) updates.push(...parser.push(text.slice(i, i + 7)));
  updates.push(...parser.flush());
  assert.deepEqual(updates.map((u) => [u.outTimeSeconds, u.done]), [[0.001066, false], [10.005964, true]]);
});

Deno.test("ProgressParser falls back to out_time when the microsecond keys are missing", () => {
  const updates = new ProgressParser().push("out_time=01:02:03.500000\nprogress=continue\n");
  assert.deepEqual(updates, [{ outTimeSeconds: 3723.5, done: false }]);
});

Deno.test("ProgressParser ignores negative times and lines that are not key=value", () => {
  const updates = new ProgressParser().push(
    "garbage\n=x\nout_time_us=-23220\nout_time=-00:00:00.023220\nprogress=continue\n",
  );
  assert.deepEqual(updates, [{ outTimeSeconds: 0, done: false }]);
});

Deno.test("progressStream turns text chunks into updates", async () => {
  const chunks = [CAPTURED.slice(0, 100), CAPTURED.slice(100)];
  const updates = await Array.fromAsync(ReadableStream.from(chunks).pipeThrough(progressStream()));
  assert.deepEqual(updates.map((u) => u.done), [false, true]);
});
