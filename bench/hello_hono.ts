/**
 * The reference of the status-read ratio (issue 6, figure 5): a bare Hono hello-world, served by `Deno.serve` in
 * its own process on 127.0.0.1:$PORT, as bench/throughput.ts starts it (with the Gateway's V8 flag).
 * @module
 */
import { Hono } from "hono";

const app = new Hono().get("/", (c) => c.json({ ok: true }));
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.env.get("PORT")), onListen: () => {} }, app.fetch);
console.log("listening");
