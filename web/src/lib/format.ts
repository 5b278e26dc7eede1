// Formatting for people: numbers with sensible precision, durations in
// ticks, enum names without their prefixes.

/** "ACTION_TYPE_SCALE_UP" → "Scale up". */
export function enumLabel(name: string | undefined | null, prefix: string): string {
  if (!name) return "—";
  const rest = name.startsWith(prefix) ? name.slice(prefix.length) : name;
  const words = rest.toLowerCase().split("_").filter(Boolean);
  if (words.length === 0) return "—";
  const first = words[0] ?? "";
  return [first.charAt(0).toUpperCase() + first.slice(1), ...words.slice(1)].join(" ");
}

/** Requests per second: 12, 1.2k, 3.4M. */
export function formatRate(v: number): string {
  if (!Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(a < 10 ? 1 : 0);
}

/** A percentage given in percent units (0..100). */
export function formatPercent(v: number): string {
  if (!Number.isFinite(v)) return "—";
  if (v !== 0 && Math.abs(v) < 0.1) return `${v.toFixed(2)}%`;
  return `${v.toFixed(1)}%`;
}

export function formatLatency(ms: number): string {
  if (!Number.isFinite(ms)) return "—";
  if (ms >= 10000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

/** A duration in ticks, e.g. "12 ticks", "1 tick". */
export function formatTicks(n: number): string {
  return `${n} tick${n === 1 ? "" : "s"}`;
}

/** Simulated time as an ISO-like UTC string without milliseconds. */
export function formatSimTime(unixMs: number): string {
  if (!unixMs) return "—";
  return new Date(unixMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** Ticks per second, or "max". */
export function formatSpeed(speed: number, max: boolean): string {
  if (max) return "max";
  return `${Number.isInteger(speed) ? speed : speed.toFixed(2)}×`;
}
