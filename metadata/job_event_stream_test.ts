/**
 * The SSE stream of a job with event ids, through the Gateway to Metadata: resuming with Last-Event-ID gets exactly
 * what was missed, then live changes; on the Redis Streams log (real Redis, TEST_REDIS_URL) and on the KV one.
 */
import assert from "node:assert/strict";
import { createKvJobStore } from "@vmp3/adapters/kv-jobs";
import { createKvOutputCache } from "@vmp3/adapters/kv-cache";
import { createKvEventLog } from "@vmp3/adapters/kv-event-log";
import { createRedisClient, createRedisJobStore, createRedisOutputCache } from "@vmp3/adapters/redis";
import { createRedisEventLog } from "@vmp3/adapters/redis-event-log";
import type { JobEvent, JobEventLog, JobStore, OutputCache } from "@vmp3/shared";
import { createGatewayApp } from "@vmp3/gateway";
import { createMetadataApp } from "./app.ts";
import { createMetadataClient } from "./client.ts";

interface Backend {
  store: JobStore;
  cache: OutputCache;
  log: JobEventLog;
  close(): void | Promise<void>;
}

async function kvBackend(): Promise<Backend> {
  const kv = await Deno.openKv(":memory:");
  const log = createKvEventLog(kv, { pollMs: 10 });
  return { store: createKvJobStore(kv), cache: createKvOutputCache(kv), log, close: () => kv.close() };
}

function redisBackend(): Promise<Backend> {
  const url = Deno.env.get("TEST_REDIS_URL");
  if (!url) {
    throw new Error("TEST_REDIS_URL is not set: run through `bash scripts/test_servers.sh deno test -A`");
  }
  const redis = createRedisClient(url);
  const prefix = `test-${crypto.randomUUID()}:`;
  const log = createRedisEventLog(redis, { prefix });
  return Promise.resolve({
    store: createRedisJobStore(redis, { prefix }),
    cache: createRedisOutputCache(redis, { prefix }),
    log,
    close: () => {
      log.close();
      redis.disconnect();
    },
  });
}

interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** Reads a text/event-stream body event by event; comments (keep-alives) are counted, not returned. */
function sseReader(response: Response) {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let comments = 0;
  /** The next block (an event, or comments only), its comments counted; null once the stream has ended. */
  const nextBlock = async (): Promise<SseEvent | null> => {
    for (;;) {
      const end = buffer.indexOf("\n\n");
      if (end !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event: SseEvent = { data: "" };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments++;
          else if (line.startsWith("id: ")) event.id = line.slice(4);
          else if (line.startsWith("event: ")) event.event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        event.data = data.join("\n");
        return event;
      }
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += value;
    }
  };
  return {
    get comments() {
      return comments;
    },
    /** The next event, or null once the stream has ended. */
    async next(): Promise<SseEvent | null> {
      for (;;) {
        const event = await nextBlock();
        if (!event || event.data !== "") return event;
      }
    },
    /**
     * Waits for the next comment (a keep-alive), for at most `ms`; fails if an event or the end of the stream
     * comes first.
     */
    async nextComment(ms: number): Promise<void> {
      const before = comments;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no keep-alive within ${ms} ms`)), ms);
      });
      try {
        while (comments === before) {
          const block = await Promise.race([nextBlock(), timeout]);
          assert.ok(block, "the stream ended before a keep-alive");
          assert.equal(block.data, "", `an event came before a keep-alive: ${block.data}`);
        }
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => reader.cancel(),
  };
}

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

async function setup(open: () => Promise<Backend>) {
  const backend = await open();
  const metadataApp = createMetadataApp({ ...backend, keepAliveMs: 100 });
  const metadata = createMetadataClient((request) => metadataApp.fetch(request));
  const gateway = createGatewayApp({ upload: () => new Response(null, { status: 500 }), metadata });
  const id = crypto.randomUUID();
  const post = async (path: string, body: unknown) => {
    const response = await metadataApp.request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    assert.ok(response.ok, `${path}: ${response.status} ${text}`);
  };
  const progress = (s: number, value: number): JobEvent => ({
    type: "job.progress",
    version: 1,
    jobId: id,
    at: at(s),
    progress: value,
  });
  await post("/jobs", { id, input: { filename: "clip.mp4", size: 5 } });
  return { backend, gateway, id, post, progress };
}

for (const [name, open] of [["redis", redisBackend], ["KV", kvBackend]] as const) {
  Deno.test(`${name}: a client that reconnects with Last-Event-ID gets exactly what it missed, in order, then live changes`, async () => {
    const { backend, gateway, id, post, progress } = await setup(open);
    try {
      const first = sseReader(await gateway.request(`/v1/jobs/${id}/events`));
      const created = await first.next();
      assert.equal(JSON.parse(created!.data).status, "queued");
      assert.ok(created!.id, "the first event carries the id of the job's last log entry");
      await post(`/jobs/${id}/events`, {
        type: "job.started",
        version: 1,
        jobId: id,
        at: at(1),
        duration: 3,
      });
      const second = await first.next();
      assert.equal(second?.event, "job");
      assert.equal(JSON.parse(second!.data).status, "converting");
      assert.ok(second!.id && second!.id !== created!.id);
      await first.close(); // the client goes away after two events

      for (let n = 1; n <= 3; n++) await post(`/jobs/${id}/events`, progress(1 + n, n / 10));

      const again = sseReader(
        await gateway.request(`/v1/jobs/${id}/events`, { headers: { "last-event-id": second!.id! } }),
      );
      const missed = [await again.next(), await again.next(), await again.next()];
      assert.deepEqual(
        missed.map((e) => JSON.parse(e!.data).progress),
        [0.1, 0.2, 0.3],
        "exactly the missed ones",
      );
      const ids = missed.map((e) => e!.id!);
      assert.equal(new Set([second!.id, ...ids]).size, 4, "each with its own id");

      // Live: a change after the reconnection comes next, then the final state ends the stream.
      await post(`/jobs/${id}/events`, progress(5, 0.6));
      assert.equal(JSON.parse((await again.next())!.data).progress, 0.6);
      await post(`/jobs/${id}/events`, {
        type: "job.failed",
        version: 1,
        jobId: id,
        at: at(6),
        error: { code: "no_audio_stream", message: "no audio" },
      });
      const last = await again.next();
      assert.equal(JSON.parse(last!.data).status, "failed");
      assert.equal(await again.next(), null, "the stream ends after a final state");

      // ?lastEventId= works as the header does, and resuming from the middle replays the rest.
      const byQuery = sseReader(await gateway.request(`/v1/jobs/${id}/events?lastEventId=${ids[1]}`));
      const replay = [];
      for (let event = await byQuery.next(); event; event = await byQuery.next()) replay.push(event);
      assert.deepEqual(replay.map((e) => JSON.parse(e.data).progress), [0.3, 0.6, 0.6]);
      assert.deepEqual(replay.map((e) => JSON.parse(e.data).status), ["converting", "converting", "failed"]);
    } finally {
      await backend.close();
    }
  });

  Deno.test(`${name}: an unknown or malformed Last-Event-ID gets the current job, then live changes`, async () => {
    const { backend, gateway, id, post, progress } = await setup(open);
    try {
      await post(`/jobs/${id}/events`, progress(1, 0.5));
      for (const lastEventId of ["garbage", "1-999999", "99999999999999-1"]) {
        const events = sseReader(
          await gateway.request(`/v1/jobs/${id}/events`, { headers: { "last-event-id": lastEventId } }),
        );
        const current = await events.next();
        assert.deepEqual([JSON.parse(current!.data).status, JSON.parse(current!.data).progress], [
          "converting",
          0.5,
        ], lastEventId);
        await events.close();
      }
      const events = sseReader(
        await gateway.request(`/v1/jobs/${id}/events`, { headers: { "last-event-id": "garbage" } }),
      );
      await events.next();
      // Keep-alives go out every 100 ms while nothing happens: two in a row, each well within 5 s.
      await events.nextComment(5_000);
      await events.nextComment(5_000);
      await post(`/jobs/${id}/events`, progress(2, 0.7));
      const live = await events.next();
      assert.equal(JSON.parse(live!.data).progress, 0.7);
      await events.close();
    } finally {
      await backend.close();
    }
  });

  Deno.test(`${name}: a change that missed the log still reaches a client, which ends after the final state`, async () => {
    const { backend, gateway, id } = await setup(open);
    try {
      const events = sseReader(await gateway.request(`/v1/jobs/${id}/events`));
      assert.equal(JSON.parse((await events.next())!.data).status, "queued");
      // Changed in the store without a log entry (as a caller not wired to the log would).
      await backend.store.update(id, (job) => ({ ...job, status: "cancelled", updatedAt: at(9) }));
      const ended = await events.next();
      assert.equal(JSON.parse(ended!.data).status, "cancelled");
      assert.equal(ended!.id, undefined, "the log did not name it");
      assert.equal(await events.next(), null);
    } finally {
      await backend.close();
    }
  });
}
