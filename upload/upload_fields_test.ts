import assert from "node:assert/strict";
import { AppError } from "@vmp3/shared";
import { pickOptions, uploadFields } from "./upload_fields.ts";

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return error instanceof AppError ? error.code : String(error);
  }
  return "none";
};

Deno.test("uploadFields checks options, cleans the file name, and takes only http(s) webhook URLs", () => {
  assert.deepEqual(
    uploadFields({
      filename: "../a/\u202Eclip.mp4",
      webhookUrl: "https://h.example.com/x",
      options: { bitrate: "128" },
    }),
    { filename: "clip.mp4", webhookUrl: "https://h.example.com/x", options: { bitrate: 128 } },
  );
  assert.deepEqual(uploadFields({ options: {} }), { filename: "upload", options: {} });
  assert.equal(code(() => uploadFields({ options: { bitrate: "7" } })), "invalid_option");
  assert.equal(code(() => uploadFields({ options: { colour: "red" } })), "invalid_option");
  assert.equal(
    code(() => uploadFields({ webhookUrl: "file:///etc/passwd", options: {} })),
    "invalid_option",
  );
  assert.equal(code(() => uploadFields({ webhookUrl: "not a url", options: {} })), "invalid_option");
});

Deno.test("pickOptions keeps the option names of tus metadata and leaves the rest", () => {
  assert.deepEqual(pickOptions({ filename: "a", filetype: "video/mp4", quality: "2", title: "T" }), {
    quality: "2",
    title: "T",
  });
});
