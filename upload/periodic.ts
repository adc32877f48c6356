/** A background pass repeated at an interval (the reconciler's, the sweeper's), stopped cleanly at shutdown. */

/** A running repetition. */
export interface Periodic {
  /** Stops repeating, and resolves once the pass in progress (if any) has ended. */
  stop(): Promise<void>;
}

/**
 * Runs `pass` `intervalMs` after the end of the one before, until stopped. A pass that fails is logged under
 * `name` and tried again at the next interval.
 */
export function repeat(name: string, intervalMs: number, pass: () => Promise<unknown>): Periodic {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  const next = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass().then(
        () => {},
        (error) => console.error(`${name} pass failed (tried again later):`, error),
      ).finally(next);
    }, intervalMs);
  };
  next();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
