/**
 * The whole product on real infrastructure: RabbitMQ, Redis and s3rver started by `deno task test`
 * (scripts/test_servers.sh), and the four services as separate processes with their real permission flags
 * (scripts/services.ts), driven through the Gateway's public API with real FFmpeg.
 */
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { createS3BlobStore } from "@vmp3/adapters/s3";
import { makeHlsTrap, makeMedia } from "../convert/testing/media.ts";
import { serviceArgs, type ServiceName } from "../scripts/services.ts";
import { assertError, assertMp3, postFile, waitForJob } from "./helpers.ts";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    throw new Error(`${name} is not set: run the tests with \`deno task test\`, which starts the servers`);
  }
  return value;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

interface Service {
  name: string;
  process: Deno.ChildProcess;
  log: string;
}

/** Starts the real-mode product: four services (and `workers` Convert workers), each its own process. */
async function startProduct(workers = 1) {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-real-" });
  const ports = { gateway: freePort(), upload: freePort(), metadata: freePort() };
  const bucket = `vmp3-e2e-${crypto.randomUUID().slice(0, 8)}`;
  const common = {
    HOST: "127.0.0.1",
    RABBITMQ_URL: required("TEST_RABBITMQ_URL"),
    REDIS_URL: required("TEST_REDIS_URL"),
    S3_ENDPOINT: required("TEST_S3_ENDPOINT"),
    S3_BUCKET: bucket,
    S3_ACCESS_KEY_ID: "S3RVER",
    S3_SECRET_ACCESS_KEY: "S3RVER",
    S3_CHECKSUM: "when_required",
    UPLOAD_URL: `http://127.0.0.1:${ports.upload}`,
    METADATA_URL: `http://127.0.0.1:${ports.metadata}`,
  };
  const services: Service[] = [];
  const spawn = async (service: ServiceName, name: string, env: Record<string, string>) => {
    const log = `${dir}/${name}.log`;
    const file = await Deno.open(log, { write: true, create: true });
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", ...serviceArgs(service, env)],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const [a, b] = [process.stdout, process.stderr].map((s) =>
      s.pipeTo(file.writable, { preventClose: true })
    );
    Promise.all([a, b]).finally(() => file.close()).catch(() => {});
    const entry = { name, process, log };
    services.push(entry);
    const url = `http://127.0.0.1:${env.PORT}/healthz`;
    for (let i = 0;; i++) {
      if ((await fetch(url).then((r) => r.body?.cancel().then(() => r.ok)).catch(() => false))) break;
      if (i > 200) throw new Error(`${name} did not start:\n${await Deno.readTextFile(log)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return entry;
  };
  const path = Deno.env.get("PATH") ?? "/usr/bin:/bin";
  const startWorker = (n: number) =>
    spawn("convert", `convert-${n}`, {
      ...common,
      PATH: path,
      PORT: String(freePort()),
      WORK_DIR: `${dir}/work-${n}`,
    });

  await spawn("metadata", "metadata", { ...common, PORT: String(ports.metadata) });
  await spawn("upload", "upload", { ...common, PORT: String(ports.upload) });
  for (let n = 1; n <= workers; n++) await startWorker(n);
  await spawn("gateway", "gateway", { ...common, PORT: String(ports.gateway) });

  const storage = createS3BlobStore({
    endpoint: common.S3_ENDPOINT,
    bucket,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
  });
  return {
    url: `http://127.0.0.1:${ports.gateway}`,
    dir,
    storage,
    services,
    startWorker,
    async logs() {
      return (await Promise.all(
        services.map(async (s) => `--- ${s.name}\n${await Deno.readTextFile(s.log)}`),
      ))
        .join("\n");
    },
    async stop() {
      for (const s of services) {
        try {
          s.process.kill("SIGTERM");
        } catch { /* already gone */ }
        await s.process.status;
      }
      storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
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
      otherHost: () => fetch("http://127.0.0.2:9/"),
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
      args: ["run", ...flags, `--allow-read=${probe}`, probe, dir],
    }).output();
    const text = new TextDecoder().decode(stdout);
    if (!text) throw new Error(new TextDecoder().decode(stderr));
    return JSON.parse(text);
  };
  const d = "denied", a = "allowed";
  assertEquals(await run("gateway"), { read: d, write: d, ffmpeg: d, shell: d, otherHost: d, workDir: d });
  assertEquals(await run("upload"), { read: d, write: d, ffmpeg: d, shell: d, otherHost: d, workDir: d });
  assertEquals(await run("metadata"), { read: d, write: d, ffmpeg: d, shell: d, otherHost: d, workDir: d });
  assertEquals(await run("convert"), { read: d, write: d, ffmpeg: a, shell: d, otherHost: d, workDir: a });
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
    assertEquals(created.status, 202);
    const { id } = await created.json();
    const early = await fetch(`${product.url}/v1/jobs/${id}/download`, { redirect: "manual" });
    if (early.status === 409) await assertError(early, 409, "not_ready");
    else await early.body?.cancel();
    assertEquals((await waitForJob(product.url, id)).status, "done");
    const redirect = await fetch(`${product.url}/v1/jobs/${id}/download`, { redirect: "manual" });
    assertEquals(redirect.status, 302);
    const location = new URL(redirect.headers.get("location")!);
    assert(location.searchParams.has("X-Amz-Signature"), "a presigned URL");
    assertEquals(location.searchParams.get("X-Amz-Expires"), "300");
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
    const source = await makeMedia(media, "mp4", { seconds: 400 });
    const created = await postFile(`${product.url}/v1/jobs`, source, "long.mp4");
    assertEquals(created.status, 202);
    const { id } = await created.json();
    for (let i = 0;; i++) {
      const job = await (await fetch(`${product.url}/v1/jobs/${id}`)).json();
      if (job.status === "converting") break;
      assert(job.status === "queued" && i < 400, `job is ${job.status} before the kill`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const worker = product.services.find((s) => s.name === "convert-1")!;
    worker.process.kill("SIGKILL");
    await worker.process.status;
    await product.startWorker(2);
    const done = await waitForJob(product.url, id, 120_000);
    assertEquals(done.status, "done");
    assertEquals(await product.storage.list("outputs/"), [`outputs/${id}.mp3`]);
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
