import assert from "node:assert/strict";
import {
  ConfigError,
  consumerTimeoutProblem,
  ConvertEnv,
  GatewayEnv,
  ImportEnv,
  parseEnv,
  UploadEnv,
} from "./config.ts";

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
    AUTH: "required",
    DOWNLOAD_LINK_SECONDS: 900,
  });
  assert.deepEqual(read.sort(), [
    "AUTH",
    "DOWNLOAD_LINK_SECONDS",
    "DOWNLOAD_LINK_SECRET",
    "HOST",
    "METADATA_URL",
    "PORT",
    "UPLOAD_URL",
  ]);
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

Deno.test("Convert's retry waits, shutdown grace and broker timeout have defaults that fit together", () => {
  const config = parseEnv(ConvertEnv, {
    RABBITMQ_URL: "amqp://r",
    S3_BUCKET: "bucket",
    S3_ACCESS_KEY_ID: "k",
    S3_SECRET_ACCESS_KEY: "s",
  });
  assert.deepEqual(config.CONVERT_RETRY_DELAYS_SECONDS, [1, 2, 5, 10, 30, 60, 60, 60, 60]);
  assert.deepEqual(
    [
      config.CONVERT_SHUTDOWN_GRACE_SECONDS,
      config.BROKER_CONSUMER_TIMEOUT_SECONDS,
      config.FFMPEG_TIMEOUT_SECONDS,
    ],
    [25, 1800, 1200],
  );
  assert.equal(config.CONVERT_TEST_CRASH_FILENAME, undefined, "the test crash switch is off unless set");
  assert.equal(consumerTimeoutProblem(config), null);
});

Deno.test("Convert refuses limits that do not fit the broker's consumer timeout, naming the variables", () => {
  const base = {
    RABBITMQ_URL: "amqp://r",
    S3_BUCKET: "bucket",
    S3_ACCESS_KEY_ID: "k",
    S3_SECRET_ACCESS_KEY: "s",
  };
  // 20 min of FFmpeg and about 5 min of retry waits do not fit 90% of a 25 min consumer timeout.
  assert.throws(
    () => parseEnv(ConvertEnv, { ...base, BROKER_CONSUMER_TIMEOUT_SECONDS: "1500" }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      for (
        const name of [
          "FFMPEG_TIMEOUT_SECONDS",
          "CONVERT_RETRY_DELAYS_SECONDS",
          "BROKER_CONSUMER_TIMEOUT_SECONDS",
        ]
      ) {
        assert.ok(error.message.includes(name), `${name} not in: ${error.message}`);
      }
      return true;
    },
  );
  // Fewer waits make it fit; "none" means no retry at all.
  const fits = parseEnv(ConvertEnv, {
    ...base,
    BROKER_CONSUMER_TIMEOUT_SECONDS: "1500",
    CONVERT_RETRY_DELAYS_SECONDS: "1, 2.5, 5",
  });
  assert.deepEqual(fits.CONVERT_RETRY_DELAYS_SECONDS, [1, 2.5, 5]);
  assert.deepEqual(
    parseEnv(ConvertEnv, { ...base, CONVERT_RETRY_DELAYS_SECONDS: "none" }).CONVERT_RETRY_DELAYS_SECONDS,
    [],
  );
  assert.throws(
    () => parseEnv(ConvertEnv, { ...base, CONVERT_RETRY_DELAYS_SECONDS: "1,,2" }),
    /"CONVERT_RETRY_DELAYS_SECONDS" must be seconds separated by commas/,
  );
});

Deno.test("IMPORT_ALLOW_CIDRS is parsed into ranges, and a bad one stops the service naming it", () => {
  const config = parseEnv(ImportEnv, { IMPORT_ALLOW_CIDRS: "127.0.0.1/32, fd00::/8" });
  assert.deepEqual(config.IMPORT_ALLOW_CIDRS.map((range) => range.text), ["127.0.0.1/32", "fd00::/8"]);
  assert.equal(config.IMPORT_TIMEOUT_SECONDS, 600);
  assert.deepEqual(parseEnv(ImportEnv, {}).IMPORT_ALLOW_CIDRS, []);
  assert.throws(
    () => parseEnv(ImportEnv, { IMPORT_ALLOW_CIDRS: "10.0.0.0/33" }),
    (e) => e instanceof ConfigError && /"IMPORT_ALLOW_CIDRS" must be CIDR ranges/.test(e.message),
  );
});
