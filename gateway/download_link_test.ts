import assert from "node:assert/strict";
import { createDownloadLinks } from "./download_link.ts";

const secret = "s".repeat(32);
const id = "9b2e4f70-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const other = "0b2e4f70-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

function parts(link: string): [string | undefined, string | undefined] {
  const url = new URL(link, "http://x");
  return [url.searchParams.get("expires") ?? undefined, url.searchParams.get("sig") ?? undefined];
}

Deno.test("a download link works for its own job until it expires, and for no other job", async () => {
  const links = createDownloadLinks(secret, 60);
  const now = new Date("2026-01-01T00:00:00Z");
  const link = await links.sign(id, now);
  assert.match(link, new RegExp(`^/v1/jobs/${id}/download\\?expires=\\d+&sig=[\\w-]+$`));
  const [expires, sig] = parts(link);
  assert.equal(await links.verify(id, expires, sig, new Date(now.getTime() + 59_000)), true);
  assert.equal(await links.verify(id, expires, sig, new Date(now.getTime() + 60_000)), false);
  assert.equal(await links.verify(other, expires, sig, now), false);
});

Deno.test("a download link is refused with a changed expiry, a changed signature, another secret or none", async () => {
  const links = createDownloadLinks(secret, 60);
  const now = new Date("2026-01-01T00:00:00Z");
  const [expires, sig] = parts(await links.sign(id, now));
  assert.equal(await links.verify(id, String(Number(expires) + 3600), sig, now), false);
  const changed = `${sig!.slice(0, -1)}${sig!.endsWith("A") ? "B" : "A"}`;
  assert.equal(await links.verify(id, expires, changed, now), false);
  assert.equal(await links.verify(id, expires, undefined, now), false);
  assert.equal(await links.verify(id, "1e12", sig, now), false);
  assert.equal(await createDownloadLinks("t".repeat(32), 60).verify(id, expires, sig, now), false);
  assert.throws(() => createDownloadLinks("short", 60));
});
