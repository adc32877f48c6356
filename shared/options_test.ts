import assert from "node:assert/strict";
import { AppError } from "./errors.ts";
import { parseOptions } from "./options.ts";

Deno.test("parseOptions applies the default bitrate and coerces form strings", () => {
  assert.deepEqual(parseOptions({}), { bitrate: 192 });
  assert.deepEqual(parseOptions({ bitrate: "320" }), { bitrate: 320 });
});

Deno.test("parseOptions rejects an out-of-range or non-numeric bitrate with invalid_option naming the field", () => {
  for (const bitrate of ["16", "321", "loud", "128.5"]) {
    try {
      parseOptions({ bitrate });
      throw new Error(`bitrate=${bitrate} was accepted`);
    } catch (error) {
      assert(error instanceof AppError && error.code === "invalid_option", String(error));
      assert(error.message.includes('"bitrate"'), error.message);
      assert.deepEqual(error.status, 400);
    }
  }
});
