import assert from "node:assert/strict";
import { checkBytes, checkRate, checkTtl, gcraStep } from "./usage_rules.ts";

/** Runs `count` requests at one instant from no debt: the decisions. */
function burst(limit: number, windowMs: number, count: number) {
  let debt = 0;
  const decisions = [];
  for (let i = 0; i < count; i++) {
    const step = gcraStep(debt, limit, windowMs);
    decisions.push(step.decision);
    if (step.debt !== null) debt = step.debt;
  }
  return decisions;
}

Deno.test("gcraStep allows exactly `limit` at once, whatever rounding window / limit needs", () => {
  for (
    const [limit, windowMs] of [[1, 1000], [3, 1000], [7, 60_000], [600, 60_000], [1000, 1000], [
      9973,
      86_400_000,
    ]]
  ) {
    const decisions = burst(limit, windowMs, limit + 2);
    const allowed = decisions.filter((d) => d.allowed);
    assert.equal(allowed.length, limit, `${limit} per ${windowMs} ms`);
    assert.deepEqual(allowed.map((d) => d.remaining), Array.from({ length: limit }, (_, i) => limit - 1 - i));
    assert.ok(decisions.every((d) => Number.isInteger(d.resetSeconds) && d.resetSeconds >= 1));
  }
});

Deno.test("gcraStep: an allowed request's reset is when the whole limit is back, a refused one's when the next is", () => {
  const [first, second, refused] = burst(2, 10_000, 3);
  assert.deepEqual(first, { allowed: true, limit: 2, remaining: 1, resetSeconds: 5 });
  assert.deepEqual(second, { allowed: true, limit: 2, remaining: 0, resetSeconds: 10 });
  assert.deepEqual(refused, { allowed: false, limit: 2, remaining: 0, resetSeconds: 5 });
  assert.equal(gcraStep(10_000, 2, 10_000).debt, null, "a refused request owes nothing more");
  assert.deepEqual(
    gcraStep(-5, 2, 10_000).decision.remaining,
    1,
    "a negative (overpaid) debt counts as none",
  );
  assert.equal(gcraStep(0, 1, 100).decision.resetSeconds, 1, "at least 1");
});

Deno.test("usage argument checks refuse what no store could honour", () => {
  assert.throws(() => checkRate(0, 60), RangeError);
  assert.throws(() => checkRate(2.5, 60), RangeError);
  assert.throws(() => checkRate(10, -1), RangeError);
  assert.throws(() => checkRate(10, Infinity), RangeError);
  checkRate(10, 0.5);
  assert.throws(() => checkBytes("2026-01-01T00", 1, 1), RangeError);
  assert.throws(() => checkBytes("2026-01-01", 1.5, 1), RangeError);
  assert.throws(() => checkBytes("2026-01-01", 1, -1), RangeError);
  checkBytes("2026-01-01", 0, 0);
  assert.throws(() => checkTtl(0), RangeError);
  assert.throws(() => checkTtl(1.5), RangeError);
  checkTtl(1);
});
