// Small shared pieces: panels, badges with text and color (color is never
// the only signal), sparklines.
import type { ReactNode } from "react";

export function Panel({ title, children, actions, id }: { title: string; children: ReactNode; actions?: ReactNode; id?: string }) {
  const headingId = id ? `${id}-title` : undefined;
  return (
    <section aria-labelledby={headingId} className="rounded-lg border border-slate-800 bg-slate-900/60 p-3" id={id}>
      <div className="mb-2 flex items-center justify-between gap-2">
        <h2 id={headingId} className="text-sm font-semibold uppercase tracking-wide text-slate-300">{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

const TONES = {
  ok: "bg-emerald-900/60 text-emerald-200 border-emerald-700",
  warn: "bg-amber-900/60 text-amber-100 border-amber-600",
  bad: "bg-rose-900/70 text-rose-100 border-rose-600",
  info: "bg-sky-900/60 text-sky-100 border-sky-700",
  muted: "bg-slate-800 text-slate-200 border-slate-600",
} as const;

export type Tone = keyof typeof TONES;

const ICONS: Record<Tone, string> = { ok: "●", warn: "▲", bad: "✖", info: "◆", muted: "○" };

export function Badge({ tone, children, title }: { tone: Tone; children: ReactNode; title?: string }) {
  return (
    <span title={title} className={`inline-flex items-center gap-1 rounded border px-1.5 py-0.5 text-xs font-medium ${TONES[tone]}`}>
      <span aria-hidden="true">{ICONS[tone]}</span>
      {children}
    </span>
  );
}

export function Sparkline({ values, label, color = "#38bdf8" }: { values: number[]; label: string; color?: string }) {
  const w = 120;
  const h = 28;
  const pts = values.filter((v) => Number.isFinite(v));
  if (pts.length < 2) return <svg role="img" aria-label={`${label}: not enough data yet`} width={w} height={h} />;
  const min = Math.min(...pts);
  const max = Math.max(...pts);
  const span = max - min || 1;
  const step = w / (pts.length - 1);
  const d = pts.map((v, i) => `${i === 0 ? "M" : "L"}${(i * step).toFixed(1)},${(h - 2 - ((v - min) / span) * (h - 4)).toFixed(1)}`).join(" ");
  return (
    <svg role="img" aria-label={`${label} trend`} width={w} height={h} viewBox={`0 0 ${w} ${h}`}>
      <path d={d} fill="none" stroke={color} strokeWidth={1.5} />
    </svg>
  );
}
