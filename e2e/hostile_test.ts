/**
 * Hostile and broken input, at each layer it reaches: playlists, file lists and file references disguised as
 * media (probe, transcode, and the embedded product), odd file names, slow and stalled clients, and malformed
 * forms. A trap is proven harmless by a canary: a local MP3 whose text must never appear in any output or work
 * file, and a loopback HTTP listener that must never be asked for anything.
 */
import assert from "node:assert/strict";
import { contentDisposition, EmbeddedEnv, mp3Filename, parseEnv, parseOptions } from "@vmp3/shared";
import { probeInput } from "../convert/probe.ts";
import { planConversion } from "../convert/plan.ts";
import { transcode } from "../convert/transcode.ts";
import {
  audioDuration,
  type CanaryServer,
  containsBytes,
  makeAviGab2Trap,
  makeCanaryFile,
  makeConcatTrap,
  makeDrefTrap,
  makeHlsTrap,
  makeHlsUrlTrap,
  makeMedia,
  makeMkvEmbeddedTrap,
  probeJson,
  startCanaryServer,
  type Trap,
} from "../convert/testing/media.ts";
import { runEmbedded } from "../dev.ts";
import { anyFileContains, assertError, assertMp3, postFile, waitForJob } from "./helpers.ts";

async function start(env: Record<string, string> = {}) {
  const dataDir = await Deno.makeTempDir({ prefix: "vmp3-hostile-" });
  const running = await runEmbedded(parseEnv(EmbeddedEnv, { PORT: "0", DATA_DIR: dataDir, ...env }));
  return {
    ...running,
    dataDir,
    port: Number(new URL(running.url).port),
    async stop() {
      await running.close();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Playlists, file lists and references in disguise

/**
 * A disguised input and what must happen to it: refused as unsupported_input, or converted from its own audio.
 * `alone`: what transcode does when given it with no probe first (defence in depth), where that differs.
 */
interface TrapCase {
  label: string;
  make: (dir: string, canary: CanaryServer, served: Omit<Trap, "path">) => Promise<Trap>;
  outcome: "refused" | "converted";
  alone?: "harmless";
}

const TRAPS: TrapCase[] = [
  {
    label: "an HLS playlist of local files (a path and a file:// URL), named .mp4",
    make: (dir) => makeHlsTrap(dir),
    outcome: "refused",
  },
  {
    label: "an HLS playlist named .m3u8",
    make: async (dir) => {
      const trap = await makeHlsTrap(dir);
      await Deno.rename(trap.path, trap.path.replace(/\.mp4$/, ".m3u8"));
      return { ...trap, path: trap.path.replace(/\.mp4$/, ".m3u8") };
    },
    outcome: "refused",
  },
  {
    label: "an HLS playlist of http:// segments, named .mp4",
    make: (dir, canary, served) => makeHlsUrlTrap(dir, served, [`${canary.url}/a.mp3`, `${canary.url}/b.ts`]),
    outcome: "refused",
  },
  { label: "an ffconcat list, named .mp4", make: (dir) => makeConcatTrap(dir), outcome: "refused" },
  {
    label: "an MP4 whose audio track is a reference (alias) to another file",
    make: (dir) => makeDrefTrap(dir),
    outcome: "refused",
    alone: "harmless", // ffmpeg skips the track (no -enable_drefs): an MP3 of nothing, and no canary
  },
  {
    label: "an MKV carrying an HLS playlist as an attachment and an ffconcat list as subtitles",
    make: (dir, canary) => makeMkvEmbeddedTrap(dir, [`${canary.url}/mkv.mp3`]),
    outcome: "converted",
  },
  {
    label: "an AVI with an HLS playlist (local files and http://) in a GAB2 subtitle chunk",
    make: (dir, canary) => makeAviGab2Trap(dir, { urls: [`${canary.url}/avi.mp3`] }),
    outcome: "converted",
  },
];

/** Makes every trap in a fresh folder, with a canary listener; checks after `fn` that no canary was touched. */
async function withTraps(fn: (traps: [TrapCase, Trap][], dir: string) => Promise<string[]>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-traps-" });
  const served = await makeCanaryFile(dir);
  const canary = startCanaryServer(served.canaryPath);
  try {
    const traps: [TrapCase, Trap][] = [];
    for (const trap of TRAPS) traps.push([trap, await trap.make(dir, canary, served)]);
    const looked = await fn(traps, dir);
    for (const [, trap] of [...traps, [undefined, { ...served, path: "" }] as const]) {
      for (const folder of looked) {
        assert.ok(
          !(await anyFileContains(folder, trap.canaryText)),
          `canary ${trap.canaryPath} leaked into ${folder}`,
        );
      }
    }
    assert.deepEqual(canary.requests, [], "the canary listener was asked for something");
  } finally {
    await canary.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the disguised inputs are real traps: a naive ffmpeg follows them, or reads what they carry", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-traps-" });
  const served = await makeCanaryFile(dir);
  const canary = startCanaryServer(served.canaryPath);
  const naive = async (args: string[]) => {
    const { stdout } = await new Deno.Command("ffmpeg", {
      args: ["-hide_banner", "-nostdin", "-v", "quiet", ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return stdout;
  };
  const text = (s: string) => new TextEncoder().encode(s);
  try {
    // HLS over http: the segments are fetched and their bytes copied into the output. (ffmpeg 5.1 lets a local
    // playlist name only file, crypto and data segments unless told otherwise; older builds do not.)
    const hls = await makeHlsUrlTrap(dir, served, [`${canary.url}/a.mp3`]);
    const whitelist = ["-protocol_whitelist", "file,crypto,data,http,tcp"];
    const copied = await naive([...whitelist, "-i", hls.path, "-c", "copy", "-f", "mp3", "-"]);
    assert.ok(canary.requests.length > 0, "the naive run asked the listener");
    assert.ok(containsBytes(copied, text(served.canaryText)));
    canary.requests.length = 0;

    // The external reference: with enable_drefs, the track's samples are read from the canary.
    const dref = await makeDrefTrap(dir);
    const followed = await naive([
      "-enable_drefs",
      "1",
      "-i",
      dref.path,
      "-map",
      "0:a",
      "-c",
      "copy",
      "-f",
      "data",
      "-",
    ]);
    assert.ok(containsBytes(followed, text(dref.canaryText)), "enable_drefs reads the canary");

    // A GAB2 chunk is read and handed to a demuxer (an SRT is, an HLS playlist is what CVE-2016-1898 hid there).
    const srt = await makeAviGab2Trap(dir, { content: "1\n00:00:00,000 --> 00:00:01,000\nGAB2 IS READ\n" });
    assert.match(
      new TextDecoder().decode(await naive(["-i", srt.path, "-map", "0:s", "-f", "srt", "-"])),
      /GAB2 IS READ/,
    );

    // The MKV carries both lists.
    const mkv = await makeMkvEmbeddedTrap(dir);
    const listed = await new Deno.Command("ffprobe", {
      args: [
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type:stream_tags=filename,mimetype",
        "-of",
        "json",
        mkv.path,
      ],
      stdout: "piped",
    }).output();
    const streams = JSON.parse(new TextDecoder().decode(listed.stdout)).streams;
    assert.deepEqual(streams.map((s: { codec_type: string }) => s.codec_type), [
      "audio",
      "subtitle",
      "attachment",
    ]);
    assert.equal(streams[2].tags.filename.endsWith(".m3u8"), true);
  } finally {
    await canary.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("probeInput and transcode refuse the playlists and references, convert the carriers, and touch no canary", async () => {
  await withTraps(async (traps, dir) => {
    const work = `${dir}/work`; // outputs and work files only: the canaries are in `dir`
    await Deno.mkdir(work);
    for (const [{ label, outcome, alone }, trap] of traps) {
      const output = `${work}/out-${crypto.randomUUID().slice(0, 8)}.mp3`;
      const probing = probeInput(trap.path, { maxDuration: 3600, maxStreams: 8 });
      if (outcome === "refused") {
        await assert.rejects(probing, (e: { code?: string }) => e.code === "unsupported_input", label);
        // Without a probe first, the demuxer allowlist of transcode itself stops it.
        const plan = planConversion({ ...PROBE_OF_ANY_AUDIO }, parseOptions({}));
        const converting = transcode(trap.path, output, { plan, workDir: work, timeoutMs: 30_000 });
        if (alone === "harmless") await converting;
        else {await assert.rejects(converting, (e: { code?: string }) =>
            e.code === "unsupported_input", label);}
      } else {
        const plan = planConversion(await probing, parseOptions({}));
        await transcode(trap.path, output, { plan, workDir: work, timeoutMs: 30_000 });
        assert.ok((await Deno.stat(output)).size > 0, label);
      }
    }
    return [work];
  });
});

/** What a probe of a file with one AAC stream says: a plan for "the first audio stream, whatever it is". */
const PROBE_OF_ANY_AUDIO = {
  format: "mov,mp4,m4a,3gp,3g2,mj2",
  duration: 2,
  streams: 1,
  audioStreams: 1,
  audioCodec: "aac",
  audio: [{ index: 0, codec: "aac", channels: 1, sampleRate: 44100, isDefault: true, tags: {} }],
  hasVideo: false,
  tags: {},
  chapters: 0,
  chapterList: [],
  startTime: 0,
};

Deno.test("embedded: every disguised input is refused or converted from its own audio; no canary is touched", async () => {
  const app = await start();
  try {
    await withTraps(async (traps) => {
      for (const [{ label, outcome }, trap] of traps) {
        const response = await postFile(`${app.url}/v1/convert`, trap.path, "video.mp4");
        if (outcome === "refused") await assertError(response, 422, "unsupported_input");
        else assert.equal(response.status, 200, `${label}: ${await response.clone().text()}`);
        if (!response.bodyUsed) await response.body?.cancel();
      }
      return [app.dataDir];
    });
  } finally {
    await app.stop();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Resource limits, end to end

Deno.test("embedded: a 720p video converts under the default limits of ffmpeg, with a cover frame from its video", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    const source = await makeMedia(media, "mp4-720p", { seconds: 2 });
    const response = await postFile(`${app.url}/v1/convert?cover=1`, source, "clip 720p.mp4");
    assert.equal(response.status, 200, await response.clone().text());
    await Deno.writeFile(`${media}/out.mp3`, new Uint8Array(await response.arrayBuffer()));
    const streams = (await probeJson(`${media}/out.mp3`)).streams;
    assert.deepEqual(streams.map((s) => s.codec_name), ["mp3", "mjpeg"], "the MP3 and its cover");
    assert.equal(streams[1].width, 1000, "the cover: a frame of the 1280x720 video, made 1000 px wide");
    assert.ok(Math.abs((await audioDuration(`${media}/out.mp3`)) - 2) < 0.1);
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// File names

/** Hostile names, and how they are shown (see displayFilename in shared/http.ts for the rule). */
const NAMES: [string, string][] = [
  ["../../../../tmp/passwd.mp4", "passwd.mp4"],
  ["nul\u0000byte.mp4", "nulbyte.mp4"],
  ["evil\u202Egpj.mp4", "evilgpj.mp4"],
  [`say "hi"; 'there' 100%.mp4`, `say "hi"; 'there' 100%.mp4`],
  ["C:\\clips\\back\\slash.mp4", "slash.mp4"],
  ["cr\r\nX-Injected: 1\r\n.mp4", "crX-Injected: 1.mp4"],
  [`${"x".repeat(10_000)}.mp4`, `${"x".repeat(251)}.mp4`],
  ["été ☃ 日本.mp4", "été ☃ 日本.mp4"],
];

/** The three ways of naming an upload. */
const UPLOADS: [string, (url: string, bytes: Uint8Array, name: string) => Promise<Response>][] = [
  ["multipart", (url, bytes, name) => {
    const form = new FormData();
    form.append("file", new File([new Uint8Array(bytes)], name));
    return fetch(`${url}/v1/jobs`, { method: "POST", body: form });
  }],
  ["?filename=", (url, bytes, name) =>
    fetch(`${url}/v1/jobs?filename=${encodeURIComponent(name)}`, {
      method: "POST",
      headers: { "content-type": "audio/flac" },
      body: new Uint8Array(bytes),
    })],
  ["Content-Disposition", (url, bytes, name) =>
    fetch(`${url}/v1/jobs`, {
      method: "POST",
      headers: {
        "content-type": "application/octet-stream",
        "content-disposition": contentDisposition(name), // CR, LF and NUL percent-encoded in filename*
      },
      body: new Uint8Array(bytes),
    })],
];

Deno.test("embedded: hostile file names are shown back harmlessly in the job and the download, and never name a file", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    // One small file: after the first conversion, every upload is done at once from the content cache.
    const bytes = await Deno.readFile(await makeMedia(media, "flac", { seconds: 1 }));
    for (const [mode, upload] of UPLOADS) {
      for (const [name, shown] of NAMES) {
        const label = `${mode} ${JSON.stringify(name.slice(0, 40))}`;
        const created = await upload(app.url, bytes, name);
        if (mode === "multipart" && name.includes("\u0000")) {
          // fetch writes a NUL into the part's header as is, which is malformed (browsers never send one).
          await assertError(created, 400, "invalid_request");
          continue;
        }
        assert.equal(created.status, 202, `${label}: ${await created.clone().text()}`);
        const job = await created.json();
        assert.equal(job.input.filename, shown, label);
        assert.equal((await waitForJob(app.url, job.id)).status, "done", label);

        const download = await fetch(`${app.url}/v1/jobs/${job.id}/download`);
        assert.equal(download.status, 200, label);
        await download.body?.cancel();
        assert.equal(download.headers.get("x-injected"), null, label);
        const disposition = download.headers.get("content-disposition")!;
        const match = /^attachment; filename="([\x20-\x7e]*)"; filename\*=UTF-8''([A-Za-z0-9!\-._~%]+)$/.exec(
          disposition,
        );
        assert.ok(match, `${label}: ${disposition}`);
        assert.doesNotMatch(match[1], /["\\]/);
        assert.equal(decodeURIComponent(match[2]), mp3Filename(shown), label);
      }
    }
    // Storage keys are the server's: no file or folder is named after anything a client sent.
    const names: string[] = [];
    const walk = (dir: string) => {
      for (const entry of Deno.readDirSync(dir)) {
        names.push(entry.name);
        if (entry.isDirectory) walk(`${dir}/${entry.name}`);
      }
    };
    walk(app.dataDir);
    for (const fragment of ["passwd", "nul", "gpj", "say", "slash", "Injected", "xxxxxxxx", "été"]) {
      assert.deepEqual(names.filter((n) => n.includes(fragment)), [], fragment);
    }
    assert.equal(await Deno.stat("/tmp/passwd.mp4").then(() => true, () => false), false);
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Slow clients and malformed requests

/** Opens a raw connection and sends `head`; the connection, and the first bytes it answers (if any, within `ms`). */
async function rawConnection(port: number, head: string | Uint8Array) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(typeof head === "string" ? new TextEncoder().encode(head) : head);
  return {
    conn,
    /** The first answer within `ms`: its text, "" if the server closed the connection, null if it said nothing. */
    async answer(ms: number): Promise<string | null> {
      const buffer = new Uint8Array(65536);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
      const read = conn.read(buffer).then(
        (n) => new TextDecoder().decode(buffer.subarray(0, n ?? 0)),
        () => "",
      );
      const result = await Promise.race([read, timeout]);
      clearTimeout(timer);
      return result;
    },
    close() {
      try {
        conn.close();
      } catch { /* closed by the server */ }
    },
  };
}

/** A normal conversion of `source`, which must succeed quickly. */
async function assertServed(url: string, source: string, media: string, label: string) {
  const started = Date.now();
  await assertMp3(await postFile(`${url}/v1/convert`, source, "ok.flac"), `${media}/ok.mp3`, source);
  assert.ok(Date.now() - started < 5000, `${label}: a normal conversion took ${Date.now() - started} ms`);
  assert.equal((await fetch(`${url}/healthz`)).status, 200, label);
}

Deno.test("embedded: clients that never finish their headers, or trickle their body, do not hold up anyone else", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  const slow: Awaited<ReturnType<typeof rawConnection>>[] = [];
  try {
    const source = await makeMedia(media, "flac", { seconds: 1 });
    for (let i = 0; i < 50; i++) {
      slow.push(await rawConnection(app.port, `POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow-${i}: `));
    }
    for (let i = 0; i < 10; i++) {
      const c = await rawConnection(
        app.port,
        "POST /v1/jobs?filename=slow.mp4 HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\r\n",
      );
      await c.conn.write(new Uint8Array(10));
      slow.push(c);
    }
    await assertServed(app.url, source, media, "with 60 slow clients");
    for (const c of slow) {
      assert.equal(await c.answer(10), null, "a slow client was answered before its time");
    }
  } finally {
    for (const c of slow) c.close();
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});

Deno.test("embedded: malformed forms, wrong types and huge headers answer 4xx with a code, and the service stays up", async () => {
  const media = await Deno.makeTempDir();
  const app = await start();
  try {
    const source = await makeMedia(media, "flac", { seconds: 1 });
    const form = (body: string, type = "multipart/form-data; boundary=XX") =>
      fetch(`${app.url}/v1/jobs`, { method: "POST", headers: { "content-type": type }, body });
    const part = (name: string, value: string, filename?: string) =>
      `--XX\r\nContent-Disposition: form-data; name="${name}"${
        filename ? `; filename="${filename}"` : ""
      }\r\n\r\n${value}\r\n`;
    const cases: [string, () => Promise<Response>, number, string][] = [
      [
        "no boundary",
        () => form(part("file", "abc", "a.mp4"), "multipart/form-data"),
        400,
        "invalid_request",
      ],
      ["garbage", () => form("\u0000\u0001 not a form at all"), 400, "invalid_request"],
      [
        "cut off",
        () => form(`--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\nabc`),
        400,
        "invalid_request",
      ],
      ["no file field", () => form(part("bitrate", "128") + "--XX--\r\n"), 400, "invalid_request"],
      [
        "two files",
        () => form(part("file", "a", "a.mp4") + part("file", "b", "b.mp4") + "--XX--\r\n"),
        400,
        "invalid_request",
      ],
      [
        "a bad field before the file",
        () => form(part("bitrate", "7") + part("file", "a", "a.mp4") + "--XX--\r\n"),
        400,
        "invalid_option",
      ],
      [
        "a bad field after the file",
        () => form(part("file", "a", "a.mp4") + part("channels", "9") + "--XX--\r\n"),
        400,
        "invalid_option",
      ],
      [
        "a part header line of 64 KiB",
        () =>
          form(
            `--XX\r\nContent-Disposition: form-data; name="file"; filename="${
              "x".repeat(65536)
            }"\r\n\r\nabc\r\n--XX--\r\n`,
          ),
        400,
        "invalid_request",
      ],
      ["text/plain", () => form("abc", "text/plain"), 415, "unsupported_media_type"],
      // JSON asks for a URL import: one without a "url" is a bad request.
      ["application/json", () => form("{}", "application/json"), 400, "invalid_request"],
    ];
    for (const [label, send, status, code] of cases) {
      await assertError(await send(), status, code).catch((e) => {
        throw new Error(`${label}: ${e.message}`);
      });
    }
    // Fields before and after the file are options.
    const bytes = await Deno.readFile(source);
    const good = new FormData();
    good.append("bitrate", "96");
    good.append("file", new File([bytes], "good.flac"));
    good.append("title", "After");
    const accepted = await fetch(`${app.url}/v1/jobs`, { method: "POST", body: good });
    assert.equal(accepted.status, 202);
    assert.deepEqual((await accepted.json()).options, { bitrate: 96, title: "After" });

    // An HTTP header line of 64 KiB and one of 1 MiB: refused by the HTTP server itself.
    for (const size of [64 * 1024, 1024 * 1024]) {
      const huge = await rawConnection(
        app.port,
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"x".repeat(size)}\r\n\r\n`,
      )
        .catch(() => null); // the server may close the connection while the header is still being written
      const answer = huge ? await huge.answer(5000) : "";
      huge?.close();
      assert.ok(
        answer === "" || /^HTTP\/1\.1 4\d\d /.test(answer!),
        `a ${size}-byte header line: ${answer?.slice(0, 80)}`,
      );
    }
    await assertServed(app.url, source, media, "after the malformed requests");
  } finally {
    await app.stop();
    await Deno.remove(media, { recursive: true });
  }
});
