import { createKvEventLog } from "./kv_event_log.ts";
import { testJobEventLog } from "./testing/event_log_contract.ts";

testJobEventLog("KV", async () => {
  const kv = await Deno.openKv(":memory:");
  return {
    log: createKvEventLog(kv, { maxLen: 100, finalTtlMs: 1000 }),
    maxLen: 100,
    finalTtlMs: 1000,
    close: () => kv.close(),
  };
});
