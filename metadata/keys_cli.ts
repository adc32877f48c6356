/**
 * The admin command for API keys. It talks to the key store directly: Redis when REDIS_URL is set (real mode),
 * else the embedded mode's Deno KV file in DATA_DIR (default .data). A new key's token is printed once, never
 * stored: only its sha256 is.
 *
 *   deno task keys create --name alice [--requests-per-minute 600] [--concurrent-jobs 10]
 *                         [--bytes-per-day 53687091200] [--webhook-url https://...]
 *   deno task keys list
 *   deno task keys revoke <id>
 * @module
 */
import { parseArgs } from "node:util";
import {
  ApiKey,
  DEFAULT_KEY_LIMITS,
  type KeyStore,
  newKeyToken,
  newWebhookSecret,
  sha256Hex,
} from "@vmp3/shared";
import { createRedisClient } from "@vmp3/adapters/redis";
import { createRedisKeyStore } from "@vmp3/adapters/redis-keys";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";

/** What one command printed, and its exit code. */
export interface CommandResult {
  code: number;
  out: string[];
}

const USAGE = [
  "usage: deno task keys create --name NAME [--requests-per-minute N] [--concurrent-jobs N] [--bytes-per-day N]",
  "                             [--webhook-url URL]",
  "       deno task keys list",
  "       deno task keys revoke ID",
];

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,15}$/.test(value) || Number(value) < 1) {
    throw new Error(`--${name} must be a whole number above 0`);
  }
  return Number(value);
}

/** Runs one command (`args` as after `deno task keys`) against `keys`. */
export async function runKeysCommand(
  keys: KeyStore,
  args: string[],
  now = new Date(),
): Promise<CommandResult> {
  const [command, ...rest] = args;
  const out: string[] = [];
  try {
    switch (command) {
      case "create": {
        const { values } = parseArgs({
          args: rest,
          options: {
            name: { type: "string" },
            "requests-per-minute": { type: "string" },
            "concurrent-jobs": { type: "string" },
            "bytes-per-day": { type: "string" },
            "webhook-url": { type: "string" },
          },
        });
        if (!values.name) throw new Error("--name is required");
        const { id, secret, token } = newKeyToken();
        const webhookUrl = values["webhook-url"];
        const parsed = ApiKey.safeParse({
          id,
          name: values.name,
          secretSha256: await sha256Hex(secret),
          limits: {
            requestsPerMinute: positive(
              "requests-per-minute",
              values["requests-per-minute"],
              DEFAULT_KEY_LIMITS.requestsPerMinute,
            ),
            concurrentJobs: positive(
              "concurrent-jobs",
              values["concurrent-jobs"],
              DEFAULT_KEY_LIMITS.concurrentJobs,
            ),
            bytesPerDay: positive("bytes-per-day", values["bytes-per-day"], DEFAULT_KEY_LIMITS.bytesPerDay),
          },
          ...(webhookUrl ? { webhookUrl, webhookSecret: newWebhookSecret() } : {}),
          createdAt: now.toISOString(),
        });
        if (!parsed.success) throw new Error(parsed.error.issues.map((i) => i.message).join("; "));
        if (!(await keys.insert(parsed.data))) {
          throw new Error("A key with that id exists; run the command again");
        }
        out.push(`Created key ${id} (${values.name}). Its token, shown only now:`, "", `  ${token}`, "");
        if (parsed.data.webhookSecret) {
          out.push(`Its webhooks are signed with (Standard Webhooks): ${parsed.data.webhookSecret}`, "");
        }
        out.push("Use it as: Authorization: Bearer <token>");
        return { code: 0, out };
      }
      case "list": {
        for (const key of await keys.list()) {
          const { requestsPerMinute, concurrentJobs, bytesPerDay } = key.limits;
          out.push(
            `${key.id}  ${key.name}  ${requestsPerMinute}/min  ${concurrentJobs} jobs at once  ` +
              `${bytesPerDay} bytes/day  created ${key.createdAt}${
                key.webhookUrl ? `  webhook ${key.webhookUrl}` : ""
              }`,
          );
        }
        if (out.length === 0) out.push("No keys.");
        return { code: 0, out };
      }
      case "revoke": {
        const id = rest[0];
        if (!id || !(await keys.get(id))) throw new Error(`There is no key ${JSON.stringify(id ?? "")}`);
        await keys.remove(id);
        out.push(`Revoked key ${id}: its token no longer works.`);
        return { code: 0, out };
      }
      default:
        return { code: 2, out: USAGE };
    }
  } catch (error) {
    return { code: 1, out: [`keys: ${error instanceof Error ? error.message : String(error)}`] };
  }
}

if (import.meta.main) {
  const redisUrl = Deno.env.get("REDIS_URL");
  const dataDir = Deno.env.get("DATA_DIR") || ".data";
  let keys: KeyStore;
  let close: () => void;
  if (redisUrl) {
    const redis = createRedisClient(redisUrl);
    keys = createRedisKeyStore(redis);
    close = () => redis.disconnect();
  } else {
    await Deno.mkdir(dataDir, { recursive: true });
    const kv = await Deno.openKv(`${dataDir}/vmp3.kv`);
    keys = createKvKeyStore(kv);
    close = () => kv.close();
  }
  const { code, out } = await runKeysCommand(keys, Deno.args);
  (code === 0 ? console.log : console.error)(out.join("\n"));
  close();
  Deno.exit(code);
}
