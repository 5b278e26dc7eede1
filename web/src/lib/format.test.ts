import { describe, expect, it } from "vitest";
import { enumLabel, formatLatency, formatPercent, formatRate, formatSimTime, formatSpeed, formatTicks } from "./format";

describe("format", () => {
  it("labels enums", () => {
    expect(enumLabel("ACTION_TYPE_SCALE_UP", "ACTION_TYPE_")).toBe("Scale up");
    expect(enumLabel("NODE_STATUS_DOWN", "NODE_STATUS_")).toBe("Down");
    expect(enumLabel("", "X_")).toBe("—");
    expect(enumLabel(undefined, "X_")).toBe("—");
  });
  it("formats rates, percents, latency", () => {
    expect(formatRate(5)).toBe("5.0");
    expect(formatRate(512)).toBe("512");
    expect(formatRate(1234)).toBe("1.2k");
    expect(formatRate(45678)).toBe("46k");
    expect(formatRate(2_500_000)).toBe("2.5M");
    expect(formatRate(NaN)).toBe("—");
    expect(formatPercent(12.345)).toBe("12.3%");
    expect(formatPercent(0.05)).toBe("0.05%");
    expect(formatPercent(0)).toBe("0.0%");
    expect(formatLatency(4.2)).toBe("4.2 ms");
    expect(formatLatency(520)).toBe("520 ms");
    expect(formatLatency(1500)).toBe("1.50 s");
    expect(formatLatency(15000)).toBe("15.0 s");
  });
  it("formats ticks, time and speed", () => {
    expect(formatTicks(1)).toBe("1 tick");
    expect(formatTicks(3)).toBe("3 ticks");
    expect(formatSimTime(0)).toBe("—");
    expect(formatSimTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678))).toBe("2026-01-02 03:04:05 UTC");
    expect(formatSpeed(2, false)).toBe("2×");
    expect(formatSpeed(0.25, false)).toBe("0.25×");
    expect(formatSpeed(0, true)).toBe("max");
  });
});
