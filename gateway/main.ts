/**
 * The Gateway in real mode (or on Deno Deploy): reaches Upload and Metadata over HTTP. Needs only net and env.
 * Run: `deno task start:gateway` (see README for the variables).
 * @module
 */
import { GatewayEnv, parseEnv } from "@vmp3/shared";
import { httpFetcher } from "@vmp3/adapters/http";
import { serveUntilSignal } from "@vmp3/adapters/serve";
import { createMetadataClient } from "@vmp3/metadata";
import { createGatewayApp } from "./app.ts";

/** Starts the Gateway with `config`; resolves once it listens. */
export function run(config: GatewayEnv) {
  const app = createGatewayApp({
    upload: httpFetcher(config.UPLOAD_URL),
    metadata: createMetadataClient(httpFetcher(config.METADATA_URL)),
  });
  return serveUntilSignal(app, config, () => Promise.resolve());
}

if (import.meta.main) await run(parseEnv(GatewayEnv, (name) => Deno.env.get(name)));
