/**
 * How each real-mode service is started: its entry point and the Deno permission flags limited to its own
 * resources (its listen address, the hosts it calls, its variables, and for Convert alone ffmpeg and its work
 * folder). Used by `deno task start:<service>` and by the real-mode end-to-end tests.
 * @module
 */
import { ConvertEnv, GatewayEnv, MetadataEnv, parseEnv, S3Env, UploadEnv } from "@vmp3/shared";

/** The four services. */
export type ServiceName = "gateway" | "upload" | "metadata" | "convert";

const DEFAULT_PORTS: Record<string, string> = {
  "amqp:": "5672",
  "amqps:": "5671",
  "redis:": "6379",
  "rediss:": "6379",
  "http:": "80",
  "https:": "443",
};

function hostOf(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || DEFAULT_PORTS[u.protocol]}`;
}

/** What the AWS SDK reads at start (it tries ~/.aws quietly and carries on without it). */
export const AWS_ENV = ["AWS_*", "_X_AMZN_TRACE_ID", "HOME", "USERPROFILE", "HOMEPATH", "HOMEDRIVE"];

/** The launcher Convert starts ffmpeg and ffprobe through (convert/ffmpeg_check.ts). */
const FF_GUARD = decodeURIComponent(new URL("../convert/bin/ff_guard", import.meta.url).pathname);

/** Lets the S3 adapter free spent request chunks after each part (see adapters/s3_blob_store.ts). */
const GC_FLAG = "--v8-flags=--expose-gc";

function names(schema: { shape: object }): string[] {
  return Object.keys(schema.shape);
}

/** The `deno run` arguments that start `service` with the configuration in `env`. */
export function serviceArgs(service: ServiceName, env: Record<string, string | undefined>): string[] {
  const entry = `${service}/main.ts`;
  switch (service) {
    case "gateway": {
      const c = parseEnv(GatewayEnv, env);
      return [
        `--allow-net=${c.HOST}:${c.PORT},${hostOf(c.UPLOAD_URL)},${hostOf(c.METADATA_URL)}`,
        `--allow-env=${names(GatewayEnv).join(",")}`,
        GC_FLAG,
        entry,
      ];
    }
    case "upload": {
      parseEnv(UploadEnv, env); // a bad configuration stops here, naming the variable
      return [
        // Unrestricted: import from URL fetches videos from any public host, on any port, and resolves their names
        // (the system's DNS servers). Deno cannot say "public addresses only", so adapters/public_http.ts does:
        // it refuses private, loopback, link-local and other non-public addresses at connect time.
        "--allow-net",
        `--allow-env=${[...names(UploadEnv), ...AWS_ENV].join(",")}`,
        "--allow-sys=osRelease",
        GC_FLAG,
        entry,
      ];
    }
    case "metadata": {
      parseEnv(MetadataEnv, env); // a bad configuration stops here, naming the variable
      return [
        // Unrestricted: webhooks go to any URL a job or an API key names (the SSRF-guarded client of
        // adapters/public_http.ts is to keep them off private addresses, as for imports).
        "--allow-net",
        // ioredis's `debug` dependency enumerates the whole environment at import.
        "--allow-env",
        "--allow-sys=osRelease",
        entry,
      ];
    }
    case "convert": {
      const c = parseEnv(ConvertEnv, env);
      return [
        `--allow-net=${c.HOST}:${c.PORT},${hostOf(c.RABBITMQ_URL)},${s3Hosts(c)}`,
        // PATH: to find ffmpeg and ffprobe where they are installed (e.g. /opt/homebrew/bin), for the child too.
        `--allow-env=${[...names(ConvertEnv), ...AWS_ENV, "PATH"].join(",")}`,
        "--allow-sys=osRelease",
        // ff_guard runs ffmpeg/ffprobe (only) under setpriv's parent-death signal, so a killed worker leaves no
        // ffmpeg running; setpriv itself is not allowed, as it could start anything.
        `--allow-run=${c.FFMPEG_PATH},${c.FFPROBE_PATH},${FF_GUARD}`,
        `--allow-read=${c.WORK_DIR}`,
        `--allow-write=${c.WORK_DIR}`,
        GC_FLAG,
        entry,
      ];
    }
  }
}

const SCHEMAS = { gateway: GatewayEnv, upload: UploadEnv, metadata: MetadataEnv, convert: ConvertEnv };

/** The part of `env` that `service` reads (its configuration, plus what the runtime and the AWS SDK need). */
export function serviceEnv(
  service: ServiceName,
  env: Record<string, string | undefined>,
): Record<string, string> {
  const wanted = new Set([...names(SCHEMAS[service]), "PATH", "HOME", "DENO_DIR", "TMPDIR", "TZ", "LANG"]);
  const picked: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (
      value !== undefined &&
      (wanted.has(key) || (key.startsWith("AWS_") && service !== "gateway"))
    ) {
      picked[key] = value;
    }
  }
  return picked;
}

function s3Hosts(c: S3Env): string {
  if (!c.S3_ENDPOINT) {
    return `${c.S3_BUCKET}.s3.${c.S3_REGION}.amazonaws.com:443,s3.${c.S3_REGION}.amazonaws.com:443`;
  }
  return hostOf(c.S3_ENDPOINT);
}

if (import.meta.main) {
  const service = Deno.args[0] as ServiceName;
  if (!["gateway", "upload", "metadata", "convert"].includes(service)) {
    console.error("Usage: deno task start:<gateway|upload|metadata|convert>");
    Deno.exit(2);
  }
  const env = serviceEnv(service, Deno.env.toObject());
  const args = ["run", ...serviceArgs(service, env)];
  console.error(`deno ${args.join(" ")}`);
  // The service gets only its own variables: Metadata, whose --allow-env cannot be narrowed, never sees S3 keys.
  const child = new Deno.Command(Deno.execPath(), { args, env, clearEnv: true, stdin: "inherit" }).spawn();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => child.kill(signal));
  }
  Deno.exit((await child.status).code);
}
