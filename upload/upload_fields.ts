/**
 * What a resumable or direct upload announces before its bytes (its file name, webhook URL and conversion
 * options), checked once at creation, so that a bad option never costs the client an upload.
 */
import {
  AppError,
  type ConversionOptions,
  displayFilename,
  Job,
  OPTION_NAMES,
  parseOptions,
} from "@vmp3/shared";

/** The checked fields of a new upload. */
export interface UploadFields {
  filename: string;
  webhookUrl?: string;
  options: ConversionOptions;
}

/** The longest webhook URL taken. */
const WEBHOOK_URL_MAX = 2048;

/**
 * Checks what a client announced: `options` holds conversion options by name (anything else in it is an
 * unknown option, 400 invalid_option); a bad option or webhook URL is 400 invalid_option.
 */
export function uploadFields(raw: {
  filename?: string;
  webhookUrl?: string;
  options: Record<string, unknown>;
}): UploadFields {
  const unknown = Object.keys(raw.options).filter((name) => !(OPTION_NAMES as string[]).includes(name));
  if (unknown.length > 0) {
    throw new AppError("invalid_option", `Unknown option ${JSON.stringify(unknown[0])}`);
  }
  const options = parseOptions(raw.options);
  const filename = displayFilename(raw.filename);
  const webhookUrl = webhookUrlOf(raw.webhookUrl);
  return webhookUrl === undefined ? { filename, options } : { filename, options, webhookUrl };
}

/** A webhook URL as a client gave it, checked by the job's own rule (400 invalid_option), or undefined if none. */
export function webhookUrlOf(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  const parsed = Job.shape.webhookUrl.safeParse(value);
  if (!parsed.success || value.length > WEBHOOK_URL_MAX) {
    throw new AppError(
      "invalid_option",
      `webhook_url must be an http:// or https:// URL of at most ${WEBHOOK_URL_MAX} characters`,
    );
  }
  return parsed.data;
}

/** The conversion options among `fields` (tus Upload-Metadata keys), by name; other keys are left out. */
export function pickOptions(fields: Record<string, string>): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of OPTION_NAMES) {
    if (Object.hasOwn(fields, name)) picked[name] = fields[name];
  }
  return picked;
}
