import assert from "node:assert/strict";
import { createChunkCollector } from "./chunk_collector.ts";

const MiB = 1024 * 1024;

/** A collector on a recording `gc` and an external-memory figure the test sets (a full GC frees `freed`). */
function recorded(start = 100 * MiB) {
  const calls: string[] = [];
  const state = { external: start, freed: 0 };
  const collect = createChunkCollector({
    gc: (options) => {
      calls.push(options?.type ?? "full");
      if (options?.type === "major") state.external -= state.freed;
    },
    external: () => state.external,
  });
  return { calls, state, collect };
}

Deno.test("a minor GC every 2 MiB streamed, counted over all streams together", () => {
  const { calls, collect } = recorded();
  // Twenty streams' chunks of 64 KiB, interleaved: one count for the process, not one per stream.
  for (let i = 0; i < 20 * 16; i++) collect(64 * 1024);
  assert.deepEqual(calls, Array(10).fill("minor"), "20 MiB streamed: 10 minor GCs, no full one");
  collect(100);
  assert.equal(calls.length, 10, "nothing until the next 2 MiB");
});

Deno.test("a full GC once external memory has grown 8 MiB past where the last one left it", () => {
  const { calls, state, collect } = recorded();
  state.external += 7 * MiB;
  collect(2 * MiB);
  assert.deepEqual(calls, ["minor"], "7 MiB of growth: minor only");
  state.external += 1 * MiB;
  state.freed = 5 * MiB; // of the 8 MiB, 3 are live (say, a new part buffer)
  collect(2 * MiB);
  assert.deepEqual(calls, ["minor", "minor", "major"]);
  assert.equal(state.external, 103 * MiB);
  // Growth now counts from 103 MiB, where the full GC left it.
  state.external = 110 * MiB;
  collect(2 * MiB);
  assert.deepEqual(calls.slice(3), ["minor"], "7 MiB past 103: no full GC yet");
  state.external = 111 * MiB;
  collect(2 * MiB);
  assert.deepEqual(calls.slice(4), ["minor", "major"]);
});

Deno.test("memory V8 freed on its own lowers the point growth is counted from", () => {
  const { calls, state, collect } = recorded();
  state.external = 90 * MiB;
  collect(2 * MiB);
  state.external = 97 * MiB; // 7 MiB past the lowest point, though 3 under the start
  collect(2 * MiB);
  assert.deepEqual(calls, ["minor", "minor"]);
  state.external = 98 * MiB;
  collect(2 * MiB);
  assert.deepEqual(calls, ["minor", "minor", "minor", "major"]);
});

Deno.test("without V8's gc exposed, the collector does nothing and reads no memory figure", () => {
  let reads = 0;
  const collect = createChunkCollector({ gc: undefined, external: () => ++reads });
  for (let i = 0; i < 100; i++) collect(MiB);
  assert.equal(reads, 0);
});

Deno.test("with the real V8: spent 64 KiB chunks are freed while streaming, not left to pile up", async () => {
  // A child process with --expose-gc, as the services run: 64 MiB of fresh chunks, each held briefly in a queue
  // of 16 (as queued stream chunks are), told to the process's collector. External memory must stay near the queue.
  const script = `
    import { collectSpentChunks } from ${
    JSON.stringify(new URL("./chunk_collector.ts", import.meta.url).href)
  };
    const queue = [];
    let peak = 0;
    for (let i = 0; i < 1024; i++) {
      queue.push(new Uint8Array(64 * 1024).fill(i));
      if (queue.length > 16) collectSpentChunks(queue.shift().byteLength);
      peak = Math.max(peak, Deno.memoryUsage().external);
    }
    console.log(JSON.stringify({ peak, gc: typeof globalThis.gc }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success);
  const { peak, gc } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(gc, "function");
  assert.ok(peak < 24 * MiB, `external memory peaked at ${(peak / MiB).toFixed(1)} MiB for 64 MiB streamed`);
});
