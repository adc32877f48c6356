/** Batches through the Gateway, on the real apps in process: several files in one form, one job each, one zip. */
import assert from "node:assert/strict";
import { jobKeys } from "@vmp3/shared";
import { withProduct } from "./testing/in_process.ts";

function batchForm(files: [string, string][], fields: Record<string, string> = {}): FormData {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  for (const [filename, bytes] of files) {
    form.append("file", new File([bytes], filename, { type: "video/mp4" }));
  }
  return form;
}

/** The entries of a zip (stored, as ours are), read by python3's zipfile: name -> text. */
async function unzip(bytes: Uint8Array): Promise<Record<string, string>> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/b.zip`, bytes);
    const script = "import json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n" +
      "print(json.dumps({n: z.read(n).decode() for n in z.namelist()}))";
    const out = await new Deno.Command("python3", { args: ["-c", script, `${dir}/b.zip`] }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test(
  "a form of three files makes three jobs in one batch, with the form's options; the zip holds their MP3s",
  withProduct({}, async (product) => {
    const key = await product.createKey();
    const created = await product.gateway.request("/v1/batches?bitrate=128", {
      method: "POST",
      headers: key.auth,
      body: batchForm([["a.mp4", "first"], ["b.mp4", "second"], ["a.mp4", "third"]], { title: "Live" }),
    });
    assert.equal(created.status, 202);
    const batch = await created.json();
    assert.equal(created.headers.get("location"), `/v1/batches/${batch.id}`);
    assert.deepEqual(batch.jobs.map((job: { input: { filename: string } }) => job.input.filename), [
      "a.mp4",
      "b.mp4",
      "a.mp4",
    ]);
    assert.deepEqual(batch.errors, []);
    for (const job of batch.jobs) {
      assert.deepEqual([job.batchId, job.options], [batch.id, { bitrate: 128, title: "Live" }]);
      assert.ok(await product.stored(jobKeys(job.id).inputKey));
    }
    assert.equal((await product.tasksTaken(3)).length, 3);

    // Not ready while a job runs; then the zip of the done ones (a failed one left out), names made unique.
    const [a, b, c] = batch.jobs.map((job: { id: string }) => job.id);
    await product.finish(a, "mp3 of a");
    const early = await product.gateway.request(`/v1/batches/${batch.id}/download`, { headers: key.auth });
    assert.equal(early.status, 409);
    assert.equal((await early.json()).error.code, "not_ready");
    await product.fail(b);
    await product.finish(c, "mp3 of c");
    const read = await (await product.gateway.request(`/v1/batches/${batch.id}`, { headers: key.auth }))
      .json();
    assert.deepEqual(read.jobs.map((job: { status: string }) => job.status), ["done", "failed", "done"]);
    const zip = await product.gateway.request(`/v1/batches/${batch.id}/download`, { headers: key.auth });
    assert.equal(zip.status, 200);
    assert.equal(zip.headers.get("content-type"), "application/zip");
    assert.deepEqual(await unzip(new Uint8Array(await zip.arrayBuffer())), {
      "a.mp3": "mp3 of a",
      "a (2).mp3": "mp3 of c",
    });
  }),
);

Deno.test(
  "a batch is its key's: another key gets 404; a bad option stores nothing; too many files is 400",
  withProduct({}, async (product) => {
    const [owner, other] = [await product.createKey(), await product.createKey()];
    const created = await product.gateway.request("/v1/batches", {
      method: "POST",
      headers: owner.auth,
      body: batchForm([["a.mp4", "x"]]),
    });
    const { id } = await created.json();
    for (const path of [`/v1/batches/${id}`, `/v1/batches/${id}/download`, "/v1/batches/not-a-uuid"]) {
      const res = await product.gateway.request(path, { headers: other.auth });
      assert.equal(res.status, 404, path);
      assert.equal((await res.json()).error.code, "not_found");
    }
    const before = (await product.jobIds()).length;
    const badOption = await product.gateway.request("/v1/batches", {
      method: "POST",
      headers: owner.auth,
      body: batchForm([["a.mp4", "x"], ["b.mp4", "y"]], { bitrate: "100" }),
    });
    assert.equal(badOption.status, 400);
    assert.equal((await badOption.json()).error.code, "invalid_option");
    const tooMany = await product.gateway.request("/v1/batches", {
      method: "POST",
      headers: owner.auth,
      body: batchForm(Array.from({ length: 21 }, (_, i) => [`${i}.mp4`, "x"] as [string, string])),
    });
    assert.equal(tooMany.status, 400);
    assert.equal((await tooMany.json()).error.code, "invalid_request");
    assert.equal((await product.jobIds()).length, before);
    const inputs = (await product.blobs.list("inputs/")).length;
    assert.equal(inputs, 1, "only the first batch's one input is stored");
  }),
);

Deno.test(
  "a batch past the key's jobs at once accepts what fits and lists the rest in errors",
  withProduct({}, async (product) => {
    const key = await product.createKey(["--concurrent-jobs", "2"]);
    const res = await product.gateway.request("/v1/batches", {
      method: "POST",
      headers: key.auth,
      body: batchForm([["a.mp4", "1"], ["b.mp4", "2"], ["c.mp4", "3"]]),
    });
    assert.equal(res.status, 202);
    const batch = await res.json();
    assert.equal(batch.jobs.length, 2);
    assert.deepEqual(
      batch.errors.map((e: { filename: string; error: { code: string } }) => [e.filename, e.error.code]),
      [
        ["c.mp4", "quota_exceeded"],
      ],
    );
    assert.equal((await product.blobs.list("inputs/")).length, 2, "the refused file's input is removed");
  }),
);
