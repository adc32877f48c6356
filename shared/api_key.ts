/**
 * API keys: who may call the public API, and within which limits. A key's secret is shown once, at creation; only
 * its sha256 is stored. A token reads `vmp3_<id>_<secret>`: the id finds the record, the secret proves the holder.
 */
import { z } from "zod";

/** A key's id: 12 lowercase letters and digits, in the token and in job records (`Job.owner`). */
export const KeyId = z.string().regex(/^[a-z0-9]{12}$/);

/** What a key may do, and how much. */
export const KeyLimits = z.object({
  /** Requests per minute (each API call counts one). */
  requestsPerMinute: z.number().int().positive(),
  /** Jobs queued or converting at once; a new one past it is refused with 429 quota_exceeded. */
  concurrentJobs: z.number().int().positive(),
  /** Bytes uploaded per UTC day; an upload that would pass it is refused with 429 quota_exceeded. */
  bytesPerDay: z.number().int().positive(),
});
/** What a key may do, and how much. */
export type KeyLimits = z.infer<typeof KeyLimits>;

/** The limits of a key made without any. */
export const DEFAULT_KEY_LIMITS: KeyLimits = {
  requestsPerMinute: 600,
  concurrentJobs: 10,
  bytesPerDay: 50 * 1024 ** 3,
};

/** An API key as stored: never its secret, only the secret's sha256. */
export const ApiKey = z.object({
  id: KeyId,
  name: z.string().min(1).max(200),
  /** Hex sha256 of the secret part of the token. */
  secretSha256: z.string().regex(/^[0-9a-f]{64}$/),
  limits: KeyLimits,
  /** Where this key's jobs' events are also POSTed, signed with `webhookSecret` (Standard Webhooks). */
  webhookUrl: z.url({ protocol: /^https?$/ }).optional(),
  /** `whsec_` and the base64 of 32 random bytes. */
  webhookSecret: z.string().regex(/^whsec_[A-Za-z0-9+/=]+$/).optional(),
  createdAt: z.iso.datetime(),
});
/** An API key as stored. */
export type ApiKey = z.infer<typeof ApiKey>;

const TOKEN = /^vmp3_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Hex sha256 of a string's UTF-8 bytes. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A new key's id and secret, and the token that carries both (shown to its holder once). */
export function newKeyToken(): { id: string; secret: string; token: string } {
  const random = crypto.getRandomValues(new Uint8Array(12));
  const id = Array.from(random, (b) => ALPHABET[b % ALPHABET.length]).join("");
  const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
  return { id, secret, token: `vmp3_${id}_${secret}` };
}

/** The id and secret of a token, or null if it is not shaped like one. */
export function parseKeyToken(token: string): { id: string; secret: string } | null {
  const match = TOKEN.exec(token);
  return match ? { id: match[1], secret: match[2] } : null;
}

/** A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

/** Whether two equal-length hex digests are equal, in time that does not depend on where they differ. */
export function sameDigest(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
