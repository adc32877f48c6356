/**
 * Starts the real-mode product for tests and benchmarks: the four services as separate processes with their real
 * permission flags (scripts/services.ts), on the RabbitMQ, Redis and s3rver that scripts/test_servers.sh started.
 * @module
 */
import { createS3BlobStore } from "@vmp3/adapters/s3";
import { createRedisClient } from "@vmp3/adapters/redis";
import { serviceArgs, type ServiceName } from "../scripts/services.ts";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    throw new Error(`${name} is not set: run the tests with \`deno task test\`, which starts the servers`);
  }
  return value;
}

/**
 * Appends the process's stdout and stderr to `log` as they come, chunk by chunk (a pipeTo into one file's
 * writable would lock it for the second stream, and hold the output back until the process ends). `written`
 * resolves once both streams have ended and their output is in `log`: a moment after the process exits, unordered
 * with its `status`.
 */
export async function captureOutput(
  process: Deno.ChildProcess,
  log: string,
): Promise<{ written: Promise<void> }> {
  await Deno.writeTextFile(log, "", { append: true });
  const copies: Promise<void>[] = [];
  for (const stream of [process.stdout, process.stderr]) {
    const file = await Deno.open(log, { append: true });
    copies.push(
      (async () => {
        for await (const chunk of stream) await file.write(chunk);
      })().catch(() => {}).finally(() => file.close()),
    );
  }
  return { written: Promise.all(copies).then(() => {}) };
}

/** The processes of services whose `status` has settled (marked before anyone else awaiting it goes on). */
const exitedProcesses = new WeakSet<Deno.ChildProcess>();

/**
 * What `service` has logged so far; once its process has exited, all of it (the last output is written by this
 * process's relay a moment after the exit, so a read right after `status` could miss it). The wait is bounded: a
 * grandchild holding the pipes open must not hang a failing test's report.
 */
export async function readLog(service: Service): Promise<string> {
  if (exitedProcesses.has(service.process)) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([service.written, new Promise((resolve) => timer = setTimeout(resolve, 5000))]);
    clearTimeout(timer);
  }
  return await Deno.readTextFile(service.log).catch(() => "");
}

/**
 * Starts `service` as its own process with its real permission flags (computed from `options.flagsEnv`, by default
 * from `env`), its output appended to `log`, and waits until its health check answers (unless `options.wait` is
 * false). If it exits first or does not answer within 30 s, it is killed and the error carries its log.
 */
export async function launchService(
  service: ServiceName,
  name: string,
  env: Record<string, string>,
  log: string,
  options: { wait?: boolean; flagsEnv?: Record<string, string> } = {},
): Promise<Service> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", ...serviceArgs(service, options.flagsEnv ?? env)],
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Registered before any caller can await `status`, so it runs first when the process exits.
  process.status.then(() => exitedProcesses.add(process));
  const { written } = await captureOutput(process, log);
  const entry = { name, process, log, written };
  if (options.wait === false) return entry;
  const url = `http://127.0.0.1:${env.PORT}/healthz`;
  for (let i = 0;; i++) {
    if ((await fetch(url).then((r) => r.body?.cancel().then(() => r.ok)).catch(() => false))) return entry;
    const exited = exitedProcesses.has(process);
    if (exited || i > 300) {
      try {
        process.kill("SIGKILL");
      } catch { /* already gone */ }
      await process.status;
      // Told from before the kill: after it, the process has exited either way.
      const why = exited ? "exited at start" : "did not start";
      throw new Error(`${name} ${why}:\n${await readLog(entry)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** A running service process. */
export interface Service {
  name: string;
  process: Deno.ChildProcess;
  log: string;
  /** Resolves once all the process's output is in `log` (after it exits). */
  written: Promise<void>;
}

/** Starts the real-mode product: four services (and `workers` Convert workers), each its own process. */
export async function startProduct(workers = 1, extraEnv: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "vmp3-real-" });
  // Each product gets its own bucket, so it starts with an empty Redis too: a content-cache entry left by an
  // earlier test would name an MP3 in that test's bucket. (Test files run one at a time.)
  const redis = createRedisClient(required("TEST_REDIS_URL"));
  await redis.connect();
  await redis.flushdb();
  redis.disconnect();
  const ports = { gateway: freePort(), upload: freePort(), metadata: freePort() };
  const bucket = `vmp3-e2e-${crypto.randomUUID().slice(0, 8)}`;
  const common = {
    HOST: "127.0.0.1",
    // As in any shell or container; without HOME the AWS SDK asks for the uid (--allow-sys=uid) to find one.
    HOME: dir,
    // Deno's cache stays the test runner's, so that no service fetches the npm registry again at start.
    DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME") ?? "/root"}/.cache/deno`,
    RABBITMQ_URL: required("TEST_RABBITMQ_URL"),
    REDIS_URL: required("TEST_REDIS_URL"),
    S3_ENDPOINT: required("TEST_S3_ENDPOINT"),
    S3_BUCKET: bucket,
    S3_ACCESS_KEY_ID: "S3RVER",
    S3_SECRET_ACCESS_KEY: "S3RVER",
    S3_CHECKSUM: "when_required",
    UPLOAD_URL: `http://127.0.0.1:${ports.upload}`,
    METADATA_URL: `http://127.0.0.1:${ports.metadata}`,
    // Most tests are about conversions, not keys: the API runs open unless a test asks for AUTH=required.
    AUTH: "open",
    ...extraEnv,
  };
  const services: Service[] = [];
  const spawn = async (service: ServiceName, name: string, env: Record<string, string>) => {
    const entry = await launchService(service, name, env, `${dir}/${name}.log`);
    services.push(entry);
    return entry;
  };
  const path = Deno.env.get("PATH") ?? "/usr/bin:/bin";
  /** Starts Convert worker `n` (work folder `${dir}/work-${n}`), with `extraEnv` over the product's settings. */
  const startWorker = (n: number, extraEnv: Record<string, string> = {}) =>
    spawn("convert", `convert-${n}`, {
      ...common,
      PATH: path,
      PORT: String(freePort()),
      WORK_DIR: `${dir}/work-${n}`,
      ...extraEnv,
    });

  try {
    await spawn("metadata", "metadata", { ...common, PORT: String(ports.metadata) });
    await spawn("upload", "upload", { ...common, PORT: String(ports.upload) });
    for (let n = 1; n <= workers; n++) await startWorker(n);
    await spawn("gateway", "gateway", { ...common, PORT: String(ports.gateway) });
  } catch (error) {
    // A service that did not start: stop the others and leave no folder behind.
    for (const s of services) {
      try {
        s.process.kill("SIGKILL");
      } catch { /* already gone */ }
      await s.process.status;
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }

  const storage = createS3BlobStore({
    endpoint: common.S3_ENDPOINT,
    bucket,
    region: "us-east-1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
    checksum: "when_required",
  });
  return {
    url: `http://127.0.0.1:${ports.gateway}`,
    uploadUrl: common.UPLOAD_URL,
    bucket,
    dir,
    storage,
    services,
    startWorker,
    /** Kills the Upload, Metadata or Gateway service (if it still runs) and starts it again with `extraEnv`. */
    async restart(
      service: "upload" | "metadata" | "gateway",
      extraEnv: Record<string, string | undefined> = {},
    ) {
      const old = services.find((s) => s.name === service);
      if (old) {
        try {
          old.process.kill("SIGKILL");
        } catch { /* already gone */ }
        await old.process.status;
        services.splice(services.indexOf(old), 1);
      }
      const env: Record<string, string> = { ...common, PORT: String(ports[service]) };
      for (const [key, value] of Object.entries(extraEnv)) {
        if (value === undefined) delete env[key];
        else env[key] = value;
      }
      await spawn(service, service, env);
    },
    async logs() {
      return (await Promise.all(
        services.map(async (s) => `--- ${s.name}\n${await readLog(s)}`),
      ))
        .join("\n");
    },
    async stop() {
      for (const s of services) {
        try {
          s.process.kill("SIGTERM");
        } catch { /* already gone */ }
        await s.process.status;
      }
      storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
