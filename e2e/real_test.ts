/**
 * The whole product on real infrastructure: RabbitMQ, Redis and s3rver started by `deno task test`
 * (scripts/test_servers.sh), and the four services as separate processes with their real permission flags
 * (scripts/services.ts), driven through the Gateway's public API with real FFmpeg.
 */
import assert from "node:assert/strict";
import { makeHlsTrap, makeMedia } from "../convert/testing/media.ts";
import { serviceArgs, type ServiceName } from "../scripts/services.ts";
import { startProduct } from "./product.ts";
import { DEFAULT_SETPRIV } from "../convert/ffmpeg_check.ts";
import {
  assertError,
  assertMp3,
  postFile,
  processesMatching,
  waitForJob,
  waitForNoProcess,
} from "./helpers.ts";

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
  assert.deepEqual(await run("upload"), none);
  assert.deepEqual(await run("metadata"), none);
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
    assert(processesMatching("ffmpeg", `${product.dir}/work-1`).length > 0, "ffmpeg was running at the kill");
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
