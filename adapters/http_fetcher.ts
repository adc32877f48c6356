/** A Fetcher that sends a service's requests over HTTP to `baseUrl`, whatever origin they were built with. */
import type { Fetcher } from "@vmp3/shared";

/** Creates a Fetcher that rewrites each request's origin to `baseUrl` and sends it with `fetch`. */
export function httpFetcher(baseUrl: string): Fetcher {
  const base = new URL(baseUrl);
  return (request) => {
    const url = new URL(request.url);
    url.protocol = base.protocol;
    url.host = base.host;
    url.pathname = base.pathname.replace(/\/$/, "") + url.pathname;
    return fetch(new Request(url, request));
  };
}
