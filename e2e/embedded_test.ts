/**
 * The whole product in embedded mode (one process, local adapters), driven through the Gateway's public API with
 * real FFmpeg on media made by FFmpeg's lavfi sources.
 */
import assert from "node:assert/strict";
import { EmbeddedEnv, parseEnv } from "@vmp3/shared";
import { makeHlsTrap, makeMedia } from "../convert/testing/media.ts";
import { runEmbedded } from "../dev.ts";
import {
  anyFileContains,
  assertError,
  assertMp3,
  postFile,
  processesMatching,
  waitForJob,
  waitForNoProcess,
} from "./helpers.ts";

async function start(env: Record<string, string> = {}) {
  const dataDir = await Deno.makeTempDir({ prefix: "vmp3-e2e-" });
  const running = await runEmbedded(parseEnv(EmbeddedEnv, { PORT: "0", DATA_DIR: dataDir, ...env }));
  return {
    ...running,
    dataDir,
    async stop() {
      await running.close();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

Deno.test("embedded: POST /v1/convert turns mp4, mkv, webm (also streamed, of unknown duration), avi and mov into MP3s of the same duration", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    for (const kind of ["mp4", "mkv", "webm", "webm-streamed", "avi", "mov"] as const) {
      const source = await makeMedia(media, kind);
      const response = await postFile(`${app.url}/v1/convert`, source, `clip ${kind}.${kind}`);
      assert.deepEqual(response.headers.get("content-type"), "audio/mpeg", kind);
      assert(response.headers.get("content-disposition")?.includes(`filename="clip ${kind}.mp3"`), kind);
      await assertMp3(response, `${media}/${kind}.mp3`, source);
    }
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("embedded: a job goes queued -> done over /v1/jobs, its events stream, and it downloads", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    const source = await makeMedia(media, "mp4");
    const created = await postFile(`${app.url}/v1/jobs?bitrate=128`, source, "été.mp4");
    assert.deepEqual(created.status, 202);
    const job = await created.json();
    assert.deepEqual(created.headers.get("location"), `/v1/jobs/${job.id}`);
    assert.deepEqual(job.input.filename, "été.mp4");

    const events = await fetch(`${app.url}/v1/jobs/${job.id}/events`);
    assert.deepEqual(events.headers.get("content-type"), "text/event-stream");
    const statuses = [...(await events.text()).matchAll(/^data: (.*)$/gm)].map((m) =>
      JSON.parse(m[1]).status
    );
    assert.deepEqual(statuses.at(-1), "done", "the stream ends with the final state");

    const done = await waitForJob(app.url, job.id);
    assert.deepEqual([done.status, done.progress], ["done", 1]);
    const output = done.output as { size: number; duration: number; bitrate: number };
    assert.deepEqual(output.bitrate, 128_000, "the MP3's stream bitrate, as ffprobe reads it");

    const download = await fetch(`${app.url}/v1/jobs/${job.id}/download`);
    assert.deepEqual(
      download.headers.get("content-disposition"),
      `attachment; filename="_t_.mp3"; filename*=UTF-8''%C3%A9t%C3%A9.mp3`,
    );
    await assertMp3(download, `${media}/out.mp3`, source);
    assert.deepEqual(output.size, (await Deno.stat(`${media}/out.mp3`)).size);
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("embedded: bad input fails with a clear code, and an HLS playlist leaks no local file", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    const cases = [
      ["mp4-no-audio", 422, "no_audio_stream"],
      ["random-bytes", 422, "unsupported_input"],
      ["zero-bytes", 422, "unsupported_input"],
      ["truncated-mp4", 422, "corrupt_input"],
      ["ffconcat-as-mp4", 422, "unsupported_input"],
    ] as const;
    for (const [kind, status, code] of cases) {
      const response = await postFile(`${app.url}/v1/convert`, await makeMedia(media, kind), `${kind}.mp4`);
      await assertError(response, status, code);
    }
    const trap = await makeHlsTrap(media);
    const response = await postFile(`${app.url}/v1/convert`, trap.path, "playlist.mp4");
    await assertError(response, 422, "unsupported_input");
    assert(
      !(await anyFileContains(app.dataDir, trap.canaryText)),
      "the canary's bytes reached the data folder",
    );
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("embedded: unknown jobs are 404 and an upload over the limit is 413 with nothing stored", async () => {
  const app = await start({ MAX_UPLOAD_BYTES: "10000" });
  try {
    await assertError(await fetch(`${app.url}/v1/jobs/${crypto.randomUUID()}`), 404, "not_found");
    await assertError(await fetch(`${app.url}/v1/jobs/${crypto.randomUUID()}/download`), 404, "not_found");
    await assertError(await fetch(`${app.url}/nowhere`), 404, "not_found");
    const big = new FormData();
    big.append("file", new File([new Uint8Array(50_000)], "big.mp4"));
    await assertError(
      await fetch(`${app.url}/v1/jobs`, { method: "POST", body: big }),
      413,
      "payload_too_large",
    );
    const objects = [...Deno.readDirSync(app.dataDir)].find((e) => e.name === "objects");
    const inputs = objects
      ? [...Deno.readDirSync(`${app.dataDir}/objects`)].flatMap((
        d,
      ) => [...Deno.readDirSync(`${app.dataDir}/objects/${d.name}`)])
      : [];
    assert.deepEqual(inputs.length, 0, "nothing is left in storage");
    assert.deepEqual((await fetch(`${app.url}/healthz`)).status, 200);
  } finally {
    await app.stop();
  }
});

Deno.test("embedded: kill -9 mid-conversion and a restart lose no job; the queued work resumes", async () => {
  const media = await Deno.makeTempDir();
  const dataDir = await Deno.makeTempDir({ prefix: "vmp3-restart-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const url = `http://127.0.0.1:${port}`;
  const start = async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "dev.ts"],
      env: { PORT: String(port), DATA_DIR: dataDir },
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (
      let i = 0;
      !(await fetch(`${url}/healthz`).then((r) => r.body?.cancel().then(() => true)).catch(() => false));
      i++
    ) {
      assert(i < 200, "the embedded product did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
    return child;
  };
  let child = await start();
  try {
    const source = await makeMedia(media, "flac", { seconds: 900 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await (await postFile(`${url}/v1/jobs`, source, `long-${i}.flac`)).json()).id);
    }
    for (let i = 0;; i++) {
      const job = await (await fetch(`${url}/v1/jobs/${ids[0]}`)).json();
      if (job.status === "converting") break;
      assert(job.status === "queued" && i < 400, `job is ${job.status} before the kill`);
      await new Promise((r) => setTimeout(r, 25));
    }
    // The job's own work folder: the product's command line itself may name "ffmpeg" and its data folder.
    for (let i = 0; processesMatching("ffmpeg", `${dataDir}/work/${ids[0]}-`).length === 0; i++) {
      assert(i < 750, "ffmpeg was not running at the kill");
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    await child.status;
    assert.deepEqual(
      await waitForNoProcess(["ffmpeg", dataDir]),
      [],
      "no ffmpeg outlives the killed process",
    );
    child = await start();
    for (const id of ids) {
      const job = await waitForJob(url, id, 120_000);
      assert.deepEqual(job.status, "done", JSON.stringify(job));
      await assertMp3(await fetch(`${url}/v1/jobs/${id}/download`), `${media}/${id}.mp3`, source);
    }
    const outputs = [...Deno.readDirSync(`${dataDir}/objects/outputs`)].map((e) => e.name).sort();
    assert.deepEqual(outputs, ids.map((id) => `${id}.mp3`).sort(), "exactly one MP3 per job");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(media, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("embedded: the job's progress grows from 0 to 1 with speed and ETA, over SSE and in the job JSON", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    const source = await makeMedia(media, "flac", { seconds: 600 });
    const created = await postFile(`${app.url}/v1/jobs?bitrate=320`, source, "long.flac");
    const { id } = await created.json();
    const events = await fetch(`${app.url}/v1/jobs/${id}/events`);
    const jobs = [...(await events.text()).matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]));
    const progress = jobs.map((j) => j.progress as number);
    assert.deepEqual(progress, [...progress].sort((a, b) => a - b), "progress never goes back");
    assert.equal(jobs.at(-1).status, "done");
    assert.equal(progress.at(-1), 1);
    const midway = jobs.filter((j) => j.status === "converting" && j.progress > 0 && j.progress < 1);
    assert.ok(midway.length > 0, `no progress between 0 and 1 in ${JSON.stringify(progress)}`);
    for (const job of midway) {
      assert.ok(job.speed > 1, `speed ${job.speed}: FFmpeg converts faster than real time`);
      assert.ok(job.eta >= 0 && job.eta < 600, `eta ${job.eta}`);
    }
    assert.equal("speed" in jobs.at(-1) || "eta" in jobs.at(-1), false, "a finished job has no speed or ETA");
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});
