/**
 * compose.yaml, read the way docker-compose reads it (`docker-compose config` resolves anchors, merges and
 * `${VAR:-default}`), checked against shared/config.ts: each app service is given every variable it needs, may read
 * every variable it is given, may reach exactly the addresses those variables name, and nothing more.
 *
 * Needs docker-compose v1 (`apt-get install docker-compose`) and the Python it runs on (its PyYAML turns the
 * resolved YAML into JSON). Permissions: --allow-run, --allow-read, --allow-write (one empty temp .env file),
 * --allow-env=PATH,HOME.
 */
import { ConvertEnv, GatewayEnv, MetadataEnv, parseEnv, S3Env, UploadEnv } from "@vmp3/shared";
import type { z } from "zod";
import { AWS_ENV } from "./scripts/services.ts";

const ROOT = new URL(".", import.meta.url).pathname;

interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  depends_on?: Record<string, { condition?: string }> | string[];
  networks?: Record<string, unknown> | string[];
  ports?: unknown[];
  container_name?: string;
}
interface Compose {
  services: Record<string, Service>;
}

/** The app services, each with the schema its main.ts parses its environment with. */
const APPS: Record<string, z.ZodObject> = {
  gateway: GatewayEnv,
  upload: UploadEnv,
  metadata: MetadataEnv,
  convert: ConvertEnv,
};
const INFRA = ["rabbitmq", "redis", "minio"];
/** What @aws-sdk/client-s3 reads besides the S3_* settings (docs/ENVIRONMENT.md). */
/** Services that may read the whole environment, and why: ioredis's `debug` dependency enumerates it. */
const UNRESTRICTED_ENV = new Set(["metadata"]);
/**
 * Services that may reach any host, and why: Upload imports videos from public URLs and Metadata delivers webhooks
 * to them, which Deno's flags cannot describe; adapters/public_http.ts refuses private, loopback and other
 * non-public addresses at connect time.
 */
const UNRESTRICTED_NET = new Set(["upload", "metadata"]);
const DEFAULT_PORTS: Record<string, string> = {
  "http:": "80",
  "https:": "443",
  "amqp:": "5672",
  "amqps:": "5671",
  "redis:": "6379",
  "rediss:": "6379",
};
const SHORT_FLAGS: Record<string, string> = {
  "-A": "--allow-all",
  "-R": "--allow-read",
  "-W": "--allow-write",
  "-N": "--allow-net",
  "-E": "--allow-env",
  "-S": "--allow-sys",
  "-P": "--permission-set",
};
const ALLOWED_GRANTS = new Set([
  "--allow-net",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
  "--allow-read",
  "--allow-write",
]);

/** A deno command line: its flags (`undefined` value = bare flag, i.e. unrestricted) and its script. */
function parseDenoCommand(command: string[]): { flags: Map<string, string[] | undefined>; script?: string } {
  const flags = new Map<string, string[] | undefined>();
  let script: string | undefined;
  for (const arg of command.slice(2)) {
    if (!arg.startsWith("-")) {
      script = arg;
      break;
    }
    const eq = arg.indexOf("=");
    const raw = eq === -1 ? arg : arg.slice(0, eq);
    const name = SHORT_FLAGS[raw] ?? raw;
    flags.set(name, eq === -1 ? undefined : arg.slice(eq + 1).split(",").filter((v) => v !== ""));
  }
  return { flags, script };
}

const asList = (value: string[] | string | undefined): string[] =>
  value === undefined ? [] : typeof value === "string" ? [value] : value;
const keysOf = (value: Record<string, unknown> | string[] | undefined): string[] =>
  value === undefined ? [] : Array.isArray(value) ? value : Object.keys(value);
const envAllows = (allowed: string[], name: string) =>
  allowed.some((entry) => entry.endsWith("*") ? name.startsWith(entry.slice(0, -1)) : entry === name);
const sameSet = (a: Iterable<string>, b: Iterable<string>) => {
  const [x, y] = [new Set(a), new Set(b)];
  return x.size === y.size && [...x].every((v) => y.has(v));
};
const show = (values: Iterable<string>) => [...values].sort().join(",");

/** The image the last stage of a Dockerfile is built FROM, with global ARG defaults filled in. */
function finalStage(dockerfile: string): { image: string; body: string } {
  const args: Record<string, string> = {};
  let image = "";
  let body = "";
  for (const line of dockerfile.split("\n")) {
    const arg = line.match(/^\s*ARG\s+(\w+)=(\S+)/i);
    if (arg && !image) args[arg[1]] = arg[2];
    const from = line.match(/^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)/i);
    if (from) {
      image = from[1].replace(/\$\{?(\w+)\}?/g, (_, name: string) => args[name] ?? "");
      body = "";
    } else body += line + "\n";
  }
  return { image, body };
}

/** Every way `config` (and the Dockerfiles it builds, by path) breaks the rules this file states; [] if none. */
function composeProblems(config: Compose, dockerfiles: Record<string, string>): string[] {
  const problems: string[] = [];
  const services = config.services ?? {};
  for (const name of [...INFRA, ...Object.keys(APPS)]) {
    if (!services[name]) problems.push(`service "${name}" is missing`);
  }
  const text = (s: Service | undefined) => JSON.stringify(s?.healthcheck?.test ?? "");
  if (!/rabbitmq-diagnostics[^"]*ping/.test(text(services.rabbitmq))) {
    problems.push(
      `rabbitmq: healthcheck must run "rabbitmq-diagnostics -q ping", not ${text(services.rabbitmq)}`,
    );
  }
  if (!/redis-cli[^"]*ping/.test(text(services.redis))) {
    problems.push(`redis: healthcheck must run "redis-cli ping", not ${text(services.redis)}`);
  }
  if (!asList(services.redis?.command).join(" ").includes("--appendonly yes")) {
    problems.push(`redis: command must include "--appendonly yes"`);
  }
  if (!services.minio?.healthcheck?.test || services.minio.healthcheck.disable) {
    problems.push("minio: has no healthcheck");
  }

  for (const [name, schema] of Object.entries(APPS)) {
    const service = services[name];
    if (!service) continue;
    const say = (message: string) => problems.push(`${name}: ${message}`);
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(service.environment ?? {})) {
      if (value !== null) env[key] = String(value);
    }
    try {
      parseEnv(schema, env);
    } catch (error) {
      say(`its environment does not parse with shared/config.ts: ${(error as Error).message}`);
    }
    if (env.HOST !== "0.0.0.0") say(`HOST must be 0.0.0.0 inside a container, not ${env.HOST}`);
    const listen = `${env.HOST}:${env.PORT}`;

    // The command and its permissions.
    const command = asList(service.command);
    if (command[0] !== "deno" || command[1] !== "run") {
      say(`command must be "deno run ...", not ${command.join(" ")}`);
    }
    const { flags, script } = parseDenoCommand(command);
    if (script !== `${name}/main.ts`) say(`runs ${script}, not ${name}/main.ts`);
    for (const flag of flags.keys()) {
      if (
        (flag.startsWith("--allow-") && !ALLOWED_GRANTS.has(flag)) ||
        /^--(permission-set|unsafely)/.test(flag)
      ) {
        say(`must not use ${flag}`);
      }
    }
    for (const [flag, values] of flags) {
      if (
        ALLOWED_GRANTS.has(flag) && values === undefined &&
        !(flag === "--allow-env" && UNRESTRICTED_ENV.has(name)) &&
        !(flag === "--allow-net" && UNRESTRICTED_NET.has(name))
      ) {
        say(`${flag} must list what it allows, not be bare (unrestricted)`);
      }
    }

    const expectedNet = new Set([listen]);
    for (const [key, value] of Object.entries(env)) {
      if (!/(_URL|_ENDPOINT)$/.test(key) || key === "S3_PUBLIC_ENDPOINT") continue;
      try {
        const url = new URL(value);
        expectedNet.add(`${url.hostname}:${url.port || DEFAULT_PORTS[url.protocol]}`);
      } catch { /* parseEnv reported it */ }
    }
    const net = flags.get("--allow-net") ?? [];
    if (UNRESTRICTED_NET.has(name)) {
      if (!flags.has("--allow-net") || net.length > 0) {
        say("--allow-net must be bare: it imports from any public host");
      }
    } else if (!sameSet(net, expectedNet)) {
      say(
        `--allow-net=${show(net)} must be exactly its listen address and the hosts its variables name: ${
          show(expectedNet)
        }`,
      );
    }

    const envGrant = flags.get("--allow-env");
    const usesS3 = Object.keys(S3Env.shape).every((key) => key in schema.shape);
    // Convert reads PATH to find ffmpeg and ffprobe (and hands it to them).
    const needed = [
      ...Object.keys(schema.shape),
      ...(usesS3 ? AWS_ENV : []),
      ...(name === "convert" ? ["PATH"] : []),
    ];
    if (!flags.has("--allow-env")) say("has no --allow-env, so it cannot read its configuration");
    else if (envGrant !== undefined) {
      for (const key of new Set([...needed, ...Object.keys(env)])) {
        if (!envAllows(envGrant, key)) say(`--allow-env does not allow ${key}, which it reads or is given`);
      }
      for (const entry of envGrant) {
        if (!needed.includes(entry)) say(`--allow-env allows ${entry}, which it does not read`);
      }
    }
    const sys = flags.get("--allow-sys");
    if (usesS3 ? !(sys && sameSet(sys, ["osRelease"])) : flags.has("--allow-sys")) {
      say(
        `--allow-sys must be ${usesS3 ? "exactly osRelease (the S3 SDK)" : "absent"}, not ${
          sys ?? "bare/absent"
        }`,
      );
    }
    const run = flags.get("--allow-run");
    if (name === "convert") {
      // ff_guard runs ffmpeg/ffprobe, and nothing else, under setpriv's parent-death signal (convert/bin/ff_guard);
      // setpriv itself could start any program.
      if (!run || !sameSet(run, ["ffmpeg", "ffprobe", "/app/convert/bin/ff_guard"])) {
        say(`--allow-run must be exactly ffmpeg,ffprobe,/app/convert/bin/ff_guard, not ${run}`);
      }
      for (const flag of ["--allow-read", "--allow-write"]) {
        const paths = flags.get(flag);
        if (!env.WORK_DIR || !paths || !sameSet(paths, [env.WORK_DIR])) {
          say(`${flag} must be exactly its WORK_DIR (${env.WORK_DIR}), not ${paths}`);
        }
      }
    } else {
      for (const flag of ["--allow-run", "--allow-read", "--allow-write"]) {
        if (flags.has(flag)) say(`must not have ${flag} (only convert runs programs and touches files)`);
      }
    }

    // Healthcheck on its own port, in a process that may reach only that address.
    const test = asList(service.healthcheck?.test);
    const healthUrl = `http://127.0.0.1:${env.PORT}/healthz`;
    if (!test.length || service.healthcheck?.disable) say("has no healthcheck");
    else if (!/^CMD(-SHELL)?$/.test(test[0]) || !test.join(" ").includes(healthUrl)) {
      say(`healthcheck must GET ${healthUrl}: ${test.join(" ")}`);
    } else if (test[1] === "deno") {
      const check = parseDenoCommand(test.slice(1));
      const grants = [...check.flags.keys()].filter((flag) => flag.startsWith("--allow-"));
      if (
        test[2] !== "run" || grants.join() !== "--allow-net" ||
        check.flags.get("--allow-net")?.join() !== `127.0.0.1:${env.PORT}`
      ) {
        say(
          `healthcheck must be "deno run --allow-net=127.0.0.1:${env.PORT} ..." (deno eval allows everything)`,
        );
      }
    }

    // It starts after, and shares a network with, everything it talks to.
    const dependsOn = service.depends_on ?? {};
    const networks = new Set(keysOf(service.networks));
    for (const hostPort of expectedNet) {
      const host = hostPort.split(":")[0];
      if (hostPort === listen) continue;
      const condition = Array.isArray(dependsOn) ? undefined : dependsOn[host]?.condition;
      if (condition !== "service_healthy") say(`must depend on ${host} with condition service_healthy`);
      if (!keysOf(services[host]?.networks).some((n) => networks.has(n))) {
        say(`shares no network with ${host}`);
      }
    }
    if (!Array.isArray(dependsOn)) {
      for (const [other, { condition }] of Object.entries(dependsOn)) {
        if (condition !== "service_healthy") {
          say(`depends on ${other} with ${condition}, not service_healthy`);
        }
      }
    }

    // Ports, scaling, images.
    const ports = service.ports ?? [];
    if (name === "gateway") {
      if (!JSON.stringify(ports).match(/"target":8080\b|:8080(\/tcp)?"/)) say("must publish port 8080");
    } else if (ports.length) say(`must not publish a host port: ${JSON.stringify(ports)}`);
    if (name === "convert" && service.container_name) say("must not set container_name (it is scaled)");
    const wantedDockerfile = name === "convert" ? "docker/convert.Dockerfile" : "docker/deno.Dockerfile";
    if (service.build?.dockerfile !== wantedDockerfile) {
      say(`must build from ${wantedDockerfile}, not ${service.build?.dockerfile}`);
    } else {
      const dockerfile = dockerfiles[wantedDockerfile] ?? "";
      const { image, body } = finalStage(dockerfile);
      if (!dockerfile.includes(`${name}/main.ts`)) say(`${wantedDockerfile} does not cache ${name}/main.ts`);
      if (!/deno install --frozen/.test(dockerfile)) {
        say(`${wantedDockerfile} must run "deno install --frozen"`);
      }
      const user = [...body.matchAll(/^\s*USER\s+(\S+)/gim)].at(-1)?.[1];
      if (!user || /^(root|0)(:|$)/.test(user)) {
        say(`${wantedDockerfile} must run as a non-root USER, not ${user}`);
      }
      if (name === "convert") {
        if (!/ffmpeg/i.test(image)) {
          say(`${wantedDockerfile} must be built FROM an FFmpeg image, not "${image}"`);
        }
        if (!/^\s*COPY\s+--from=\S+\s+\/deno\s/m.test(body)) {
          say(`${wantedDockerfile} must COPY the deno binary in`);
        }
        if (!/^\s*ENTRYPOINT\s+\[\s*\]/m.test(body)) {
          say(`${wantedDockerfile} must reset the ffmpeg ENTRYPOINT`);
        }
      } else if (!image.startsWith("denoland/deno:")) {
        say(`${wantedDockerfile} must be built FROM a denoland/deno image, not "${image}"`);
      }
    }
  }
  // The public gateway cannot even reach the data stores.
  const gatewayNetworks = new Set(keysOf(services.gateway?.networks));
  for (const store of INFRA) {
    if (keysOf(services[store]?.networks).some((n) => gatewayNetworks.has(n))) {
      problems.push(`gateway: must not share a network with ${store}`);
    }
  }

  // Credentials: the committed defaults are dev-only, and each server and its clients agree on them.
  const upload = services.upload?.environment ?? {};
  const metadata = services.metadata?.environment ?? {};
  const secrets: Record<string, string> = {};
  try {
    secrets.S3_SECRET_ACCESS_KEY = String(upload.S3_SECRET_ACCESS_KEY);
    secrets["RABBITMQ_URL password"] = new URL(String(upload.RABBITMQ_URL)).password;
    secrets["REDIS_URL password"] = new URL(String(metadata.REDIS_URL)).password;
  } catch (error) {
    problems.push(`credentials: ${(error as Error).message}`);
  }
  for (const [what, value] of Object.entries(secrets)) {
    if (!value.includes("dev")) {
      problems.push(`credentials: the default ${what} must be marked dev-only ("dev")`);
    }
  }
  const minioEnv = services.minio?.environment ?? {};
  if (minioEnv.MINIO_ROOT_PASSWORD !== upload.S3_SECRET_ACCESS_KEY) {
    problems.push("credentials: minio's MINIO_ROOT_PASSWORD differs from the services' S3_SECRET_ACCESS_KEY");
  }
  if (minioEnv.MINIO_ROOT_USER !== upload.S3_ACCESS_KEY_ID) {
    problems.push("credentials: minio's MINIO_ROOT_USER differs from the services' S3_ACCESS_KEY_ID");
  }
  try {
    const amqp = new URL(String(upload.RABBITMQ_URL));
    const rabbitEnv = services.rabbitmq?.environment ?? {};
    if (
      amqp.username !== rabbitEnv.RABBITMQ_DEFAULT_USER || amqp.password !== rabbitEnv.RABBITMQ_DEFAULT_PASS
    ) {
      problems.push(
        "credentials: RABBITMQ_URL's user/password differ from rabbitmq's RABBITMQ_DEFAULT_USER/PASS",
      );
    }
    const redisCommand = asList(services.redis?.command);
    const requirepass = redisCommand[redisCommand.indexOf("--requirepass") + 1];
    if (
      redisCommand.includes("--requirepass") && new URL(String(metadata.REDIS_URL)).password !== requirepass
    ) {
      problems.push("credentials: REDIS_URL's password differs from redis's --requirepass");
    }
  } catch { /* reported above */ }
  return problems;
}

async function run(command: string, args: string[], input?: string): Promise<string> {
  let child;
  try {
    child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      stdin: input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root" },
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && command === "docker-compose") {
      throw new Error(
        "docker-compose is not installed: install docker-compose (apt-get install docker-compose)",
      );
    }
    throw error;
  }
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  if (code !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed (${code}):\n${decoder.decode(stderr)}`);
  }
  return decoder.decode(stdout);
}

/** The Python docker-compose v1 runs on (from its #! line): it always has PyYAML. */
async function composePython(): Promise<string> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const head = (await Deno.readTextFile(`${dir}/docker-compose`)).slice(0, 200);
      const shebang = head.match(/^#!\s*(\S+)(?:\s+(\S+))?/);
      if (shebang) return shebang[1].endsWith("/env") && shebang[2] ? shebang[2] : shebang[1];
    } catch { /* not here */ }
  }
  return "python3";
}

/** compose.yaml as docker-compose resolves it, with only the committed defaults (no .env, no shell variables). */
async function loadCompose(): Promise<Compose> {
  const noEnvFile = await Deno.makeTempFile({ prefix: "vmp3-compose-", suffix: ".env" });
  let yaml;
  try {
    yaml = await run("docker-compose", ["--env-file", noEnvFile, "-f", "compose.yaml", "config"]);
  } finally {
    await Deno.remove(noEnvFile);
  }
  const python = await composePython();
  const json = await run(python, [
    "-c",
    "import json,sys,yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
  ], yaml);
  return JSON.parse(json);
}

async function loadDockerfiles(config: Compose): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const service of Object.values(config.services)) {
    const path = service.build?.dockerfile;
    if (path && !(path in files)) {
      files[path] = await Deno.readTextFile(`${service.build?.context ?? ROOT}/${path}`);
    }
  }
  return files;
}

Deno.test("compose.yaml is valid for docker-compose and describes every service with a healthcheck", async () => {
  const config = await loadCompose();
  const problems = composeProblems(config, await loadDockerfiles(config));
  if (problems.length) {
    throw new Error(`compose.yaml has ${problems.length} problem(s):\n- ${problems.join("\n- ")}`);
  }
  // Spot checks of the literal values the rules above derive.
  const gateway = parseDenoCommand(asList(config.services.gateway.command));
  if (gateway.flags.get("--allow-net")?.join() !== "0.0.0.0:8080,upload:8081,metadata:8082") {
    throw new Error(`gateway --allow-net is ${gateway.flags.get("--allow-net")}`);
  }
  const convert = parseDenoCommand(asList(config.services.convert.command));
  if (convert.flags.get("--allow-run")?.join() !== "ffmpeg,ffprobe,/app/convert/bin/ff_guard") {
    throw new Error(`convert --allow-run is ${convert.flags.get("--allow-run")}`);
  }
  if (!/^FROM\s+\S*ffmpeg\S*/im.test(await Deno.readTextFile(`${ROOT}docker/convert.Dockerfile`))) {
    throw new Error("docker/convert.Dockerfile has no FROM line naming an ffmpeg image");
  }
});

Deno.test("compose checks report a gateway allowed to read files, convert allowed any program, and other breakage", async () => {
  const config = await loadCompose();
  const dockerfiles = await loadDockerfiles(config);
  const cases: [string, (c: Compose, d: Record<string, string>) => void, RegExp][] = [
    [
      "gateway gets --allow-read",
      (c) => (c.services.gateway.command as string[]).splice(2, 0, "--allow-read"),
      /^gateway: must not have --allow-read/,
    ],
    [
      "gateway gets -A",
      (c) => (c.services.gateway.command as string[]).splice(2, 0, "-A"),
      /^gateway: must not use --allow-all/,
    ],
    [
      "upload gets --allow-run=ffmpeg",
      (c) => (c.services.upload.command as string[]).splice(2, 0, "--allow-run=ffmpeg"),
      /^upload: must not have --allow-run/,
    ],
    [
      "convert may run setpriv (which starts anything)",
      (c) => {
        const command = c.services.convert.command as string[];
        const at = command.indexOf("--allow-run=ffmpeg,ffprobe,/app/convert/bin/ff_guard");
        if (at < 0) throw new Error("convert's --allow-run was not found to break");
        command[at] = "--allow-run=ffmpeg,ffprobe,/app/convert/bin/ff_guard,setpriv";
      },
      /^convert: --allow-run must be exactly ffmpeg,ffprobe,\/app\/convert\/bin\/ff_guard/,
    ],
    [
      "metadata loses its healthcheck",
      (c) => delete c.services.metadata.healthcheck,
      /^metadata: has no healthcheck/,
    ],
    [
      "the gateway can reach redis",
      (c) => (c.services.gateway.networks = { edge: null, data: null }),
      /^gateway: must not share a network with redis/,
    ],
    [
      "convert's RABBITMQ_URL names another host",
      (c) => (c.services.convert.environment!.RABBITMQ_URL = "amqp://u:dev@rabbit:5672"),
      /^convert: --allow-net=.* must be exactly/,
    ],
    ["convert cannot read S3_BUCKET", (c) => {
      const command = c.services.convert.command as string[];
      const i = command.findIndex((a) => a.startsWith("--allow-env="));
      command[i] = command[i].replace(",S3_BUCKET,", ",");
    }, /^convert: --allow-env does not allow S3_BUCKET/],
    [
      "gateway lacks METADATA_URL",
      (c) => delete c.services.gateway.environment!.METADATA_URL,
      /^gateway: its environment does not parse.*METADATA_URL/,
    ],
    [
      "convert is built on plain Ubuntu",
      (
        _,
        d,
      ) => (d["docker/convert.Dockerfile"] = d["docker/convert.Dockerfile"].replace(
        /^FROM jrottenberg\S+/m,
        "FROM ubuntu:24.04",
      )),
      /^convert: docker\/convert.Dockerfile must be built FROM an FFmpeg image/,
    ],
    ["redis is gone", (c) => delete c.services.redis, /^service "redis" is missing/],
  ];
  for (const [what, mutate, expected] of cases) {
    const copy: Compose = structuredClone(config);
    const files = { ...dockerfiles };
    mutate(copy, files);
    const problems = composeProblems(copy, files);
    if (!problems.some((p) => expected.test(p))) {
      throw new Error(
        `when ${what}, expected a problem matching ${expected}, got:\n${problems.join("\n") || "(none)"}`,
      );
    }
  }
});
