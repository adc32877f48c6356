/**
 * Tests of the Redis job store against a real Redis. Run through `bash scripts/test_servers.sh deno test -A ...`.
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { applyEvent, createJob, type Job, type JobEvent } from "@vmp3/shared";
import { createRedisClient, createRedisJobStore } from "./redis_job_store.ts";
import { testJobStore } from "./testing/job_store_contract.ts";

function redisUrl(): string {
  const value = Deno.env.get("TEST_REDIS_URL");
  if (!value) {
    throw new Error(
      "TEST_REDIS_URL is not set: run through `bash scripts/test_servers.sh deno test -A adapters/`",
    );
  }
  return value;
}

function newJob(): Job {
  return createJob(
    { id: crypto.randomUUID(), input: { filename: "clip.mp4", size: 0 } },
    new Date("2024-01-01T00:00:00Z"),
  );
}

async function withStore(fn: (store: ReturnType<typeof createRedisJobStore>) => Promise<void>) {
  const redis = createRedisClient(redisUrl());
  try {
    await fn(createRedisJobStore(redis, { prefix: `test-${crypto.randomUUID()}:` }));
  } finally {
    redis.disconnect();
  }
}

Deno.test("redis: insert, get and update round-trip", async () => {
  await withStore(async (store) => {
    const job = newJob();
    assert.equal(await store.get(job.id), null);
    assert.equal(await store.insert(job), true);
    assert.deepEqual(await store.get(job.id), job);
    const started = applyEvent(job, {
      type: "job.started",
      version: 1,
      jobId: job.id,
      at: "2024-01-01T00:00:01.000Z",
      duration: 12.5,
    });
    const updated = await store.update(job.id, (current) =>
      applyEvent(current, {
        type: "job.started",
        version: 1,
        jobId: current.id,
        at: "2024-01-01T00:00:01.000Z",
        duration: 12.5,
      }));
    assert.deepEqual(updated, started);
    assert.deepEqual(await store.get(job.id), started);
  });
});

Deno.test("redis: a second insert of the same id returns false and changes nothing", async () => {
  await withStore(async (store) => {
    const job = newJob();
    assert.equal(await store.insert(job), true);
    assert.equal(await store.insert({ ...job, input: { filename: "other.mp4", size: 9 } }), false);
    assert.deepEqual(await store.get(job.id), job);
  });
});

Deno.test("redis: update of a missing job returns null and writes nothing", async () => {
  await withStore(async (store) => {
    const id = crypto.randomUUID();
    assert.equal(await store.update(id, (job) => ({ ...job, progress: 0.5 })), null);
    assert.equal(await store.get(id), null);
  });
});

Deno.test("redis: 50 concurrent updates lose none", async () => {
  await withStore(async (store) => {
    const job = newJob();
    await store.insert(job);
    await Promise.all(
      Array.from({ length: 50 }, () =>
        store.update(job.id, (current) => ({
          ...current,
          input: { ...current.input, size: current.input.size + 1 },
        }))),
    );
    assert.equal((await store.get(job.id))?.input.size, 50);
  });
});

Deno.test("redis: 50 concurrent progress events through applyEvent end at the highest", async () => {
  await withStore(async (store) => {
    const job = newJob();
    await store.insert(job);
    const events: JobEvent[] = Array.from({ length: 50 }, (_, i) => ({
      type: "job.progress",
      version: 1,
      jobId: job.id,
      at: new Date(Date.UTC(2024, 0, 1, 0, 0, i)).toISOString(),
      progress: (i + 1) / 50,
    }));
    // Shuffled, so late events arrive after newer ones and must not move the job back.
    events.sort(() => Math.random() - 0.5);
    await Promise.all(events.map((event) => store.update(job.id, (current) => applyEvent(current, event))));
    const final = await store.get(job.id);
    assert.equal(final?.progress, 1);
    assert.equal(final?.status, "converting");
  });
});

Deno.test("redis: with Redis unreachable, get() fails fast instead of hanging", async () => {
  // A port that was free a moment ago: nothing listens on it.
  const port = await new Promise<number>((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as { port: number };
      server.close(() => resolve(address.port));
    });
  });
  const errors: Error[] = [];
  const redis = createRedisClient(`redis://127.0.0.1:${port}`, { onError: (e) => errors.push(e) });
  try {
    const store = createRedisJobStore(redis);
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      await assert.rejects(store.get(crypto.randomUUID()));
      const took = performance.now() - started;
      assert.ok(took < 1500, `get() took ${took} ms`);
    }
    assert.ok(errors.length > 0);
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis: with Redis not answering (paused), get() fails within the command timeout", async () => {
  // A server that accepts connections and never answers, like a Redis stopped with SIGSTOP.
  const sockets: import("node:net").Socket[] = [];
  const server = createServer((socket) => sockets.push(socket));
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  const redis = createRedisClient(`redis://127.0.0.1:${port}`, { onError: () => {} });
  try {
    const store = createRedisJobStore(redis);
    const started = performance.now();
    await assert.rejects(store.get(crypto.randomUUID()));
    const took = performance.now() - started;
    assert.ok(took < 1500, `get() took ${took} ms`);
  } finally {
    redis.disconnect();
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("redis: the store fails fast while Redis is down and recovers when it is back", async () => {
  const restart = Deno.env.get("TEST_REDIS_START");
  assert.ok(restart, "TEST_REDIS_START is not set");
  const redis = createRedisClient(redisUrl(), { onError: () => {} });
  try {
    const store = createRedisJobStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
    const job = newJob();
    assert.equal(await store.insert(job), true);

    const admin = createRedisClient(redisUrl(), { onError: () => {} });
    await admin.connect();
    await admin.call("SHUTDOWN", "NOSAVE").catch(() => {}); // the reply never comes: the server is gone
    admin.disconnect();

    const started = performance.now();
    await assert.rejects(store.get(job.id));
    assert.ok(performance.now() - started < 1500);

    const { success } = await new Deno.Command("bash", { args: [restart] }).output();
    assert.ok(success, "restarting redis failed");
    // The client reconnects by itself; Redis kept nothing (no persistence), so the job is gone.
    let got: Job | null | "failed" = "failed";
    const deadline = Date.now() + 10_000;
    while (got === "failed" && Date.now() < deadline) {
      got = await store.get(job.id).catch(() => "failed" as const);
      if (got === "failed") await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(got, null);
    assert.equal(await store.insert(job), true);
    assert.deepEqual(await store.get(job.id), job);
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis: queued jobs stay in the outbox until published or final, oldest first", async () => {
  await withStore(async (store) => {
    const make = (s: number) =>
      createJob(
        { id: crypto.randomUUID(), input: { filename: "a.mp4", size: 1 } },
        new Date(Date.UTC(2026, 0, 1, 0, 0, s)),
      );
    const [a, b, c] = [make(1), make(2), make(3)];
    for (const j of [c, a, b]) assert.equal(await store.insert(j), true);
    assert.equal(await store.insert(a), false);
    await store.insert({ ...make(0), status: "done", progress: 1 }); // a job done at once from the cache
    assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 1, 0, 0, 3)), 10), [a.id, b.id]);
    assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 2)), 1), [a.id]);
    await store.markPublished(a.id);
    await store.update(b.id, (j) => ({ ...j, status: "failed", error: { code: "internal", message: "x" } }));
    assert.deepEqual(await store.unpublished(new Date(Date.UTC(2026, 0, 2)), 10), [c.id]);
  });
});

testJobStore("redis", async () => {
  const redis = createRedisClient(redisUrl());
  await redis.connect(); // so that the many first commands of a test do not each wait for the connection
  const store = createRedisJobStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
  return { store, close: () => redis.disconnect() };
});

/** The keys under `prefix`, and the members of each sorted set among them. */
async function contents(redis: ReturnType<typeof createRedisClient>, prefix: string) {
  const keys = (await redis.keys(`${prefix}*`)).sort();
  const sets: Record<string, string[]> = {};
  for (const key of keys) {
    if (await redis.type(key) === "zset") sets[key.slice(prefix.length)] = await redis.zrange(key, "0", "-1");
  }
  return { keys: keys.map((k) => k.slice(prefix.length)), sets };
}

Deno.test("redis: jobs are indexed in sorted sets, and remove leaves no key or member behind", async () => {
  const redis = createRedisClient(redisUrl());
  const prefix = `test-${crypto.randomUUID()}:`;
  try {
    const store = createRedisJobStore(redis, { prefix });
    const job = { ...newJob(), owner: "k1", expiresAt: "2024-01-02T00:00:00.000Z" };
    const other = { ...newJob(), owner: "k1" };
    await store.insert(job);
    await store.insert(other);
    const created = Date.parse(job.createdAt);
    const member = (id: string) => `${String(created).padStart(15, "0")}:${id}`;
    assert.deepEqual((await contents(redis, prefix)).sets, {
      "owner:k1": [member(job.id), member(other.id)].sort(),
      outbox: [job.id, other.id].sort(),
      expiry: [job.id],
    });
    await store.update(job.id, (j) => ({ ...j, status: "converting" }));
    await store.remove(job.id);
    assert.deepEqual(await contents(redis, prefix), {
      keys: [`job:${other.id}`, "outbox", "owner:k1"],
      sets: { "owner:k1": [member(other.id)], outbox: [other.id] },
    });
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis: a page reads only the page's jobs, not all of the owner's", async () => {
  const redis = createRedisClient(redisUrl());
  const prefix = `test-${crypto.randomUUID()}:`;
  try {
    const store = createRedisJobStore(redis, { prefix });
    await redis.connect();
    await Promise.all(Array.from({ length: 300 }, () => store.insert({ ...newJob(), owner: "k1" })));
    const fetched: string[][] = [];
    const mget = redis.mget.bind(redis);
    // deno-lint-ignore no-explicit-any
    (redis as any).mget = (keys: string[]) => {
      fetched.push(keys);
      return mget(keys);
    };
    const page = await store.list({ owner: "k1", limit: 20 });
    assert.equal(page.jobs.length, 20);
    assert.ok(page.next);
    assert.deepEqual(fetched.map((keys) => keys.length), [21], "one MGET of the page and one more");
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis: a job stored before the indexes existed is indexed by its next update", async () => {
  const redis = createRedisClient(redisUrl());
  const prefix = `test-${crypto.randomUUID()}:`;
  try {
    const store = createRedisJobStore(redis, { prefix });
    const job = { ...newJob(), owner: "k1" };
    await redis.connect();
    await redis.set(`${prefix}job:${job.id}`, JSON.stringify(job)); // as an older version wrote it
    assert.deepEqual((await store.list({ owner: "k1", limit: 10 })).jobs, []);
    const updated = await store.update(job.id, (j) => ({ ...j, status: "converting" }));
    assert.deepEqual((await store.list({ owner: "k1", limit: 10 })).jobs, [updated]);
  } finally {
    redis.disconnect();
  }
});

Deno.test("redis job store: a burst of first calls shares one wait for the connection (no listener per call)", async () => {
  const redis = createRedisClient(redisUrl());
  try {
    const readyBefore = redis.listenerCount("ready");
    const errorBefore = redis.listenerCount("error");
    const store = createRedisJobStore(redis, { prefix: `test-${crypto.randomUUID()}:` });
    const reads = Array.from({ length: 50 }, () => store.get(crypto.randomUUID()));
    assert.ok(
      redis.listenerCount("ready") - readyBefore <= 1,
      `${redis.listenerCount("ready")} ready listeners`,
    );
    assert.ok(
      redis.listenerCount("error") - errorBefore <= 1,
      `${redis.listenerCount("error")} error listeners`,
    );
    assert.deepEqual(await Promise.all(reads), new Array(50).fill(null));
    assert.equal(redis.listenerCount("ready"), readyBefore, "the shared wait's listeners are removed");
  } finally {
    redis.disconnect();
  }
});
