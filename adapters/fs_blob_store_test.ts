import assert from "node:assert/strict";
import { createFsBlobStore } from "./fs_blob_store.ts";

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks.map((c) => new TextEncoder().encode(c)));
}

Deno.test("FS blob store round-trips an object and lists it by prefix", async () => {
  const root = await Deno.makeTempDir();
  const store = createFsBlobStore(root);
  assert.deepEqual(await store.put("inputs/a", streamOf("hello ", "world")), { size: 11 });
  await store.put("outputs/a.mp3", streamOf("x"));
  const got = await store.get("inputs/a");
  assert.deepEqual(got?.size, 11);
  assert.deepEqual(await new Response(got!.body).text(), "hello world");
  assert.deepEqual(await store.list("inputs/"), ["inputs/a"]);
  assert.deepEqual(await store.head("outputs/a.mp3"), { size: 1 });
  await store.delete("inputs/a");
  await store.delete("inputs/a");
  assert.deepEqual(await store.get("inputs/a"), null);
  assert.deepEqual(await store.presignGet("outputs/a.mp3", { filename: "a.mp3", expiresIn: 60 }), null);
  await Deno.remove(root, { recursive: true });
});

Deno.test("FS blob store leaves nothing behind when the stream fails midway", async () => {
  const root = await Deno.makeTempDir();
  const store = createFsBlobStore(root);
  const failing = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(1000));
      controller.error(new Error("client went away"));
    },
  });
  await assert.rejects(() => store.put("inputs/b", failing), /client went away/);
  assert.deepEqual(await store.head("inputs/b"), null);
  assert.deepEqual(await store.list(""), []);
  assert.deepEqual([...Deno.readDirSync(`${root}/objects/inputs`)].length, 0, "a partial file was left");
  await Deno.remove(root, { recursive: true });
});

Deno.test("FS blob store refuses keys that could leave its folder", async () => {
  const store = createFsBlobStore(await Deno.makeTempDir());
  for (const key of ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", ""]) {
    await assert.rejects(() => store.head(key), /Invalid storage key/, `accepted ${JSON.stringify(key)}`);
  }
});

Deno.test("FS blob store: a body of another length than its size hint fails and leaves nothing", async () => {
  const root = await Deno.makeTempDir();
  const store = createFsBlobStore(root);
  assert.deepEqual(await store.put("inputs/exact", streamOf("hello"), { size: 5 }), { size: 5 });
  for (const [key, size] of [["inputs/short", 9], ["inputs/long", 3]] as const) {
    await assert.rejects(
      store.put(key, streamOf("hel", "lo"), { size }),
      (error: Error & { code?: string }) =>
        error.code === "invalid_request" && /declared/.test(error.message),
    );
    assert.equal(await store.head(key), null);
  }
  assert.deepEqual(await store.list("inputs/"), ["inputs/exact"]);
  await Deno.remove(root, { recursive: true });
});

Deno.test("fs: readLocation gives the object's own file and size, or null when there is none", async () => {
  const root = await Deno.makeTempDir();
  const store = createFsBlobStore(root);
  await store.put("inputs/v", new Blob([new Uint8Array(1234).fill(7)]).stream());
  const found = await store.readLocation!("inputs/v", { expiresIn: 60 });
  assert.ok(found);
  assert.equal(found.size, 1234);
  assert.deepEqual(await Deno.readFile(found.location), new Uint8Array(1234).fill(7));
  assert.equal(await store.readLocation!("inputs/none", { expiresIn: 60 }), null);
  await Deno.remove(root, { recursive: true });
});
