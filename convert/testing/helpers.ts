/** Helpers the Convert tests share. */
import assert from "node:assert/strict";
import { AppError, type ErrorCode } from "@vmp3/shared";

/** Runs `fn` with a fresh temporary folder, removed afterwards. */
export async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-convert-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Asserts that `promise` rejects with an AppError of `code` (and a message matching `message`); returns it. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
): Promise<AppError> {
  const error = await promise.then(
    () => assert.fail(`expected AppError ${code}, but it resolved`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof AppError, `expected AppError ${code}, got ${error}`);
  assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  return error;
}
