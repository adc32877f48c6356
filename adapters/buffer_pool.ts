/**
 * A fixed budget of equal buffers shared by every upload of a process: an upload takes a buffer to fill and gives
 * it back once its part is sent. When all are taken the next taker waits (and TCP slows its client down), so the
 * memory of uploads is capped whatever their number.
 */

/** A pool of at most `count` buffers of `size` bytes. */
export interface BufferPool {
  /** A buffer for the caller alone, once one is free. */
  take(): Promise<Uint8Array>;
  /** A buffer at once if one is free and nobody is waiting for one; else null (never waits). */
  tryTake(): Uint8Array | null;
  /** Gives a buffer back; the longest waiter gets it. */
  give(buffer: Uint8Array): void;
  /** Buffers made so far (at most `count`). */
  readonly made: number;
}

/** Creates a {@linkcode BufferPool}; buffers are made lazily, up to `count`. */
export function createBufferPool(size: number, count: number): BufferPool {
  if (!(count >= 1)) throw new Error("A buffer pool needs at least one buffer");
  const free: Uint8Array[] = [];
  const waiting: ((buffer: Uint8Array) => void)[] = [];
  let made = 0;
  return {
    take() {
      const buffer = free.pop();
      if (buffer) return Promise.resolve(buffer);
      if (made < count) {
        made++;
        return Promise.resolve(new Uint8Array(size));
      }
      return new Promise((resolve) => waiting.push(resolve));
    },
    tryTake() {
      if (waiting.length > 0) return null;
      const buffer = free.pop();
      if (buffer) return buffer;
      if (made < count) {
        made++;
        return new Uint8Array(size);
      }
      return null;
    },
    give(buffer) {
      const next = waiting.shift();
      if (next) next(buffer);
      else free.push(buffer);
    },
    get made() {
      return made;
    },
  };
}
