/** Serving a service's app until SIGINT/SIGTERM, then draining: the same for every real-mode main.ts. */
/** A listening service. */
export interface Served {
  url: string;
  /** Stops listening, then runs the service's own cleanup. */
  close(): Promise<void>;
}

/** Serves `app` on HOST:PORT until a signal, then stops listening and runs `cleanup` (finish work in hand). */
export function serveUntilSignal(
  app: { fetch(request: Request): Response | Promise<Response> },
  listen: { HOST: string; PORT: number },
  cleanup: () => Promise<void>,
): Served {
  const server = Deno.serve(
    { hostname: listen.HOST, port: listen.PORT, onListen: () => {} },
    (request) => app.fetch(request),
  );
  const { hostname, port } = server.addr;
  const url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  console.log(`listening on ${url}`);
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      await server.shutdown();
      await cleanup();
    })();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      console.log(`${signal}: draining…`);
      close().then(() => Deno.exit(0), (error) => {
        console.error(error);
        Deno.exit(1);
      });
    });
  }
  return { url, close };
}
