import assert from "node:assert/strict";
import { applyFilter, measureFilter, parseLoudnorm } from "./loudness.ts";

// Captured from ffmpeg 5.1 (`-v info`, loudnorm print_format=json): the block comes last, after the stats.
const LOG = `Output #0, null, to 'pipe:':
  Metadata:
    title           : {"input_i" : "-1.00", "note": "a hostile tag printed in the input dump"}
size=N/A time=00:00:03.00 bitrate=N/A speed=61.2x
video:0kB audio:1125kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_loudnorm_1 @ 0x55a403a4b900] 
{
	"input_i" : "-51.75",
	"input_tp" : "-48.06",
	"input_lra" : "0.00",
	"input_thresh" : "-61.75",
	"output_i" : "-15.95",
	"output_tp" : "-12.27",
	"output_lra" : "0.00",
	"output_thresh" : "-25.95",
	"normalization_type" : "dynamic",
	"target_offset" : "-0.05"
}
`;

Deno.test("parseLoudnorm reads the last loudnorm JSON block of ffmpeg's log", () => {
  assert.deepEqual(parseLoudnorm(LOG), {
    inputI: -51.75,
    inputTp: -48.06,
    inputLra: 0,
    inputThresh: -61.75,
    targetOffset: -0.05,
  });
});

Deno.test("parseLoudnorm gives undefined for no block, broken JSON, or silence (-inf)", () => {
  assert.equal(parseLoudnorm("no json here"), undefined);
  assert.equal(parseLoudnorm('{ "input_i" : "-5", '), undefined);
  const silence = LOG.replace('"-51.75"', '"-inf"').replace('"-61.75"', '"-70.00"');
  assert.equal(parseLoudnorm(silence), undefined);
});

Deno.test("measureFilter downmixes before loudnorm measures", () => {
  assert.equal(
    measureFilter({ channels: 2 }, -16),
    "aformat=channel_layouts=stereo,loudnorm=I=-16:TP=-1.5:LRA=11:print_format=json",
  );
  assert.match(measureFilter({ channels: 1 }, -23), /^aformat=channel_layouts=mono,loudnorm=I=-23:/);
});

Deno.test("applyFilter applies the measured figures linearly and resamples back from 192 kHz", () => {
  const measured = parseLoudnorm(LOG)!;
  assert.equal(
    applyFilter({ channels: 2, sampleRate: 44100 }, -16, measured),
    "aformat=channel_layouts=stereo,loudnorm=I=-16:TP=-1.5:LRA=11:measured_I=-51.75:measured_TP=-48.06:" +
      "measured_LRA=0.01:measured_thresh=-61.75:offset=-0.05:linear=true:print_format=none,aresample=44100",
  );
});
