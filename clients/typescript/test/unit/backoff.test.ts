import { describe, expect, it } from "vitest";
import { backoffCap, backoffDelay } from "../../src/backoff.js";

describe("backoff", () => {
  it("doubles the cap from 500 ms up to 10 s", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffCap(a))).toEqual([500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
  });

  it("jitters fully: the delay is anywhere from 0 to just under the cap", () => {
    expect(backoffDelay(3, {}, () => 0)).toBe(0);
    expect(backoffDelay(3, {}, () => 0.5)).toBe(2000);
    expect(backoffDelay(3, {}, () => 0.999999)).toBe(3999);
  });

  it("takes its own bounds and stays finite after a very long outage", () => {
    expect(backoffCap(2, { initialDelayMs: 100, maxDelayMs: 1000, factor: 3 })).toBe(900);
    expect(backoffCap(10_000)).toBe(10_000);
    expect(Number.isFinite(backoffDelay(1e9))).toBe(true);
  });
});
