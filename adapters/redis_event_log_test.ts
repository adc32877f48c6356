/** Tests of the Redis Streams event log against a real Redis (TEST_REDIS_URL, from scripts/test_servers.sh). */
import { createRedisClient } from "./redis_job_store.ts";
import { createRedisEventLog } from "./redis_event_log.ts";
import { testJobEventLog } from "./testing/event_log_contract.ts";

testJobEventLog("redis", () => {
  const url = Deno.env.get("TEST_REDIS_URL");
  if (!url) {
    throw new Error("TEST_REDIS_URL is not set: run through `bash scripts/test_servers.sh deno test -A`");
  }
  const redis = createRedisClient(url);
  // MAXLEN ~ trims whole stream nodes (100 entries each by default), so the bound is tested at 100.
  const log = createRedisEventLog(redis, {
    prefix: `test-${crypto.randomUUID()}:`,
    maxLen: 100,
    finalTtlSeconds: 1,
  });
  return Promise.resolve({
    log,
    maxLen: 100,
    finalTtlMs: 1000,
    close: () => {
      log.close();
      redis.disconnect();
    },
  });
});
