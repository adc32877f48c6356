/**
 * Conversion options a client may give, as form fields or query parameters, validated by one schema. The parsed
 * form travels in the conversion task, and its canonical text is part of the content-cache key.
 */
import { z } from "zod";
import { AppError } from "./errors.ts";

/** The sample rates an MP3 can have, in Hz. */
export const MP3_SAMPLE_RATES = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] as const;

/** The constant bitrates of MPEG-1 Layer III (32, 44.1 and 48 kHz), in kbit/s. */
export const MP3_BITRATES = [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320] as const;

/** The highest bitrate an MP3 can have at `sampleRate` (MPEG-2 tops out at 160, MPEG-2.5 at 64), in kbit/s. */
export function maxBitrateAt(sampleRate: number): number {
  if (sampleRate >= 32000) return 320;
  if (sampleRate >= 16000) return 160;
  return 64;
}

/** The default target of loudness normalisation, in LUFS. */
export const DEFAULT_LOUDNESS = -16;

/** LAME's typical average bitrate of each VBR quality, V0 to V9, in kbit/s. */
export const VBR_TYPICAL_KBPS = [245, 225, 190, 175, 165, 130, 115, 100, 85, 65] as const;

/** The most characters a text tag may have. */
const TAG_MAX = 1024;

/** Seconds, given as a number ("90", "12.5") or a clock ("1:30", "00:01:30.250"). */
const Time = z.preprocess(
  (value) => (typeof value === "string" ? parseTime(value) : value),
  z.number({ error: 'must be seconds ("90.5") or a time ("HH:MM:SS.mmm")' }).min(0).max(24 * 3600),
);

/** Parses "90.5", "1:30" or "01:02:03.500" to seconds; NaN for anything else. */
export function parseTime(text: string): number {
  const match = /^(?:(?:(\d+):)?(\d{1,2}):)?(\d+(?:\.\d+)?)$/.exec(text.trim());
  if (!match) return NaN;
  const [, hours, minutes, seconds] = match;
  if ((hours !== undefined || minutes !== undefined) && Number(seconds) >= 60) return NaN;
  if (hours !== undefined && Number(minutes) >= 60) return NaN;
  return Number(hours ?? 0) * 3600 + Number(minutes ?? 0) * 60 + Number(seconds);
}

/** A whole number, given as one ("128") or as digits in a string; nothing looser ("0x80", " ", "1e2"). */
const whole = () =>
  z.preprocess(
    (value) => (typeof value === "string" && /^\s*\d{1,9}\s*$/.test(value) ? Number(value) : value),
    z.number({ error: "must be a whole number" }).int({ error: "must be a whole number" }),
  );

/** A decimal number ("-14", "-23.5"), as a number or a string of one. */
const decimal = () =>
  z.preprocess(
    (
      value,
    ) => (typeof value === "string" && /^\s*-?\d{1,6}(\.\d{1,6})?\s*$/.test(value) ? Number(value) : value),
    z.number({ error: "must be a number" }),
  );

/** A text tag: no control characters but newline and tab, at most {@linkcode TAG_MAX} characters. */
const Tag = z.string().max(TAG_MAX).refine((text) => !/\p{Cc}/u.test(text.replace(/[\n\t]/g, "")), {
  error: "must not contain control characters",
});

const Flag = z.preprocess((value) => {
  if (typeof value !== "string") return value;
  const text = value.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(text)) return true;
  if (["false", "0", "no", "off"].includes(text)) return false;
  return value;
}, z.boolean({ error: 'must be "true" or "false"' }));

const Fields = {
  /** Constant bitrate of the MP3 in kbit/s (one of {@linkcode MP3_BITRATES}); "128k" is read as 128. */
  bitrate: z.preprocess(
    (value) => (typeof value === "string" ? value.trim().replace(/k$/i, "") : value),
    whole().refine((n) => (MP3_BITRATES as readonly number[]).includes(n), {
      error: `must be one of ${MP3_BITRATES.join(", ")} (kbit/s)`,
    }),
  ).optional(),
  /** LAME VBR quality, 0 (best, ~245 kbit/s) to 9 (smallest, ~65 kbit/s); "V2" is read as 2. */
  quality: z.preprocess(
    (value) => (typeof value === "string" ? value.trim().replace(/^v/i, "") : value),
    whole().pipe(z.number().min(0).max(9)),
  ).optional(),
  /** Sample rate of the MP3 in Hz (one of {@linkcode MP3_SAMPLE_RATES}). Default: the source's, if an MP3 can have it. */
  sample_rate: whole().refine((n) => (MP3_SAMPLE_RATES as readonly number[]).includes(n), {
    error: `must be one of ${MP3_SAMPLE_RATES.join(", ")} (Hz)`,
  }).optional(),
  /** 1 (mono) or 2 (stereo). Default: the source's, with more than two channels downmixed to stereo. */
  channels: whole().pipe(z.number().min(1).max(2)).optional(),
  /** Where the MP3 starts in the source, in seconds. */
  start: Time.optional(),
  /** Where the MP3 ends in the source, in seconds (not with `duration`). */
  end: Time.optional(),
  /** How long the MP3 lasts, in seconds (not with `end`). */
  duration: Time.pipe(z.number().positive()).optional(),
  /** Which audio stream: its index among the audio streams (0 is the first), or an ISO 639-2 code ("fra"). */
  audio_track: z.union([
    whole().pipe(z.number().min(0).max(1000)),
    z.string().trim().toLowerCase().regex(
      /^[a-z]{3}$/,
      "must be an index (0, 1, …) or a language code (fra)",
    ),
  ]).optional(),
  /** EBU R128 loudness normalisation (two passes of ffmpeg's loudnorm). Also on when `loudness` is given. */
  normalize: Flag.optional(),
  /** The integrated loudness to normalise to, in LUFS (default -16). */
  loudness: decimal().pipe(z.number().min(-70).max(-5)).optional(),
  title: Tag.optional(),
  artist: Tag.optional(),
  album: Tag.optional(),
  genre: Tag.optional(),
  comment: Tag.optional(),
  /** The year of the recording. */
  year: whole().pipe(z.number().min(0).max(9999)).optional(),
  /** The track number, "3" or "3/12". */
  track: z.union([
    z.number().int().min(0),
    z.string().trim().regex(/^\d{1,4}(\/\d{1,4})?$/, 'must be "3" or "3/12"'),
  ])
    .transform(String).optional(),
  /**
   * ID3v2 version of the tags: 3 (default; read by every player, Windows Explorer included) or 4.
   */
  id3v2_version: whole().refine((n) => n === 3 || n === 4, { error: "must be 3 or 4" })
    .optional(),
  /**
   * The front cover: "auto" (default: the source's attached picture, if it has one), "none", or seconds into
   * the video at which a frame is taken.
   */
  cover: z.union([z.enum(["auto", "none"]), Time], {
    error: 'must be "auto", "none", or seconds into the video ("12.5")',
  }).optional(),
};

/** Every option, absent or given; an empty value (an empty form field) counts as absent. */
const RawOptions = z.preprocess(
  (raw) =>
    raw && typeof raw === "object" && !Array.isArray(raw)
      ? Object.fromEntries(Object.entries(raw).filter(([, value]) => value !== ""))
      : raw,
  z.object(Fields),
);

/** Options for one conversion, after validation; absent options take their defaults at conversion time. */
export const ConversionOptions = RawOptions.superRefine((o, ctx) => {
  const issue = (path: string, message: string) => ctx.addIssue({ code: "custom", path: [path], message });
  if (o.bitrate !== undefined && o.quality !== undefined) {
    issue("quality", 'give either "bitrate" (constant) or "quality" (variable), not both');
  }
  if (o.end !== undefined && o.duration !== undefined) {
    issue("duration", 'give either "end" or "duration", not both');
  }
  if (o.end !== undefined && o.end <= (o.start ?? 0)) issue("end", 'must be later than "start"');
  if (o.bitrate !== undefined && o.sample_rate !== undefined && o.bitrate > maxBitrateAt(o.sample_rate)) {
    issue(
      "bitrate",
      `must be at most ${maxBitrateAt(o.sample_rate)} at a sample rate of ${o.sample_rate} Hz`,
    );
  }
  if (o.normalize === false && o.loudness !== undefined) {
    issue("loudness", 'sets the normalisation target, so it needs "normalize" on');
  }
}).transform((o) => {
  // One form for options that mean the same: absent where they equal the default, so that they make the same
  // cache key ("normalize=true" is "loudness=-16"; "cover=auto" and "id3v2_version=3" are what absent means).
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(o)) if (value !== undefined) out[name] = value;
  if (o.loudness !== undefined) out.normalize = true;
  if (out.normalize === false) delete out.normalize;
  if (out.loudness === DEFAULT_LOUDNESS) delete out.loudness;
  if (out.cover === "auto") delete out.cover;
  if (out.id3v2_version === 3) delete out.id3v2_version;
  return out as typeof o;
});
/** Options for one conversion, after validation; absent options take their defaults at conversion time. */
export type ConversionOptions = z.infer<typeof ConversionOptions>;

/** The names of every option, to pick them out of a query string or form. */
export const OPTION_NAMES = Object.keys(Fields) as (keyof ConversionOptions)[];

/**
 * Validates raw option values (strings from a query or a form), throwing `invalid_option` naming the field.
 */
export function parseOptions(raw: Record<string, unknown>): ConversionOptions {
  const result = ConversionOptions.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue.path.join(".") || "options";
  throw new AppError("invalid_option", `Option "${field}" is invalid: ${issue.message}`);
}

/**
 * Bumped whenever the same options on the same input would give a different MP3 (a new encoder setting, a fixed
 * bug): outputs cached under an older version are then not reused.
 */
export const PIPELINE_VERSION = 1;

/** The options as one canonical text: sorted keys, absent options left out. Equal options give equal text. */
export function canonicalOptions(options: ConversionOptions): string {
  const sorted = Object.keys(options).sort().map((k) => [k, options[k as keyof ConversionOptions]]);
  return JSON.stringify(Object.fromEntries(sorted));
}

/**
 * The content-cache key of an output: the uploaded bytes' sha256, the canonical options, the pipeline version and
 * the owner (an API key id), hashed. Equal keys mean equal MP3s. The owner is in it so that one key can never
 * learn, from an instant answer, that another key converted the same file.
 */
export async function cacheKey(
  inputSha256: string,
  options: ConversionOptions,
  owner?: string,
): Promise<string> {
  const text = `v${PIPELINE_VERSION}\n${inputSha256}\n${canonicalOptions(options)}\n${owner ?? ""}`;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
