/**
 * @module
 * The behaviour every OutputCache must have, as tests any adapter's test file registers with its own factory.
 */
import assert from "node:assert/strict";
import type { JobOutput, OutputCache } from "@vmp3/shared";

function output(key: string): JobOutput {
  return {
    key,
    codec: "mp3",
    size: 1000,
    duration: 3,
    bitrate: 128000,
    sampleRate: 44100,
    channels: 2,
    sha256: "a".repeat(64),
    method: "encode",
  };
}

/** Registers the OutputCache tests for `name`, each run on a fresh cache from `open` (closed with `close`). */
export function testOutputCache(
  name: string,
  open: () => Promise<{ cache: OutputCache; close: () => Promise<void> | void }>,
): void {
  const test = (title: string, fn: (cache: OutputCache) => Promise<void>) =>
    Deno.test(`${name} output cache: ${title}`, async () => {
      const { cache, close } = await open();
      try {
        await fn(cache);
      } finally {
        await close();
      }
    });

  test("misses until an output is remembered, then hands it out", async (cache) => {
    assert.equal(await cache.claim("k1", "job-b"), null);
    await cache.remember("k1", output("outputs/a.mp3"), "job-a");
    assert.deepEqual(await cache.claim("k1", "job-b"), output("outputs/a.mp3"));
    assert.equal(await cache.claim("k2", "job-c"), null);
  });

  test("the first output remembered for a key stays", async (cache) => {
    await cache.remember("k1", output("outputs/a.mp3"), "job-a");
    await cache.remember("k1", output("outputs/b.mp3"), "job-b");
    assert.equal((await cache.claim("k1", "job-c"))?.key, "outputs/a.mp3");
  });

  test("an output shared by jobs is freed only when the last of them lets go", async (cache) => {
    await cache.remember("k1", output("outputs/a.mp3"), "job-a");
    await cache.claim("k1", "job-b");
    await cache.claim("k1", "job-c");
    assert.equal(await cache.release("outputs/a.mp3", "job-a"), false, "b and c still use it");
    assert.equal((await cache.claim("k1", "job-d"))?.key, "outputs/a.mp3", "still offered");
    assert.equal(await cache.release("outputs/a.mp3", "job-b"), false);
    assert.equal(await cache.release("outputs/a.mp3", "job-d"), false);
    assert.equal(await cache.release("outputs/a.mp3", "job-c"), true, "no user left");
    assert.equal(await cache.claim("k1", "job-e"), null, "a freed output is no longer offered");
  });

  test("releasing twice, or a job that never used it, does not free an output still in use", async (cache) => {
    await cache.remember("k1", output("outputs/a.mp3"), "job-a");
    await cache.claim("k1", "job-b");
    assert.equal(await cache.release("outputs/a.mp3", "job-x"), false);
    assert.equal(await cache.release("outputs/a.mp3", "job-a"), false);
    assert.equal(await cache.release("outputs/a.mp3", "job-a"), false);
    assert.equal(await cache.release("outputs/a.mp3", "job-b"), true);
  });

  test("a job whose output lost the race to another is still counted on its own output", async (cache) => {
    await cache.remember("k1", output("outputs/a.mp3"), "job-a");
    await cache.remember("k1", output("outputs/b.mp3"), "job-b");
    assert.equal(await cache.release("outputs/b.mp3", "job-b"), true, "b's own MP3 is free to delete");
    assert.equal((await cache.claim("k1", "job-c"))?.key, "outputs/a.mp3", "a's entry is untouched");
  });

  test("a release racing claims never frees an output a claim handed out", async (cache) => {
    for (let round = 0; round < 10; round++) {
      const outputKey = `outputs/race-${round}.mp3`;
      await cache.remember(`race-${round}`, output(outputKey), "job-a");
      const [released, ...claims] = await Promise.all([
        cache.release(outputKey, "job-a"),
        ...Array.from({ length: 10 }, (_, i) => cache.claim(`race-${round}`, `job-${i}`)),
      ]);
      const handedOut = claims.filter((c) => c !== null).length;
      assert.ok(!(released && handedOut > 0), `round ${round}: freed while ${handedOut} claims got it`);
    }
  });
}
