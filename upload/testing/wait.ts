/**
 * @module
 * Waiting in the Upload service's tests. A task Upload publishes reaches the test's queue consumer
 * asynchronously (the in-memory queue polls), so a test waits for it with a deadline, never a fixed sleep: an
 * event loop stalled on a loaded machine must not fail it. A fixed sleep ({@linkcode settle}) is only for checking
 * that something did *not* happen, where it can err only toward passing.
 */

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** How long {@linkcode settle} gives something that must not happen (an extra task) to show anyway. */
export const SETTLE_MS = 60;

/** Waits {@linkcode SETTLE_MS}, before asserting that nothing more arrived. */
export const settle = (): Promise<void> => sleep(SETTLE_MS);

/**
 * Waits until `probe` holds, checking every 10 ms; fails after `timeoutMs` (default 5 s) naming `what` (a function
 * of it is asked at that time, to tell how far things got).
 */
export async function eventually(
  what: string | (() => string),
  probe: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!await probe()) {
    if (Date.now() > deadline) {
      const waitedFor = typeof what === "string" ? what : what();
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${waitedFor}`);
    }
    await sleep(10);
  }
}

/**
 * Waits until `published` (what a test's queue consumer took) holds at least `count` tasks, then {@linkcode settle}s
 * so that an extra task would show too; answers `published`, for the test to assert its exact length and content.
 */
export async function tasksTaken<T>(published: T[], count: number, timeoutMs = 5000): Promise<T[]> {
  await eventually(
    () => `${count} published task(s); ${published.length} came`,
    () => published.length >= count,
    timeoutMs,
  );
  await settle();
  return published;
}
