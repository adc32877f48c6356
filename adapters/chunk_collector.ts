/**
 * @module
 * Frees the spent chunks of streamed bodies promptly, for the whole process. Each chunk of a request body is a
 * fresh buffer outside V8's heap; V8 lets tens of megabytes of spent ones pile up before it collects them, and with
 * 20 uploads at once that pile was, after the part buffers, the largest part of Upload's memory
 * (docs/reliability.md, bench/upload_rss.ts).
 *
 * Two rules, counted over every stream of the process together (a count per stream would, with 20 uploads, run a
 * minor GC every 100 KB, and a chunk still queued in a stream would then live through two of them and be promoted
 * to the old generation, where only a full GC frees it):
 * - a minor GC every 2 MiB streamed (about 0.4 ms each), which frees the chunks that died young;
 * - a full GC when V8's external memory has grown by 8 MiB past where the last full GC left it (what is held then
 *   is live: part buffers, chunks queued in streams), which frees the promoted chunks. One upload alone seldom
 *   needs it (twice in 500 MB, as its part buffers are made); 20 at once, about once every 150 MB streamed (about
 *   20 ms each, under 1% of the time).
 *
 * Only where the process runs with `--v8-flags=--expose-gc` (Upload, Convert and the Gateway do, see
 * scripts/services.ts); elsewhere it does nothing.
 */

/** What a {@linkcode ChunkCollector} uses: V8's `gc` and the size of its external memory. */
export interface ChunkCollectorDeps {
  /** V8's exposed `gc`; undefined means collecting is off. */
  gc?: (options?: { type: "minor" | "major" }) => void;
  /** V8's external memory now, in bytes (`Deno.memoryUsage().external`). */
  external: () => number;
  /** Bytes streamed between minor GCs (default 2 MiB). */
  minorEveryBytes?: number;
  /** Growth of external memory past where the last full GC left it that calls for another (default 8 MiB). */
  fullAfterGrowthBytes?: number;
}

/** Told of every chunk a stream has consumed (its byte length); collects when the rules above say so. */
export type ChunkCollector = (bytes: number) => void;

/** Creates a {@linkcode ChunkCollector}; see the module's documentation for its rules. */
export function createChunkCollector(deps: ChunkCollectorDeps): ChunkCollector {
  const { gc, external } = deps;
  if (!gc) return () => {};
  const minorEvery = deps.minorEveryBytes ?? 2 * 1024 * 1024;
  const fullAfter = deps.fullAfterGrowthBytes ?? 8 * 1024 * 1024;
  let since = 0;
  let baseline = external();
  return (bytes) => {
    since += bytes;
    if (since < minorEvery) return;
    since = 0;
    gc({ type: "minor" });
    const now = external();
    if (now - baseline >= fullAfter) {
      gc({ type: "major" });
      baseline = external();
    } else if (now < baseline) {
      baseline = now; // freed by V8's own collections: growth counts from the lowest point since
    }
  };
}

/** The process's one {@linkcode ChunkCollector}, on V8's `gc` when it is exposed. */
export const collectSpentChunks: ChunkCollector = createChunkCollector({
  gc: (globalThis as { gc?: ChunkCollectorDeps["gc"] }).gc,
  external: () => Deno.memoryUsage().external,
});
