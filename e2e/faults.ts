/**
 * What the fault tests (faults_test.ts) share: stopping and starting the test servers that
 * scripts/test_servers.sh runs, Convert workers started with settings of their own (and their real permission
 * flags), and reading what the workers logged.
 * @module
 */
import { freePort, launchService, readLog, type Service, type startProduct } from "./product.ts";

/** The running product of `startProduct`. */
export type Product = Awaited<ReturnType<typeof startProduct>>;

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    throw new Error(`${name} is not set: run the tests with \`deno task test\`, which starts the servers`);
  }
  return value;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the command that the variable `name` holds (a script, or a command and its first arguments). */
export async function runFromEnv(name: string, ...args: string[]): Promise<string> {
  const [command, ...rest] = required(name).split(" ");
  const out = await new Deno.Command(command, {
    args: [...rest, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${name} ${args.join(" ")} failed: ${text}${new TextDecoder().decode(out.stderr)}`);
  }
  return text.trim();
}

/** The test servers, stopped and started again (each call waits until it is done). */
export const servers = {
  /** Stops the RabbitMQ node (its queues and messages are kept on disk). */
  stopRabbit: () => runFromEnv("TEST_RABBITMQ_CTL", "shutdown"),
  /** Starts the RabbitMQ node again and waits until it is up. */
  startRabbit: () => runFromEnv("TEST_RABBITMQ_START"),
  /** Evaluates an Erlang expression on the RabbitMQ node. */
  rabbitEval: (expression: string) => runFromEnv("TEST_RABBITMQ_CTL", "eval", expression),
  /** Stops Redis, keeping its data. */
  stopRedis: () => runFromEnv("TEST_REDIS_STOP"),
  /** Starts Redis again with the data it had. */
  resumeRedis: () => runFromEnv("TEST_REDIS_RESUME"),
  /** Stops s3rver. */
  stopS3: () => runFromEnv("TEST_S3_STOP"),
  /** Starts s3rver again, with every object it had. */
  startS3: () => runFromEnv("TEST_S3_START"),
};

/** Waits until `probe` gives something other than undefined (or false), checking every `everyMs`. */
export async function until<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** GET /v1/jobs/{id} as JSON with its status code. */
export async function getJob(
  base: string,
  id: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${base}/v1/jobs/${id}`);
  return { status: response.status, body: await response.json() };
}

/** Waits until job `id` has `status` (read through the Gateway; a 503 meanwhile is ignored). */
export function jobBecomes(base: string, id: string, status: string, timeoutMs = 60_000) {
  return until(
    `job ${id} to be ${status}`,
    async () => {
      const job = await getJob(base, id).catch(() => null);
      if (
        job?.status === 200 && job.body.status !== status &&
        ["done", "failed"].includes(String(job.body.status))
      ) {
        throw new Error(`job ${id} ended ${job.body.status}, not ${status}: ${JSON.stringify(job.body)}`);
      }
      return job?.status === 200 && job.body.status === status ? job.body : undefined;
    },
    timeoutMs,
    100,
  );
}

/** Convert workers started beside a product, each a process with its own settings and log. */
export interface Workers {
  /**
   * Starts a worker named `name` with the product's settings plus `env`, and waits until it answers its health
   * check (unless `wait` is false). `flagsFrom` computes its permission flags from other settings (to start one
   * whose settings are refused).
   */
  start(
    name: string,
    env?: Record<string, string>,
    options?: { wait?: boolean; flagsFrom?: Record<string, string> },
  ): Promise<Service>;
  /** Every worker started, running or not. */
  readonly all: Service[];
  /** The folder worker `name` converts in. */
  workDir(name: string): string;
  /** What worker `name` has logged so far (stdout and stderr); all of it once the worker has exited. */
  log(name: string): Promise<string>;
  /** Every worker's log, for a failing test's output. */
  logs(): Promise<string>;
  /** SIGKILLs every worker still running and waits for them. */
  stop(): Promise<void>;
}

/** Convert workers on the servers and in the bucket of `product`. */
export function convertWorkers(product: Product): Workers {
  const all: Service[] = [];
  const base = {
    HOST: "127.0.0.1",
    HOME: product.dir,
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    // The test runner's Deno cache: with HOME a fresh folder, Deno would fetch the npm registry again.
    DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
    RABBITMQ_URL: required("TEST_RABBITMQ_URL"),
    S3_ENDPOINT: required("TEST_S3_ENDPOINT"),
    S3_BUCKET: product.bucket,
    S3_ACCESS_KEY_ID: "S3RVER",
    S3_SECRET_ACCESS_KEY: "S3RVER",
    S3_CHECKSUM: "when_required",
  };
  const workDir = (name: string) => `${product.dir}/work-${name}`;
  const logPath = (name: string) => `${product.dir}/${name}.log`;
  return {
    all,
    workDir,
    async start(name, extra = {}, options = {}) {
      const env = { ...base, PORT: String(freePort()), WORK_DIR: workDir(name), ...extra };
      const flagsEnv = options.flagsFrom ? { ...env, ...options.flagsFrom } : env;
      const log = logPath(name);
      await Deno.writeTextFile(log, "");
      const service = await launchService("convert", name, env, log, { wait: options.wait, flagsEnv });
      all.push(service);
      return service;
    },
    log(name) {
      const service = all.findLast((s) => s.name === name);
      return service ? readLog(service) : Deno.readTextFile(logPath(name)).catch(() => "");
    },
    async logs() {
      const parts = await Promise.all(all.map(async (s) => `--- ${s.name}\n${await readLog(s)}`));
      return parts.join("\n");
    },
    async stop() {
      for (const s of all) {
        try {
          s.process.kill("SIGKILL");
        } catch { /* already gone */ }
        await s.process.status;
      }
    },
  };
}

/**
 * `read()` once it contains `part`. A worker logs "job …: done" after it has sent the done event, so a test that
 * saw the job done may read the log a moment before that line is written.
 */
export async function logOnceWith(
  read: () => Promise<string>,
  part: string,
  timeoutMs = 10_000,
): Promise<string> {
  return await until(`"${part}" in the log`, async () => {
    const text = await read();
    return text.includes(part) && text;
  }, timeoutMs);
}

/** How many lines of `text` contain `part`. */
export function linesWith(text: string, part: string): number {
  return text.split("\n").filter((line) => line.includes(part)).length;
}
