/** What both end-to-end suites share: submitting files, waiting for jobs, checking MP3s with ffprobe. */
import assert from "node:assert/strict";
import { audioDuration, containsBytes, probeJson } from "../convert/testing/media.ts";

/** POSTs `path` as multipart field "file" to `url`. */
export async function postFile(
  url: string,
  path: string,
  filename = path.split("/").pop()!,
): Promise<Response> {
  const form = new FormData();
  form.append("file", new File([await Deno.readFile(path)], filename));
  return await fetch(url, { method: "POST", body: form });
}

/** Polls GET /v1/jobs/:id until the job is final. */
export async function waitForJob(
  base: string,
  id: string,
  timeoutMs = 60_000,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await (await fetch(`${base}/v1/jobs/${id}`)).json();
    if (job.status === "done" || job.status === "failed") return job;
    if (Date.now() > deadline) throw new Error(`Job ${id} still ${job.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Saves an MP3 response to `path` and checks it with ffprobe: mp3 codec, duration of the source's audio. */
export async function assertMp3(response: Response, path: string, source: string): Promise<void> {
  assert.deepEqual(response.status, 200, await response.clone().text().catch(() => ""));
  await Deno.writeFile(path, new Uint8Array(await response.arrayBuffer()));
  const probe = await probeJson(path);
  const audio = probe.streams.filter((s) => s.codec_type === "audio");
  assert.deepEqual(audio.length, 1, "one audio stream");
  assert.deepEqual(audio[0].codec_name, "mp3");
  assert.deepEqual(probe.streams.length, 1, "no video or other streams in the MP3");
  const [got, want] = [await audioDuration(path), await audioDuration(source)];
  assert(Math.abs(got - want) <= 0.1, `MP3 duration ${got} s is not within 0.1 s of the source's ${want} s`);
}

/** Whether any file below `dir` contains `needle`. */
export async function anyFileContains(dir: string, needle: string): Promise<boolean> {
  const bytes = new TextEncoder().encode(needle);
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory && (await anyFileContains(path, needle))) return true;
    if (entry.isFile) {
      const data = await Deno.readFile(path);
      if (containsBytes(data, bytes)) return true;
    }
  }
  return false;
}

/** Asserts that `response` is the error JSON with `status` and `code`. */
export async function assertError(response: Response, status: number, code: string): Promise<void> {
  const body = await response.json();
  assert.deepEqual([response.status, body?.error?.code], [status, code], JSON.stringify(body));
  assert(typeof body.error.message === "string" && body.error.message.length > 0, "the error has a message");
}

/** The pids of running processes whose command line contains every one of `parts`. */
export function processesMatching(...parts: string[]): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
      if (parts.every((part) => cmdline.includes(part))) pids.push(Number(entry.name));
    } catch { /* the process ended meanwhile */ }
  }
  return pids;
}

/** Waits up to `timeoutMs` for no process to match `parts`; returns the ones still running. */
export async function waitForNoProcess(parts: string[], timeoutMs = 3000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = processesMatching(...parts);
    if (pids.length === 0 || Date.now() > deadline) return pids;
    await new Promise((r) => setTimeout(r, 50));
  }
}
