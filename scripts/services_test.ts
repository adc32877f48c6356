import assert from "node:assert/strict";
import { EmbeddedEnv } from "@vmp3/shared";
import { serviceArgs, serviceEnv } from "./services.ts";

const env = {
  RABBITMQ_URL: "amqp://rabbit:5672",
  REDIS_URL: "redis://redis:6379",
  S3_ENDPOINT: "http://minio:9000",
  S3_BUCKET: "vmp3",
  S3_ACCESS_KEY_ID: "key",
  S3_SECRET_ACCESS_KEY: "secret",
  UPLOAD_URL: "http://upload:8081",
  METADATA_URL: "http://metadata:8082",
  PATH: "/usr/bin",
  HOME: "/root",
  AWS_PROFILE: "x",
  UNRELATED_SECRET: "y",
};

Deno.test("each service is handed only the variables it reads: no S3 secret reaches the Gateway", () => {
  const metadata = serviceEnv("metadata", env);
  // Metadata keeps the durable record of each job in the bucket.
  assert.deepEqual(Object.keys(metadata).sort(), [
    "AWS_PROFILE",
    "HOME",
    "PATH",
    "RABBITMQ_URL",
    "REDIS_URL",
    "S3_ACCESS_KEY_ID",
    "S3_BUCKET",
    "S3_ENDPOINT",
    "S3_SECRET_ACCESS_KEY",
  ]);
  assert.deepEqual(Object.keys(serviceEnv("gateway", env)).sort(), [
    "HOME",
    "METADATA_URL",
    "PATH",
    "UPLOAD_URL",
  ]);
  const upload = serviceEnv("upload", env);
  assert.equal(upload.S3_SECRET_ACCESS_KEY, "secret");
  assert.equal(upload.AWS_PROFILE, "x");
  assert.equal(upload.UNRELATED_SECRET, undefined);
});

Deno.test("serviceArgs limits each service's network to its listen address and the hosts it calls", () => {
  const net = (service: "gateway" | "upload" | "metadata" | "convert") =>
    serviceArgs(service, { ...env, PORT: "9999" }).find((a) => a.startsWith("--allow-net="));
  assert.equal(net("gateway"), "--allow-net=127.0.0.1:9999,upload:8081,metadata:8082");
  // Metadata POSTs webhooks to any URL a job names.
  assert.ok(serviceArgs("metadata", env).includes("--allow-net"));
  assert.equal(net("metadata"), undefined);
  // Upload imports videos from any public URL (adapters/public_http.ts keeps it off private addresses).
  assert.ok(serviceArgs("upload", env).includes("--allow-net"));
  assert.equal(net("upload"), undefined);
  assert.equal(net("convert"), "--allow-net=127.0.0.1:9999,rabbit:5672,minio:9000");
  const convert = serviceArgs("convert", env);
  assert.ok(
    convert.includes("--allow-read=/tmp/vmp3-convert") && convert.includes("--allow-write=/tmp/vmp3-convert"),
  );
  for (const service of ["gateway", "upload", "metadata"] as const) {
    assert.ok(!serviceArgs(service, env).some((a) => /^--allow-(run|read|write)|^-A$/.test(a)), service);
  }
});

Deno.test("the dev task may read every variable the embedded mode reads", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const dev: string = config.tasks.dev;
  const allowed = /--allow-env=(\S+)/.exec(dev)?.[1].split(",") ?? [];
  // parseEnv reads each variable of the schema; one the flags do not allow stops `deno task dev` at start.
  const missing = Object.keys(EmbeddedEnv.shape).filter((name) => !allowed.includes(name));
  assert.deepEqual(missing, [], `add to the dev task's --allow-env: ${missing.join(",")}`);
});
