import { createKvOutputCache } from "./kv_output_cache.ts";
import { testOutputCache } from "./testing/output_cache_contract.ts";

testOutputCache("KV", async () => {
  const kv = await Deno.openKv(":memory:");
  return { cache: createKvOutputCache(kv), close: () => kv.close() };
});
