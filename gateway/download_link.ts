/**
 * Short-lived download links bound to one job: `/v1/jobs/{id}/download?expires=<unix s>&sig=<HMAC>`, signed with a
 * secret only the Gateway knows. A link works without an API key (a browser or a media player can follow it) until
 * it expires, and only for its own job.
 */

const encoder = new TextEncoder();

/** Signs and checks download links. */
export interface DownloadLinks {
  /** A path to download job `id`, valid for the links' lifetime from `now`. */
  sign(id: string, now?: Date): Promise<string>;
  /** Whether `expires` and `sig` are a valid, unexpired signature for job `id`. */
  verify(id: string, expires: string | undefined, sig: string | undefined, now?: Date): Promise<boolean>;
}

function base64url(bytes: ArrayBuffer): string {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** Creates download links signed with `secret` (at least 32 characters), each valid for `lifetimeSeconds`. */
export function createDownloadLinks(secret: string, lifetimeSeconds: number): DownloadLinks {
  if (secret.length < 32) throw new Error("The download link secret must have at least 32 characters");
  const key = crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
    ],
  );
  const signature = async (id: string, expires: string) =>
    base64url(await crypto.subtle.sign("HMAC", await key, encoder.encode(`download\n${id}\n${expires}`)));
  // The links signed lately: a client polling a job gets the same link for a second (its expiry is in whole
  // seconds), and it is signed once. Forgotten all at once when full.
  const recent = new Map<string, string>();
  return {
    async sign(id, now = new Date()) {
      const expires = String(Math.floor(now.getTime() / 1000) + lifetimeSeconds);
      const memo = `${id}\n${expires}`;
      let link = recent.get(memo);
      if (link === undefined) {
        const query = new URLSearchParams({ expires, sig: await signature(id, expires) });
        link = `/v1/jobs/${encodeURIComponent(id)}/download?${query}`;
        if (recent.size >= 1000) recent.clear();
        recent.set(memo, link);
      }
      return link;
    },
    async verify(id, expires, sig, now = new Date()) {
      if (!expires || !sig || !/^\d{1,12}$/.test(expires)) return false;
      if (Number(expires) * 1000 <= now.getTime()) return false;
      const expected = await signature(id, expires);
      if (expected.length !== sig.length) return false;
      let diff = 0;
      for (let i = 0; i < expected.length; i++) diff |= expected.charCodeAt(i) ^ sig.charCodeAt(i);
      return diff === 0;
    },
  };
}

/**
 * The configured link secret, or a random one made now (and said so: links then stop working when the process
 * ends, and differ between instances, so set DOWNLOAD_LINK_SECRET wherever more than one Gateway runs).
 */
export function downloadLinkSecret(configured: string | undefined): string {
  if (configured) return configured;
  console.error(
    "DOWNLOAD_LINK_SECRET is not set: download links are signed with a random secret, valid in this process only",
  );
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}
