/**
 * Container healthcheck: exits 0 when `GET <url>` answers 2xx within 3 s, else 1.
 * Run it with net access to that one address only, e.g.
 * `deno run --no-config --no-lock --allow-net=127.0.0.1:8080 /app/docker/healthcheck.ts http://127.0.0.1:8080/healthz`.
 * (`deno eval` would run with every permission.)
 */
const url = Deno.args[0];
if (!url) {
  console.error("usage: healthcheck.ts http://127.0.0.1:PORT/healthz");
  Deno.exit(2);
}
try {
  const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
  await response.body?.cancel();
  if (!response.ok) {
    console.error(`${url} answered ${response.status}`);
    Deno.exit(1);
  }
} catch (error) {
  console.error(`${url} did not answer: ${error instanceof Error ? error.message : error}`);
  Deno.exit(1);
}
