"use client";
// A time-series chart on uPlot (canvas; cheap enough for 10 ticks/s with
// many series). Incident and action markers are drawn as vertical lines on
// the tick axis.
import { useEffect, useRef } from "react";
import type uPlotType from "uplot";
import type { Marker, Series } from "@/lib/types";

export interface ChartSeries {
  key: string;
  label: string;
  color: string;
}

export default function Chart({ series, data, markers, title, height = 160 }: {
  series: ChartSeries[];
  data: Series;
  markers: Marker[];
  title: string;
  height?: number;
}) {
  const host = useRef<HTMLDivElement | null>(null);
  const plot = useRef<uPlotType | null>(null);
  const markersRef = useRef<Marker[]>(markers);
  markersRef.current = markers;
  const keys = series.map((s) => s.key).join(",");

  useEffect(() => {
    let disposed = false;
    let observer: ResizeObserver | null = null;
    void import("uplot").then(({ default: uPlot }) => {
      if (disposed || !host.current) return;
      const el = host.current;
      const opts: uPlotType.Options = {
        width: el.clientWidth || 400,
        height,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false } },
        axes: [
          { stroke: "#94a3b8", grid: { stroke: "#1e293b" }, label: "tick" },
          { stroke: "#94a3b8", grid: { stroke: "#1e293b" } },
        ],
        series: [{ label: "tick" }, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, points: { show: false } }))],
        hooks: {
          draw: [
            (u: uPlotType) => {
              const ctx = u.ctx;
              const [min, max] = [u.scales.x?.min ?? 0, u.scales.x?.max ?? 0];
              ctx.save();
              for (const m of markersRef.current) {
                if (m.tick < min || m.tick > max) continue;
                const x = u.valToPos(m.tick, "x", true);
                ctx.strokeStyle = m.kind === "incident" ? "rgba(244,63,94,0.7)" : "rgba(56,189,248,0.7)";
                ctx.setLineDash(m.kind === "incident" ? [] : [4, 3]);
                ctx.beginPath();
                ctx.moveTo(x, u.bbox.top);
                ctx.lineTo(x, u.bbox.top + u.bbox.height);
                ctx.stroke();
              }
              ctx.restore();
            },
          ],
        },
      };
      plot.current = new uPlot(opts, [[], ...series.map(() => [])] as uPlotType.AlignedData, el);
      observer = new ResizeObserver(() => plot.current?.setSize({ width: el.clientWidth || 400, height }));
      observer.observe(el);
    });
    return () => {
      disposed = true;
      observer?.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // The plot is rebuilt only when the set of series changes.
  }, [keys, height]);

  useEffect(() => {
    const p = plot.current;
    if (!p) return;
    p.setData([data.ticks, ...series.map((s) => data.values[s.key] ?? [])] as uPlotType.AlignedData);
  }, [data, series]);

  return (
    <figure className="w-full">
      <figcaption className="mb-1 text-xs text-slate-400">{title} (red: incident opened, dashed blue: action proposed)</figcaption>
      <div ref={host} className="w-full" role="img" aria-label={`${title} chart`} />
    </figure>
  );
}
