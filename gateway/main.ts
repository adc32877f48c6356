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
import { createDownloadLinks, downloadLinkSecret } from "./download_link.ts";

/** Starts the Gateway with `config`; resolves once it listens. */
export function run(config: GatewayEnv) {
  if (config.AUTH === "open") {
    console.error(
      "WARNING: AUTH=open: calls without an API key are let in (as nobody's, seeing nobody's jobs)",
    );
  }
  const app = createGatewayApp({
    upload: httpFetcher(config.UPLOAD_URL),
    metadata: createMetadataClient(httpFetcher(config.METADATA_URL)),
    auth: config.AUTH,
    links: createDownloadLinks(downloadLinkSecret(config.DOWNLOAD_LINK_SECRET), config.DOWNLOAD_LINK_SECONDS),
  });
  return serveUntilSignal(app, config, () => Promise.resolve());
}

if (import.meta.main) await run(parseEnv(GatewayEnv, (name) => Deno.env.get(name)));
