/** A sha256 computed on bytes as they stream past, so a file is never read a second time to hash it. */
import { createHash } from "node:crypto";

/** A pass-through stream that hashes what flows through it. */
export interface Sha256Tap {
  /** Pipe the bytes through this; they come out unchanged. */
  stream: TransformStream<Uint8Array, Uint8Array>;
  /** The hex sha256 of every byte that passed; only once the stream has ended. */
  digest(): string;
}

/** Creates a {@linkcode Sha256Tap}. */
export function sha256Tap(): Sha256Tap {
  const hash = createHash("sha256");
  let result: string | undefined;
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      hash.update(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      result = hash.digest("hex");
    },
  });
  return {
    stream,
    digest() {
      if (result === undefined) throw new Error("sha256Tap: the stream has not ended yet");
      return result;
    },
  };
}
