import assert from "node:assert/strict";
import { join } from "node:path";
import { crc32 as zlibCrc32 } from "node:zlib";
import { makeMedia } from "../convert/testing/media.ts";
import { crc32, UniqueNames, type ZipEntry, zipEntryName, type ZipOptions, zipStream } from "./zip.ts";

/** What Python's zipfile reads in an archive: each entry's name, size, sha256, CRC and date, and testzip(). */
const PYTHON_READER = `
import hashlib, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    infos = z.infolist()
    limit = int(sys.argv[2])
    entries = [{"name": i.filename, "size": i.file_size, "crc": i.CRC, "flag_bits": i.flag_bits,
                "date_time": list(i.date_time), "sha256": hashlib.sha256(z.read(i)).hexdigest()}
               for i in infos[:limit]]
    print(json.dumps({"bad": bad, "count": len(infos), "entries": entries}))
`;

interface PythonView {
  bad: string | null;
  count: number;
  entries: {
    name: string;
    size: number;
    crc: number;
    flag_bits: number;
    date_time: number[];
    sha256: string;
  }[];
}

async function run(command: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const result = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { LC_ALL: "C.UTF-8" },
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: result.code, out: decode(result.stdout), err: decode(result.stderr) };
}

async function readWithPython(path: string, limit = 1_000_000): Promise<PythonView> {
  const { code, out, err } = await run("python3", ["-c", PYTHON_READER, path, String(limit)]);
  assert.equal(code, 0, `python3 zipfile failed: ${err}`);
  return JSON.parse(out);
}

/** `unzip -t`: Info-ZIP's own check of every entry's CRC and the archive's structure. */
async function unzipTest(path: string): Promise<string> {
  const { code, out, err } = await run("unzip", ["-t", path]);
  assert.equal(code, 0, `unzip -t failed (${code}): ${out}\n${err}`);
  assert.match(out, /No errors detected in compressed data/);
  return out;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(bytes));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fileEntry(name: string, path: string, modified?: Date): Promise<ZipEntry> {
  return { name, body: (await Deno.open(path)).readable, modified };
}

async function writeZip(
  dir: string,
  entries: AsyncIterable<ZipEntry> | Iterable<ZipEntry>,
  options?: ZipOptions,
): Promise<string> {
  const path = join(dir, `archive-${crypto.randomUUID().slice(0, 8)}.zip`);
  await zipStream(entries, options).pipeTo((await Deno.create(path)).writable);
  return path;
}

/** The end records of a zip: the EOCD's count, size and offset fields, and whether ZIP64 end records precede. */
function endOf(zip: Uint8Array): { zip64: boolean; count: number; size: number; offset: number } {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const at = zip.length - 22;
  assert.equal(view.getUint32(at, true), 0x06054b50);
  const zip64 = zip.length >= 22 + 20 + 56 && view.getUint32(at - 20, true) === 0x07064b50;
  if (zip64) assert.equal(view.getUint32(at - 20 - 56, true), 0x06064b50);
  return {
    zip64,
    count: view.getUint16(at + 10, true),
    size: view.getUint32(at + 12, true),
    offset: view.getUint32(at + 16, true),
  };
}

/** A body of `count` chunks of `size` fresh bytes each, made only when pulled; `pulled` counts them. */
function countedBody(count: number, size: number, fill = 7) {
  const state = { pulled: 0, cancelled: undefined as unknown };
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled === count) return controller.close();
      state.pulled++;
      controller.enqueue(new Uint8Array(size).fill(fill));
    },
    cancel(reason) {
      state.cancelled = reason ?? "cancelled";
    },
  }, { highWaterMark: 0 });
  return { body, state };
}

Deno.test("crc32 gives the standard check value and equals zlib's on any length, also when continued", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
  const data = crypto.getRandomValues(new Uint8Array(65536));
  for (const length of [1, 3, 7, 8, 9, 15, 16, 17, 100, 4095, 65536]) {
    for (const start of [0, 1, 5]) {
      const part = data.subarray(start, Math.min(start + length, data.length));
      assert.equal(crc32(part), zlibCrc32(part), `length ${length} from ${start}`);
      const cut = Math.floor(part.length / 3);
      assert.equal(crc32(part.subarray(cut), crc32(part.subarray(0, cut))), zlibCrc32(part));
    }
  }
});

Deno.test("zipEntryName leaves one safe file name: no separators, no '..', no control characters", () => {
  const cases: [string, string][] = [
    ["clip.mp3", "clip.mp3"],
    ["../../etc/passwd", "_._etc_passwd"],
    ["..\\..\\Windows\\win.ini", "_._Windows_win.ini"],
    ["a\u0000b\r\nc\u202Ed.mp3", "abcd.mp3"],
    ["..", "file"],
    ["...", "file"],
    ["", "file"],
    [" .hidden.mp3 ", "hidden.mp3"],
    ["song..mp3", "song.mp3"],
    ['what? <yes>: "no" | *.mp3', "what_ _yes__ _no_ _ _.mp3"],
    ["CON", "_CON"],
    ["nul.mp3", "_nul.mp3"],
    ["Été 日本 🎵.mp3", "Été 日本 🎵.mp3"],
    ["E\u0301te\u0301.mp3", "Été.mp3"], // NFD becomes NFC
  ];
  for (const [raw, safe] of cases) assert.equal(zipEntryName(raw), safe, JSON.stringify(raw));
  const long = zipEntryName(`${"é".repeat(300)}.mp3`);
  assert.ok(new TextEncoder().encode(long).length <= 255);
  assert.ok(long.endsWith("é.mp3"));
  for (const raw of ["../x", "a/..\\b", "\u0085..\u2028..", "x\u007f.."]) {
    const name = zipEntryName(raw);
    assert.ok(!/[/\\\p{Cc}\p{Cf}]/u.test(name) && !name.includes(".."), `${JSON.stringify(raw)} -> ${name}`);
  }
});

Deno.test("UniqueNames adds ' (2)', ' (3)' before the extension, comparing without case", () => {
  const names = new UniqueNames();
  const taken = ["a.mp3", "A.MP3", "a (2).mp3", "a.mp3", "b", "b", "a.mp3"].map((n) => names.take(n));
  assert.deepEqual(taken, ["a.mp3", "A (2).MP3", "a (2) (2).mp3", "a (3).mp3", "b", "b (2)", "a (4).mp3"]);
  const long = "x".repeat(251) + ".mp3";
  const second = new UniqueNames();
  second.take(long);
  const renamed = second.take(long);
  assert.ok(renamed.endsWith(" (2).mp3") && new TextEncoder().encode(renamed).length <= 255, renamed);
});

Deno.test("zipStream stores real MP3s that unzip and Python's zipfile extract byte for byte", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-zip-" });
  try {
    const mp3s = await Promise.all([2, 5, 30].map((seconds) => makeMedia(dir, "mp3-tagged", { seconds })));
    const when = new Date(Date.UTC(2024, 4, 17, 13, 45, 30));
    const named: [string, string][] = [
      ["Live at Été 日本.mp3", mp3s[0]],
      ["../../escape.mp3", mp3s[1]],
      ["Live at Été 日本.mp3", mp3s[2]], // the same name again
      ["live at été 日本.MP3", mp3s[0]], // the same but for case
    ];
    const expected = [
      "Live at Été 日本.mp3",
      "_._escape.mp3",
      "Live at Été 日本 (2).mp3",
      "live at été 日本 (3).MP3",
    ];
    const entries = async function* () {
      for (const [name, path] of named) yield await fileEntry(name, path, when);
    };
    const archive = await writeZip(dir, entries());
    const sums = await Promise.all(named.map(async ([, path]) => sha256(await Deno.readFile(path))));
    const sizes = await Promise.all(named.map(async ([, path]) => (await Deno.stat(path)).size));

    const python = await readWithPython(archive);
    assert.equal(python.bad, null);
    assert.deepEqual(python.entries.map((e) => e.name), expected);
    assert.deepEqual(python.entries.map((e) => e.sha256), sums);
    assert.deepEqual(python.entries.map((e) => e.size), sizes);
    for (const entry of python.entries) {
      assert.deepEqual(entry.date_time, [2024, 5, 17, 13, 45, 30]);
      assert.equal(entry.flag_bits & 0x0808, 0x0808, "data descriptor and UTF-8 bits");
    }
    assert.deepEqual(endOf(await Deno.readFile(archive)).zip64, false);

    const listing = await unzipTest(archive);
    for (const name of expected) assert.ok(listing.includes(`testing: ${name}`), `${name} in\n${listing}`);
    const out = join(dir, "out");
    const { code, err } = await run("unzip", ["-q", archive, "-d", out]);
    assert.equal(code, 0, err);
    const extracted = await Array.fromAsync(Deno.readDir(out), (e) => e.name);
    assert.deepEqual(extracted.sort(), [...expected].sort());
    for (const [i, name] of expected.entries()) {
      assert.equal(await sha256(await Deno.readFile(join(out, name))), sums[i], name);
      const stat = await Deno.stat(join(out, name));
      assert.equal(stat.mtime?.getTime(), when.getTime(), `${name} keeps its modification time`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zipStream writes ZIP64 records for big entries, far offsets and many entries (lowered limits)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-zip64-" });
  try {
    const mp3s = await Promise.all([2, 3].map((seconds) => makeMedia(dir, "mp3-tagged", { seconds })));
    const small = new Uint8Array(100).fill(42);
    const entries = (): ZipEntry[] => [
      { name: "one.mp3", body: ReadableStream.from([Deno.readFileSync(mp3s[0])]) },
      { name: "small.bin", body: ReadableStream.from([small]) }, // under the limit, but past it in the archive
      { name: "two.mp3", body: ReadableStream.from([Deno.readFileSync(mp3s[1])]) },
    ];
    // Sizes and offsets from 1000 bytes on, and 2 entries or more, count as needing ZIP64: every path is taken.
    const archive = await writeZip(dir, entries(), { zip64SizeLimit: 1000, zip64CountLimit: 2 });
    const bytes = await Deno.readFile(archive);
    const end = endOf(bytes);
    assert.deepEqual([end.zip64, end.count, end.offset], [true, 0xffff, 0xffffffff]);
    assert.ok(end.size < 1000, "a central directory under the limit keeps its size in the end record");

    const python = await readWithPython(archive);
    assert.equal(python.bad, null);
    assert.equal(python.count, 3);
    const sums = [
      await sha256(Deno.readFileSync(mp3s[0])),
      await sha256(small),
      await sha256(Deno.readFileSync(mp3s[1])),
    ];
    assert.deepEqual(python.entries.map((e) => e.sha256), sums);
    assert.deepEqual(python.entries.map((e) => e.size), [
      Deno.statSync(mp3s[0]).size,
      100,
      Deno.statSync(mp3s[1]).size,
    ]);
    await unzipTest(archive);

    // The same archive without lowered limits has no ZIP64 record at all, and the same contents.
    const plain = await writeZip(dir, entries());
    assert.equal(endOf(await Deno.readFile(plain)).zip64, false);
    assert.deepEqual((await readWithPython(plain)).entries.map((e) => e.sha256), sums);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zipStream writes 65536 entries with ZIP64 end records that unzip and Python read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-zip-many-" });
  try {
    const count = 65536;
    const entries = function* (): Generator<ZipEntry> {
      for (let i = 0; i < count; i++) {
        yield { name: "same.txt", body: ReadableStream.from([new TextEncoder().encode(`entry ${i}\n`)]) };
      }
    };
    const archive = await writeZip(dir, entries());
    assert.deepEqual(endOf(await Deno.readFile(archive)).zip64, true);
    assert.equal(endOf(await Deno.readFile(archive)).count, 0xffff);
    const python = await readWithPython(archive, 3);
    assert.equal(python.bad, null);
    assert.equal(python.count, count);
    assert.deepEqual(python.entries.map((e) => e.name), ["same.txt", "same (2).txt", "same (3).txt"]);
    const { code, out } = await run("unzip", ["-p", archive, `same (${count}).txt`]);
    assert.equal(code, 0);
    assert.equal(out, `entry ${count - 1}\n`);
    await unzipTest(archive);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zipStream reads a body only as fast as the archive is read, one chunk at a time", async () => {
  const { body, state } = countedBody(50, 1024);
  const reader = zipStream([{ name: "a.bin", body }]).getReader();
  let dataChunks = 0;
  for (let i = 0; i < 20; i++) {
    const { value } = await reader.read();
    if (value?.length === 1024) dataChunks++;
    // Everything pulled from the body has been handed on, but perhaps the one chunk being handed on now.
    assert.ok(state.pulled - dataChunks <= 1, `pulled ${state.pulled}, handed on ${dataChunks}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
    assert.ok(state.pulled - dataChunks <= 1, `pulled ${state.pulled} while idle, handed on ${dataChunks}`);
  }
  await reader.cancel("enough");
  assert.equal(state.cancelled, "enough");
});

Deno.test("zipStream keeps memory flat while 512 MiB pass through it", async () => {
  const { body } = countedBody(2048, 256 * 1024);
  const before = Deno.memoryUsage().rss;
  let peak = before;
  let total = 0;
  for await (const chunk of zipStream([{ name: "big.bin", body }])) {
    total += chunk.length;
    if (total % (32 * 1024 * 1024) < chunk.length) peak = Math.max(peak, Deno.memoryUsage().rss);
  }
  assert.ok(total > 512 * 1024 * 1024);
  const grew = (peak - before) / 1024 / 1024;
  assert.ok(grew < 128, `RSS grew by ${grew.toFixed(0)} MiB while streaming 512 MiB`);
});

Deno.test("zipStream errors with the body's own error, and closes the entries it was given", async () => {
  const failure = new Error("the MP3 could not be read from S3");
  let closed = false;
  async function* entries(): AsyncGenerator<ZipEntry> {
    try {
      yield { name: "ok.mp3", body: ReadableStream.from([new Uint8Array([1, 2, 3])]) };
      yield {
        name: "broken.mp3",
        body: new ReadableStream({
          start(controller) {
            controller.enqueue(new Uint8Array([4, 5]));
            controller.error(failure);
          },
        }),
      };
      yield { name: "never.mp3", body: ReadableStream.from([new Uint8Array([6])]) };
    } finally {
      closed = true;
    }
  }
  const read = Array.fromAsync(zipStream(entries()));
  await assert.rejects(read, (error) => error === failure);
  assert.ok(closed, "the entries iterator was closed");

  const listing = zipStream((async function* () {
    yield { name: "a", body: ReadableStream.from([new Uint8Array([1])]) };
    throw failure;
  })());
  await assert.rejects(Array.fromAsync(listing), (error) => error === failure);
});

Deno.test("cancelling the archive cancels the body being read, even while it waits for bytes", async () => {
  let reason: unknown;
  let closed = false;
  let pulled: () => void = () => {};
  const reading = new Promise<void>((resolve) => pulled = resolve);
  async function* entries(): AsyncGenerator<ZipEntry> {
    try {
      yield {
        name: "slow.mp3",
        body: new ReadableStream({
          pull: () => {
            pulled();
            return new Promise(() => {});
          },
          cancel: (why) => void (reason = why),
        }, { highWaterMark: 0 }),
      };
    } finally {
      closed = true;
    }
  }
  const reader = zipStream(entries()).getReader();
  const header = await reader.read();
  assert.equal(new DataView(header.value!.buffer).getUint32(0, true), 0x04034b50);
  const waiting = reader.read(); // waits on the body, which never answers
  await reading;
  await reader.cancel("client went away");
  assert.deepEqual(await waiting, { done: true, value: undefined });
  assert.equal(reason, "client went away");
  assert.ok(closed, "the entries iterator was closed");

  // Cancelled before a byte of an entry's body is asked for, the body is cancelled all the same.
  const untouched = countedBody(3, 10);
  const early = zipStream([{ name: "x", body: untouched.body }]).getReader();
  await early.read(); // the local header
  await early.cancel("not now");
  assert.deepEqual([untouched.state.pulled, untouched.state.cancelled], [0, "not now"]);
});
