import assert from "node:assert/strict";
import { streamShows } from "./job_stream_watch.ts";

/** A body that sends `chunks` one by one, then ends (or stays open with `open`), and says when it was cancelled. */
function body(chunks: string[], open = false) {
  const state = { cancelled: false };
  const encoder = new TextEncoder();
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(encoder.encode(chunks[i++]));
      else if (!open) controller.close();
      else return new Promise(() => {}); // never more
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

const job = (status: string) => `event: job\ndata: ${JSON.stringify({ id: "j", status, progress: 0.5 })}\n`;

Deno.test("streamShows is true at the first job event in one of the statuses, and stops reading", async () => {
  const { stream, state } = body(
    [`${job("queued")}id: 1\n\n`, job("converting") + "\n", job("done") + "\n"],
    true,
  );
  assert.equal(await streamShows(stream, ["done", "failed"]), true);
  assert.ok(state.cancelled, "the stream is cancelled once the status is seen");
});

Deno.test("streamShows reads events split anywhere across chunks, CRLF lines, and skips comments", async () => {
  const text = `: keep-alive\r\n\r\n${job("converting")}\n${job("failed")}\n`;
  const chunks = text.match(/.{1,7}/gs)!;
  assert.equal(await streamShows(body(chunks).stream, ["done", "failed"]), true);
});

Deno.test("streamShows is false when the stream ends first, or shows only other statuses and events", async () => {
  assert.equal(await streamShows(body([job("converting") + "\n"]).stream, ["done"]), false);
  // Another event type, data that is not a job, a partial last event.
  const other = `event: other\ndata: {"status":"done"}\n\ndata: not json\n\n${job("done")}`;
  assert.equal(await streamShows(body([other]).stream, ["done"]), false);
});

Deno.test("streamShows rejects when reading fails", async () => {
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new Error("connection reset"));
    },
  });
  await assert.rejects(streamShows(stream, ["done"]), /connection reset/);
});
