import assert from "node:assert/strict";
import { parseKeyToken, sha256Hex } from "@vmp3/shared";
import { createKvKeyStore } from "@vmp3/adapters/kv-keys";
import { createRedisClient } from "@vmp3/adapters/redis";
import { createRedisKeyStore } from "@vmp3/adapters/redis-keys";
import { runKeysCommand } from "./keys_cli.ts";

Deno.test("keys create prints a token once and stores only its hash; list shows it; revoke removes it", async () => {
  const kv = await Deno.openKv(":memory:");
  const keys = createKvKeyStore(kv);
  const created = await runKeysCommand(keys, ["create", "--name", "alice", "--concurrent-jobs", "3"]);
  assert.equal(created.code, 0);
  const token = created.out.map((line) => line.trim()).find((line) => line.startsWith("vmp3_"));
  const parsed = parseKeyToken(token ?? "");
  assert.ok(parsed, `no token in ${created.out.join("\n")}`);
  const stored = await keys.get(parsed.id);
  assert.equal(stored?.name, "alice");
  assert.equal(stored?.limits.concurrentJobs, 3);
  assert.equal(stored?.secretSha256, await sha256Hex(parsed.secret));
  assert.equal(JSON.stringify(stored).includes(parsed.secret), false);

  const listed = await runKeysCommand(keys, ["list"]);
  assert.match(listed.out.join("\n"), new RegExp(`${parsed.id}  alice  600/min  3 jobs at once`));
  assert.equal((await runKeysCommand(keys, ["revoke", parsed.id])).code, 0);
  assert.equal(await keys.get(parsed.id), null);
  assert.equal((await runKeysCommand(keys, ["revoke", parsed.id])).code, 1);
  kv.close();
});

Deno.test("keys refuses bad arguments with a message and a non-zero code", async () => {
  const kv = await Deno.openKv(":memory:");
  const keys = createKvKeyStore(kv);
  for (
    const args of [
      ["create"],
      ["create", "--name", "x", "--concurrent-jobs", "0"],
      ["create", "--name", "x", "--bytes-per-day", "1e9"],
      ["create", "--name", "x", "--webhook-url", "ftp://x"],
      ["create", "--name", "x", "--no-such-flag"],
    ]
  ) {
    const result = await runKeysCommand(keys, args);
    assert.equal(result.code, 1, args.join(" "));
    assert.match(result.out[0], /^keys: /);
  }
  assert.equal((await runKeysCommand(keys, [])).code, 2);
  assert.deepEqual(await keys.list(), []);
  kv.close();
});

Deno.test({
  name: "keys create with a webhook URL makes a Standard Webhooks secret; works on real Redis",
  ignore: !Deno.env.get("TEST_REDIS_URL"),
  async fn() {
    const redis = createRedisClient(Deno.env.get("TEST_REDIS_URL")!);
    const keys = createRedisKeyStore(redis, { prefix: `keys-cli-${crypto.randomUUID()}:` });
    const created = await runKeysCommand(keys, [
      "create",
      "--name",
      "hooks",
      "--webhook-url",
      "https://h.example/x",
    ]);
    assert.equal(created.code, 0);
    const [key] = await keys.list();
    assert.equal(key.webhookUrl, "https://h.example/x");
    assert.match(key.webhookSecret ?? "", /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.ok(created.out.some((line) => line.includes(key.webhookSecret!)));
    redis.disconnect();
  },
});
