import assert from "node:assert/strict";
import { AppError } from "@vmp3/shared";
import { collectPage, decodeCursor, encodeCursor, type IndexEntry, MAX_LIST_SCAN } from "./job_page.ts";

Deno.test("a cursor decodes to the position it was made from, and is opaque URL-safe text", () => {
  const position = { createdAt: Date.UTC(2026, 0, 1), id: crypto.randomUUID() };
  const cursor = encodeCursor(position);
  assert.match(cursor, /^[A-Za-z0-9_-]+$/);
  assert.ok(!cursor.includes(position.id));
  assert.deepEqual(decodeCursor(cursor), position);
});

Deno.test("anything else is an invalid_request", () => {
  for (
    const cursor of ["", "%%%", btoa("12:x"), btoa(`-1:${crypto.randomUUID()}`), btoa(crypto.randomUUID())]
  ) {
    assert.throws(() => decodeCursor(cursor), (e) => e instanceof AppError && e.code === "invalid_request");
  }
});

Deno.test("a page stops reading its index as soon as it can answer", async () => {
  let read = 0;
  async function* entries(): AsyncGenerator<IndexEntry> {
    for (let i = 0; i < 5000; i++) {
      read++;
      yield { position: { createdAt: 5000 - i, id: crypto.randomUUID() }, job: null };
    }
  }
  const page = await collectPage({ limit: 10, status: "done" }, entries());
  assert.deepEqual(page.jobs, []);
  assert.equal(read, MAX_LIST_SCAN);
  assert.equal(decodeCursor(page.next!).createdAt, 5000 - (MAX_LIST_SCAN - 1));
});
