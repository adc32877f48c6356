/**
 * @module
 * The Gateway: the one public API (create jobs, watch them, download MP3s). No file system, no subprocess.
 */
export { createGatewayApp, type GatewayAppDeps } from "./app.ts";
export { createDownloadLinks, type DownloadLinks, downloadLinkSecret } from "./download_link.ts";
export { type AuthMode } from "./auth.ts";
