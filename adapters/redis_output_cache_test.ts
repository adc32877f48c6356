/** Tests of the Redis output cache against a real Redis (TEST_REDIS_URL, from scripts/test_servers.sh). */
import { createRedisClient } from "./redis_job_store.ts";
import { createRedisOutputCache } from "./redis_output_cache.ts";
import { testOutputCache } from "./testing/output_cache_contract.ts";

testOutputCache("redis", () => {
  const url = Deno.env.get("TEST_REDIS_URL");
  if (!url) {
    throw new Error("TEST_REDIS_URL is not set: run through `bash scripts/test_servers.sh deno test -A`");
  }
  const redis = createRedisClient(url);
  const cache = createRedisOutputCache(redis, { prefix: `test-${crypto.randomUUID()}:` });
  return Promise.resolve({ cache, close: () => redis.disconnect() });
});
