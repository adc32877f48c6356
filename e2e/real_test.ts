/**
 * The whole product on real infrastructure: RabbitMQ, Redis and s3rver started by `deno task test`
 * (scripts/test_servers.sh), and the four services as separate processes with their real permission flags
 * (scripts/services.ts), driven through the Gateway's public API with real FFmpeg.
 */
import assert from "node:assert/strict";
import { audioDuration, containsBytes, makeHlsTrap, makeMedia, probeJson } from "../convert/testing/media.ts";
import { serviceArgs, type ServiceName } from "../scripts/services.ts";
import { startProduct } from "./product.ts";
import { createRedisClient } from "@vmp3/adapters/redis";
import { DEFAULT_SETPRIV } from "../convert/ffmpeg_check.ts";
import {
  assertError,
  assertMp3,
  postFile,
  processesMatching,
  waitForJob,
  waitForNoProcess,
} from "./helpers.ts";

/** Waits up to 15 s for `ready()`. */
async function until(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; !ready(); i++) {
    assert(i < 750, `waited 15 s for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("real: each service runs with only its own permissions", async () => {
  const dir = await Deno.makeTempDir();
  const probe = `${dir}/probe.ts`;
  await Deno.writeTextFile(
    probe,
    `const tries = {
      read: () => Deno.readTextFile("/etc/hostname"),
      write: () => Deno.writeTextFile("/tmp/vmp3-permission-probe", "x"),
      ffmpeg: () => new Deno.Command("ffmpeg", { args: ["-version"] }).output(),
      shell: () => new Deno.Command("sh", { args: ["-c", "true"] }).output(),
      otherHost: () => fetch("http://127.0.0.2:8089/"),
      setpriv: () => new Deno.Command("setpriv", { args: ["--version"] }).output(),
      shellThroughGuard: async () => {
        const out = await new Deno.Command(Deno.args[1], { args: ["--pdeathsig", "KILL", "--", "sh", "-c", "true"] }).output();
        if (!out.success) throw new Deno.errors.NotCapable("the guard refused it");
      },
      workDir: () => Deno.writeTextFile(Deno.args[0] + "/ok", "x"),
    };
    const out = {};
    for (const [name, fn] of Object.entries(tries)) {
      try { await fn(); out[name] = "allowed"; }
      catch (e) { out[name] = e instanceof Deno.errors.NotCapable ? "denied" : "allowed"; }
    }
    console.log(JSON.stringify(out));`,
  );
  const env = {
    RABBITMQ_URL: "amqp://127.0.0.1:5672",
    REDIS_URL: "redis://127.0.0.1:6379",
    S3_ENDPOINT: "http://127.0.0.1:9000",
    S3_BUCKET: "probe",
    S3_ACCESS_KEY_ID: "x",
    S3_SECRET_ACCESS_KEY: "x",
    UPLOAD_URL: "http://127.0.0.1:8081",
    METADATA_URL: "http://127.0.0.1:8082",
    WORK_DIR: dir,
  };
  const run = async (service: ServiceName) => {
    const flags = serviceArgs(service, env).slice(0, -1).map((f) =>
      f.startsWith("--allow-read") ? `${f},${probe}` : f
    );
    const { stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, `--allow-read=${probe}`, probe, dir, DEFAULT_SETPRIV!],
    }).output();
    const text = new TextDecoder().decode(stdout);
    if (!text) throw new Error(new TextDecoder().decode(stderr));
    return JSON.parse(text);
  };
  const d = "denied", a = "allowed";
  const none = {
    read: d,
    write: d,
    ffmpeg: d,
    shell: d,
    otherHost: d,
    setpriv: d,
    shellThroughGuard: d,
    workDir: d,
  };
  assert.deepEqual(await run("gateway"), none);
  // Upload imports from, and Metadata delivers webhooks to, any public host: their net is open, and
  // adapters/public_http.ts refuses non-public addresses at connect time (its own tests show it).
  assert.deepEqual(await run("upload"), { ...none, otherHost: a });
  assert.deepEqual(await run("metadata"), { ...none, otherHost: a });
  assert.deepEqual(await run("convert"), { ...none, ffmpeg: a, workDir: a });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("real: four services convert mp4, mkv, webm, avi and mov through /v1/convert", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct();
  try {
    for (const kind of ["mp4", "mkv", "webm", "avi", "mov"] as const) {
      const source = await makeMedia(media, kind);
      await assertMp3(await postFile(`${product.url}/v1/convert`, source), `${media}/${kind}.mp3`, source);
    }
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("real: a job downloads through a short-lived presigned S3 URL; bad input fails with its code", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct();
  try {
    const source = await makeMedia(media, "mp4");
    const created = await postFile(`${product.url}/v1/jobs`, source, "clip.mp4");
    assert.deepEqual(created.status, 202);
    const { id } = await created.json();
    const early = await fetch(`${product.url}/v1/jobs/${id}/download`, { redirect: "manual" });
    // Before the job is done: 409 not_ready; if it already finished, the redirect.
    if (early.status === 409) await assertError(early, 409, "not_ready");
    else {
      assert.equal(early.status, 302, await early.text());
      await early.body?.cancel();
    }
    assert.deepEqual((await waitForJob(product.url, id)).status, "done");
    const redirect = await fetch(`${product.url}/v1/jobs/${id}/download`, { redirect: "manual" });
    assert.deepEqual(redirect.status, 302);
    const location = new URL(redirect.headers.get("location")!);
    assert(location.searchParams.has("X-Amz-Signature"), "a presigned URL");
    assert.deepEqual(location.searchParams.get("X-Amz-Expires"), "300");
    const download = await fetch(location);
    assert(download.headers.get("content-disposition")?.includes('filename="clip.mp3"'));
    await assertMp3(download, `${media}/clip.mp3`, source);

    await assertError(
      await postFile(`${product.url}/v1/convert`, await makeMedia(media, "mp4-no-audio")),
      422,
      "no_audio_stream",
    );
    const trap = await makeHlsTrap(media);
    await assertError(await postFile(`${product.url}/v1/convert`, trap.path), 422, "unsupported_input");
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("real: kill -9 of a worker mid-conversion; the task is redelivered and yields exactly one MP3", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct(1);
  try {
    const source = await makeMedia(media, "flac", { seconds: 900 });
    const created = await postFile(`${product.url}/v1/jobs`, source, "long.mp4");
    assert.deepEqual(created.status, 202);
    const { id } = await created.json();
    for (let i = 0;; i++) {
      const job = await (await fetch(`${product.url}/v1/jobs/${id}`)).json();
      if (job.status === "converting") break;
      assert(job.status === "queued" && i < 400, `job is ${job.status} before the kill`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const worker = product.services.find((s) => s.name === "convert-1")!;
    // The job's own work folder: the worker's command line itself names "ffmpeg" and its work folder.
    await until(
      () => processesMatching("ffmpeg", `${product.dir}/work-1/${id}-`).length > 0,
      "ffmpeg to run",
    );
    worker.process.kill("SIGKILL");
    await worker.process.status;
    assert.deepEqual(
      await waitForNoProcess(["ffmpeg", `${product.dir}/work-1`]),
      [],
      "no ffmpeg outlives the worker",
    );
    await product.startWorker(2);
    const done = await waitForJob(product.url, id, 120_000);
    assert.deepEqual(done.status, "done");
    assert.deepEqual(await product.storage.list("outputs/"), [`outputs/${id}.mp3`]);
    const download = await fetch(`${product.url}/v1/jobs/${id}/download`);
    await assertMp3(download, `${media}/long.mp3`, source);
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("real: an upload over the limit is 413 mid-stream, and S3 keeps no object of it", async () => {
  const limit = 12 * 1024 * 1024;
  const product = await startProduct(0, { MAX_UPLOAD_BYTES: String(limit) });
  try {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 20 * 1024 * 1024) return controller.close();
        sent += 256 * 1024;
        controller.enqueue(new Uint8Array(256 * 1024));
      },
    });
    // No Content-Length: the limit is found while streaming, after a first 8 MiB part was already sent to S3.
    const response = await fetch(`${product.url}/v1/jobs?filename=big.mp4`, {
      method: "POST",
      headers: { "content-type": "video/mp4" },
      body,
    });
    await assertError(response, 413, "payload_too_large");
    assert.deepEqual(await product.storage.list(""), []);
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
  }
});

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(bytes));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Follows a job's download (a presigned redirect) and returns the MP3's bytes, also written to `path`. */
async function downloadMp3(base: string, id: string, path: string): Promise<Uint8Array> {
  const response = await fetch(`${base}/v1/jobs/${id}/download`);
  assert.equal(response.status, 200, await response.clone().text());
  const bytes = new Uint8Array(await response.arrayBuffer());
  await Deno.writeFile(path, bytes);
  return bytes;
}

Deno.test("real: options and tags shape the MP3, an MP3 source is copied, and the same upload again is done at once from the cache with no worker running", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct(1);
  try {
    const source = await Deno.readFile(await makeMedia(media, "mp4", { seconds: 4 }));
    const form = (fields: Record<string, string>) => {
      const data = new FormData();
      for (const [name, value] of Object.entries(fields)) data.append(name, value);
      data.append("file", new File([source], "clip.mp4"));
      return data;
    };
    const fields = { quality: "4", title: "Été — live", artist: "vmp3", start: "0.5", end: "3" };
    const created = await fetch(`${product.url}/v1/jobs?id3v2_version=4`, {
      method: "POST",
      body: form(fields),
    });
    assert.equal(created.status, 202);
    const first = await waitForJob(product.url, (await created.json()).id);
    const output = first.output as Record<string, unknown>;
    assert.equal(first.status, "done", JSON.stringify(first));
    assert.deepEqual(
      [output.codec, output.method, output.quality, first.cached],
      ["mp3", "encode", 4, undefined],
    );
    assert.deepEqual(first.options, {
      quality: 4,
      title: "Été — live",
      artist: "vmp3",
      start: 0.5,
      end: 3,
      id3v2_version: 4,
    });
    const bytes = await downloadMp3(product.url, String(first.id), `${media}/first.mp3`);
    assert.equal(output.sha256, await sha256Hex(bytes), "the job's sha256 is the MP3's");
    assert.equal(output.size, bytes.length);
    assert.deepEqual([bytes[0], bytes[1], bytes[2], bytes[3]], [0x49, 0x44, 0x33, 4], "ID3v2.4");
    const probe = await probeJson(`${media}/first.mp3`);
    const tags = probe.format.tags as Record<string, string>;
    assert.deepEqual([tags.title, tags.artist], ["Été — live", "vmp3"]);
    const duration = await audioDuration(`${media}/first.mp3`);
    assert.ok(Math.abs(duration - 2.5) <= 0.1, `trimmed to ${duration} s, not 2.5 s`);
    assert.ok(
      containsBytes(bytes.subarray(0, 8192), new TextEncoder().encode("Xing")),
      "a VBR (Xing) header",
    );

    // An AVI whose audio is MP3 already: copied as it is.
    const avi = await postFile(`${product.url}/v1/jobs`, await makeMedia(media, "avi"), "clip.avi");
    const copied = await waitForJob(product.url, (await avi.json()).id);
    assert.equal((copied.output as Record<string, unknown>).method, "copy", JSON.stringify(copied));

    // No worker from here on: whatever is done now was done without FFmpeg.
    const worker = product.services.find((s) => s.name === "convert-1")!;
    worker.process.kill("SIGTERM");
    await worker.process.status;

    const again = await fetch(`${product.url}/v1/jobs?id3v2_version=4`, {
      method: "POST",
      body: form(fields),
    });
    assert.equal(again.status, 202);
    const cached = await again.json();
    assert.deepEqual(
      [cached.status, cached.cached, cached.progress],
      ["done", true, 1],
      JSON.stringify(cached),
    );
    assert.equal(cached.output.sha256, output.sha256);
    assert.notEqual(cached.id, first.id);
    assert.deepEqual(await downloadMp3(product.url, cached.id, `${media}/cached.mp3`), bytes, "the same MP3");

    const converted = await fetch(`${product.url}/v1/convert?id3v2_version=4`, {
      method: "POST",
      body: form(fields),
    });
    assert.equal(converted.status, 200);
    assert.deepEqual(
      new Uint8Array(await converted.arrayBuffer()),
      bytes,
      "/v1/convert answers from the cache",
    );

    const other = await fetch(`${product.url}/v1/jobs`, {
      method: "POST",
      body: form({ ...fields, quality: "5" }),
    });
    const queued = await other.json();
    assert.equal(queued.status, "queued", "other options are another conversion, waiting for a worker");
    assert.deepEqual(
      (await product.storage.list("outputs/")).sort(),
      [`outputs/${first.id}.mp3`, `outputs/${copied.id}.mp3`].sort(),
      "the cached jobs made no MP3 of their own",
    );
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("real: Redis restarted empty; finished jobs still show done and download, and a job in flight ends done", async () => {
  const media = await Deno.makeTempDir();
  const product = await startProduct(1);
  try {
    const clip = await makeMedia(media, "mp4");
    const first = await (await postFile(`${product.url}/v1/jobs`, clip, "before.mp4")).json();
    const done = await waitForJob(product.url, first.id);
    assert.equal(done.status, "done");

    const long = await makeMedia(media, "flac", { seconds: 300 });
    const inFlight = await (await postFile(`${product.url}/v1/jobs`, long, "during.flac")).json();
    for (let i = 0;; i++) {
      const job = await (await fetch(`${product.url}/v1/jobs/${inFlight.id}`)).json();
      if (job.status === "converting") break;
      assert(job.status === "queued" && i < 400, `the job is ${job.status} before the restart`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const admin = createRedisClient(Deno.env.get("TEST_REDIS_URL")!, { onError: () => {} });
    await admin.connect();
    await admin.call("SHUTDOWN", "NOSAVE").catch(() => {}); // no reply: the server is gone, and kept nothing
    admin.disconnect();
    const restart = await new Deno.Command("bash", { args: [Deno.env.get("TEST_REDIS_START")!] }).output();
    assert.ok(restart.success, "restarting Redis failed");

    const again = await waitForJob(product.url, first.id, 20_000);
    // The same job; only its signed download link is made afresh at each read.
    const { links: _again, ...rebuilt } = again;
    const { links: _done, ...before } = done;
    assert.deepEqual(rebuilt, before, "the finished job, rebuilt from its record in S3");
    await assertMp3(
      await fetch(`${product.url}/v1/jobs/${first.id}/download`),
      `${media}/before.mp3`,
      clip,
    );
    const finished = await waitForJob(product.url, inFlight.id, 120_000);
    assert.equal(finished.status, "done", JSON.stringify(finished));
    await assertMp3(
      await fetch(`${product.url}/v1/jobs/${inFlight.id}/download`),
      `${media}/during.mp3`,
      long,
    );
  } catch (error) {
    console.error(await product.logs());
    throw error;
  } finally {
    await product.stop();
    await Deno.remove(media, { recursive: true });
  }
});
