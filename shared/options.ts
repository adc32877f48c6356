/** Conversion options a client may give, as form fields or query parameters. */
import { z } from "zod";
import { AppError } from "./errors.ts";

/** Options for one conversion, after validation and defaults. */
export const ConversionOptions = z.object({
  /** Constant bitrate of the MP3 in kbit/s. */
  bitrate: z.coerce.number().int().min(32).max(320).default(192),
});
/** Options for one conversion, after validation and defaults. */
export type ConversionOptions = z.infer<typeof ConversionOptions>;

/** The names of every option, to pick them out of a query string or form. */
export const OPTION_NAMES = Object.keys(ConversionOptions.shape) as (keyof ConversionOptions)[];

/**
 * Validates raw option values (strings from a query or a form), throwing `invalid_option` naming the field.
 */
export function parseOptions(raw: Record<string, string | undefined>): ConversionOptions {
  const result = ConversionOptions.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue.path.join(".") || "options";
  throw new AppError("invalid_option", `Option "${field}" is invalid: ${issue.message}`);
}
