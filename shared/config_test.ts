import assert from "node:assert/strict";
import { ConfigError, ConvertEnv, GatewayEnv, parseEnv, UploadEnv } from "./config.ts";

Deno.test("parseEnv applies defaults and reads only the variables the schema names", () => {
  const read: string[] = [];
  const config = parseEnv(GatewayEnv, (name) => {
    read.push(name);
    return { UPLOAD_URL: "http://upload:8081", METADATA_URL: "http://metadata:8082" }[name];
  });
  assert.deepEqual(config, {
    HOST: "127.0.0.1",
    PORT: 8080,
    UPLOAD_URL: "http://upload:8081",
    METADATA_URL: "http://metadata:8082",
  });
  assert.deepEqual(read.sort(), ["HOST", "METADATA_URL", "PORT", "UPLOAD_URL"]);
});

Deno.test("parseEnv fails fast naming every missing or bad variable", () => {
  try {
    parseEnv(UploadEnv, { RABBITMQ_URL: "redis://x", PORT: "http", S3_BUCKET: "b", METADATA_URL: "" });
    throw new Error("parseEnv accepted a bad configuration");
  } catch (error) {
    assert(error instanceof ConfigError, String(error));
    for (
      const part of [
        '"RABBITMQ_URL" must be a amqp:// or amqps:// URL',
        '"PORT"',
        '"METADATA_URL" is required',
        '"S3_BUCKET"',
        '"S3_ACCESS_KEY_ID" is required',
      ]
    ) {
      assert(error.message.includes(part), `"${part}" not in: ${error.message}`);
    }
  }
});

Deno.test("S3 settings parse booleans and the checksum mode strictly", () => {
  const base = {
    RABBITMQ_URL: "amqp://r",
    S3_BUCKET: "bucket",
    S3_ACCESS_KEY_ID: "k",
    S3_SECRET_ACCESS_KEY: "s",
  };
  const config = parseEnv(ConvertEnv, {
    ...base,
    S3_FORCE_PATH_STYLE: "false",
    S3_CHECKSUM: "when_supported",
  });
  assert.deepEqual([config.S3_FORCE_PATH_STYLE, config.S3_CHECKSUM, config.WORK_DIR], [
    false,
    "when_supported",
    "/tmp/vmp3-convert",
  ]);
  let threw = false;
  try {
    parseEnv(ConvertEnv, { ...base, S3_FORCE_PATH_STYLE: "yes" });
  } catch (error) {
    threw = error instanceof ConfigError && error.message.includes('"S3_FORCE_PATH_STYLE"');
  }
  assert(threw, "S3_FORCE_PATH_STYLE=yes was accepted");
});
