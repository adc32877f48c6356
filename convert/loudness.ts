/**
 * EBU R128 loudness normalisation in two passes of ffmpeg's loudnorm filter: the first measures the source (as
 * the output will hear it: the same stream, trim and downmix) and prints its figures as JSON; the second applies
 * them with `linear=true`, one gain for the whole file where the true peak allows it.
 */
import type { ConversionPlan } from "./plan.ts";

/** The true-peak ceiling of the output, in dBTP. */
export const TRUE_PEAK = -1.5;
/** The loudness range target, in LU; a source with a wider range is compressed dynamically instead. */
export const LOUDNESS_RANGE = 11;

/** What the first pass measured. */
export interface LoudnessMeasurement {
  /** Integrated loudness, LUFS. */
  inputI: number;
  /** True peak, dBTP. */
  inputTp: number;
  /** Loudness range, LU. */
  inputLra: number;
  /** Gating threshold, LUFS. */
  inputThresh: number;
  /** The offset gain loudnorm proposes for the second pass, LU. */
  targetOffset: number;
}

/** The channel layout the output is downmixed to, before loudnorm measures or applies anything. */
export function layoutOf(plan: Pick<ConversionPlan, "channels">): string {
  return plan.channels === 1 ? "mono" : "stereo";
}

/** The audio filter of the measuring pass: downmix, then loudnorm printing its figures as JSON. */
export function measureFilter(plan: Pick<ConversionPlan, "channels">, target: number): string {
  return `aformat=channel_layouts=${
    layoutOf(plan)
  },loudnorm=I=${target}:TP=${TRUE_PEAK}:LRA=${LOUDNESS_RANGE}` +
    ":print_format=json";
}

/**
 * The audio filter of the applying pass: downmix, loudnorm with the measured figures (linear), then back to the
 * output's sample rate (loudnorm works, and outputs, at 192 kHz).
 */
export function applyFilter(
  plan: Pick<ConversionPlan, "channels" | "sampleRate">,
  target: number,
  measured: LoudnessMeasurement,
): string {
  // loudnorm treats a measured LRA of exactly 0 (a steady tone) as "not given" and falls back to dynamic mode.
  const lra = Math.max(0.01, measured.inputLra);
  const values = [
    `I=${target}`,
    `TP=${TRUE_PEAK}`,
    `LRA=${LOUDNESS_RANGE}`,
    `measured_I=${fixed(measured.inputI)}`,
    `measured_TP=${fixed(measured.inputTp)}`,
    `measured_LRA=${fixed(lra)}`,
    `measured_thresh=${fixed(measured.inputThresh)}`,
    `offset=${fixed(measured.targetOffset)}`,
    "linear=true",
    "print_format=none",
  ];
  return `aformat=channel_layouts=${layoutOf(plan)},loudnorm=${
    values.join(":")
  },aresample=${plan.sampleRate}`;
}

/**
 * The figures of the last loudnorm JSON block in ffmpeg's log (printed at info level at the end of the run), or
 * undefined when there is none or it says nothing usable. Figures loudnorm cannot take back (silence measures
 * "-inf") give undefined too: there is nothing to normalise.
 */
export function parseLoudnorm(log: string): LoudnessMeasurement | undefined {
  const blocks = [...log.matchAll(/\{[^{}]*"input_i"[^{}]*\}/g)];
  const last = blocks.at(-1);
  if (!last) return undefined;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(last[0]) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const get = (key: string) => Number.parseFloat(String(json[key]));
  const measurement: LoudnessMeasurement = {
    inputI: get("input_i"),
    inputTp: get("input_tp"),
    inputLra: get("input_lra"),
    inputThresh: get("input_thresh"),
    targetOffset: get("target_offset"),
  };
  // loudnorm's own ranges for the measured_* options.
  const ok = within(measurement.inputI, -99, 0) && within(measurement.inputTp, -99, 99) &&
    within(measurement.inputLra, 0, 99) && within(measurement.inputThresh, -99, 0) &&
    within(measurement.targetOffset, -99, 99);
  return ok ? measurement : undefined;
}

function within(value: number, min: number, max: number): boolean {
  return Number.isFinite(value) && value >= min && value <= max;
}

function fixed(value: number): string {
  return value.toFixed(2);
}
