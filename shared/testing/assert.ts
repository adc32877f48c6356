/**
 * Minimal assertions for tests (jsr:@std/assert cannot be reached from every machine we build on).
 * @module
 */
import { inspect, isDeepStrictEqual } from "node:util";

/** Throws unless `condition` holds. */
export function assert(condition: unknown, message = "Assertion failed"): asserts condition {
  if (!condition) throw new Error(message);
}

/** Throws unless `actual` and `expected` are deeply equal. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(
      `${message ? message + ": " : ""}values differ\n  actual:   ${
        inspect(actual, { depth: 6 })
      }\n  expected: ${inspect(expected, { depth: 6 })}`,
    );
  }
}

/** Throws unless `actual` lies within `tolerance` of `expected`. */
export function assertAlmostEquals(
  actual: number,
  expected: number,
  tolerance: number,
  message?: string,
): void {
  if (!(Math.abs(actual - expected) <= tolerance)) {
    throw new Error(`${message ? message + ": " : ""}${actual} is not within ${tolerance} of ${expected}`);
  }
}

/** Awaits `fn` and returns what it threw, failing if it did not throw. */
export async function assertRejects(fn: () => Promise<unknown>, message?: string): Promise<unknown> {
  try {
    await fn();
  } catch (error) {
    return error;
  }
  throw new Error(message ?? "Expected the call to throw, and it did not");
}
