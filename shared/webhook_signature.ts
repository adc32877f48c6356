/**
 * Webhook signatures as the Standard Webhooks spec (standardwebhooks.com) defines them: the headers
 * `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` = `v1,<base64 HMAC-SHA256>` of
 * `${id}.${timestamp}.${body}`, keyed by the bytes a `whsec_<base64>` secret names. Pure: no I/O.
 */

const PREFIX = "whsec_";

function fromBase64(text: string): Uint8Array | null {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** The key bytes of a `whsec_<base64>` secret (at least 16 bytes), or null when it is not one. */
export function webhookSecretKey(secret: string): Uint8Array | null {
  if (!secret.startsWith(PREFIX)) return null;
  const key = fromBase64(secret.slice(PREFIX.length));
  return key && key.length >= 16 ? key : null;
}

/** A new random secret, `whsec_` and 32 random bytes in base64. */
export function generateWebhookSecret(): string {
  return PREFIX + toBase64(crypto.getRandomValues(new Uint8Array(32)));
}

async function hmac(key: Uint8Array, content: string): Promise<string> {
  const cryptoKey = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(key),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign("HMAC", cryptoKey, new TextEncoder().encode(content));
  return toBase64(new Uint8Array(signature));
}

/** The three headers of one delivery attempt of `body`, signed with `secret` at `now`. */
export async function signWebhook(
  secret: string,
  message: { id: string; body: string; now: Date },
): Promise<Record<"webhook-id" | "webhook-timestamp" | "webhook-signature", string>> {
  const key = webhookSecretKey(secret);
  if (!key) throw new RangeError("A webhook secret must be whsec_ followed by at least 16 bytes in base64");
  const timestamp = String(Math.floor(message.now.getTime() / 1000));
  const signature = await hmac(key, `${message.id}.${timestamp}.${message.body}`);
  return { "webhook-id": message.id, "webhook-timestamp": timestamp, "webhook-signature": `v1,${signature}` };
}

/**
 * Whether `headers` carry a valid signature of `body` by `secret`, with a timestamp within `toleranceSeconds`
 * (default 300) of `now`. Any of several space-separated signatures may match.
 */
export async function verifyWebhook(
  secret: string,
  headers: Headers,
  body: string,
  options: { now?: Date; toleranceSeconds?: number } = {},
): Promise<boolean> {
  const key = webhookSecretKey(secret);
  const id = headers.get("webhook-id");
  const timestamp = headers.get("webhook-timestamp");
  const signatures = headers.get("webhook-signature");
  if (!key || !id || !timestamp || !signatures || !/^\d{1,12}$/.test(timestamp)) return false;
  const now = (options.now ?? new Date()).getTime() / 1000;
  if (Math.abs(now - Number(timestamp)) > (options.toleranceSeconds ?? 300)) return false;
  const expected = await hmac(key, `${id}.${timestamp}.${body}`);
  return signatures.split(" ").some((part) => {
    const [version, signature] = part.split(",", 2);
    return version === "v1" && signature !== undefined && constantTimeEqual(signature, expected);
  });
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}
