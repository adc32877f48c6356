/**
 * @module
 * An in-process {@linkcode Broadcast}, for the embedded mode, which is one process: every subscriber is in it.
 * (Deno KV's `listenQueue` would not do: it hands each message to one listener, not to every one.) Each subscriber
 * gets its own copy of each message, after `publish` has resolved, one at a time and in order.
 */
import type { z } from "zod";
import type { Broadcast } from "@vmp3/shared";

/** Options of {@linkcode createMemoryBroadcast}. */
export interface MemoryBroadcastOptions {
  /** Told about handlers that throw (default: console.error). */
  onError?: (error: unknown, context: string) => void;
}

/** Creates an in-process broadcast whose messages `schema` checks on both ends. */
export function createMemoryBroadcast<T>(
  schema: z.ZodType<T>,
  options: MemoryBroadcastOptions = {},
): Broadcast<T> {
  const onError = options.onError ??
    ((error, context) => console.error(`broadcast: ${context}:`, error));
  const subscribers = new Set<(text: string) => void>();
  return {
    publish(message) {
      try {
        // As a broker would carry it: a subscriber can neither see nor change another one's copy.
        const text = JSON.stringify(schema.parse(message));
        for (const deliver of subscribers) deliver(text);
        return Promise.resolve();
      } catch (error) {
        return Promise.reject(error);
      }
    },
    subscribe(handler) {
      let handling = Promise.resolve();
      const deliver = (text: string) => {
        handling = handling.then(async () => {
          try {
            await handler(schema.parse(JSON.parse(text)));
          } catch (error) {
            onError(error, "a subscriber's handler failed");
          }
        });
      };
      subscribers.add(deliver);
      return Promise.resolve({
        async close() {
          subscribers.delete(deliver);
          await handling;
        },
      });
    },
  };
}
