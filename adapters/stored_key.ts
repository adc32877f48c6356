/**
 * @module
 * Reading an API key record back from a store: checked against the {@linkcode ApiKey} schema, so that a damaged
 * record fails loudly, naming the key, instead of granting anything.
 */
import { ApiKey } from "@vmp3/shared";

/** The stored record of key `id`, checked; throws, naming the key, when it is not a valid key of that id. */
export function parseStoredKey(id: string, value: unknown): ApiKey {
  const parsed = ApiKey.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "record";
    throw new Error(`The stored API key ${id} is not a valid key (${where}: ${issue?.message})`, {
      cause: parsed.error,
    });
  }
  if (parsed.data.id !== id) {
    throw new Error(`The stored API key ${id} holds the record of ${parsed.data.id}`);
  }
  return parsed.data;
}
