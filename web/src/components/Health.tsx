"use client";
// Nodes with the services placed on them, and the dependency graph of the
// selected service. Status is shown by color AND by text/icon.
import type { DashboardState, NodeView, ServiceView } from "@/lib/types";
import { enumLabel, formatPercent, formatLatency } from "@/lib/format";
import { Badge, Panel, type Tone } from "./ui";

export function serviceTone(s: ServiceView | undefined, openIncident: boolean): { tone: Tone; label: string } {
  if (!s) return { tone: "muted", label: "no data" };
  if (s.replicas === 0) return { tone: "bad", label: "down" };
  if (s.errorRate > 10 || s.p99LatencyMs > 2000) return { tone: "bad", label: "unhealthy" };
  if (s.errorRate > 5 || s.p99LatencyMs > 500 || s.cpuUsage > 85 || openIncident) return { tone: "warn", label: "degraded" };
  return { tone: "ok", label: "healthy" };
}

export function nodeTone(n: NodeView | undefined): { tone: Tone; label: string } {
  if (!n) return { tone: "muted", label: "no data" };
  const label = enumLabel(n.status, "NODE_STATUS_").toLowerCase();
  switch (n.status) {
    case "NODE_STATUS_READY": return { tone: n.cpuUsage > 85 ? "warn" : "ok", label: n.cpuUsage > 85 ? "ready, saturated" : label };
    case "NODE_STATUS_DEGRADED": return { tone: "warn", label };
    case "NODE_STATUS_DOWN": return { tone: "bad", label };
    case "NODE_STATUS_DRAINING":
    case "NODE_STATUS_DRAINED": return { tone: "info", label };
    default: return { tone: "muted", label: label === "—" ? "unknown" : label };
  }
}

export default function Health({ state, selected, onSelect }: {
  state: DashboardState;
  selected: string | null;
  onSelect: (id: string | null) => void;
}) {
  const openByTarget = new Set(Object.values(state.incidents).filter((i) => !i.resolved).map((i) => i.targetId));
  const topo = state.topology;
  const nodeIds = Array.from(new Set([...(topo?.nodes.map((n) => n.id) ?? []), ...Object.keys(state.nodes)])).sort();
  const placement = new Map<string, string[]>();
  for (const s of topo?.services ?? []) {
    for (const n of new Set(s.nodeIds)) placement.set(n, [...(placement.get(n) ?? []), s.id]);
  }
  const placed = new Set(Array.from(placement.values()).flat());
  const unplaced = Object.keys(state.services).filter((s) => !placed.has(s)).sort();
  const sel = selected ? topo?.services.find((s) => s.id === selected) : undefined;
  const callers = selected ? (topo?.services ?? []).filter((s) => s.dependsOn.includes(selected)).map((s) => s.id) : [];

  const serviceButton = (id: string) => {
    const s = state.services[id];
    const t = serviceTone(s, openByTarget.has(id));
    return (
      <li key={id}>
        <button
          type="button"
          onClick={() => onSelect(selected === id ? null : id)}
          aria-pressed={selected === id}
          className={`flex w-full items-center justify-between gap-2 rounded px-1.5 py-1 text-left text-xs hover:bg-slate-800 ${selected === id ? "bg-slate-800 ring-1 ring-sky-500" : ""}`}
          title={s ? `error ${formatPercent(s.errorRate)}, p99 ${formatLatency(s.p99LatencyMs)}, cpu ${formatPercent(s.cpuUsage)}, ${s.replicas} replicas` : "no data yet"}
        >
          <span className="truncate font-mono">{id}</span>
          <Badge tone={t.tone}>{t.label}</Badge>
        </button>
      </li>
    );
  };

  return (
    <Panel title="Health" id="health">
      <div className="grid grid-cols-1 gap-2 sm:grid-cols-2 xl:grid-cols-3">
        {nodeIds.map((nid) => {
          const n = state.nodes[nid];
          const t = nodeTone(n);
          return (
            <div key={nid} className={`rounded border p-2 ${selected === nid ? "border-sky-500" : "border-slate-700"}`}>
              <button type="button" className="mb-1 flex w-full items-center justify-between gap-2 text-left text-sm" onClick={() => onSelect(selected === nid ? null : nid)} aria-pressed={selected === nid}>
                <span className="font-mono font-semibold">{nid}</span>
                <Badge tone={t.tone}>{t.label}</Badge>
              </button>
              {n && <p className="mb-1 text-xs text-slate-400">cpu {formatPercent(n.cpuUsage)} · mem {formatPercent(n.memoryUsage)}</p>}
              <ul className="space-y-0.5" aria-label={`services on ${nid}`}>{(placement.get(nid) ?? []).sort().map(serviceButton)}</ul>
            </div>
          );
        })}
        {unplaced.length > 0 && (
          <div className="rounded border border-slate-700 p-2">
            <p className="mb-1 text-sm font-semibold">services{state.downsampled ? ` (showing ${unplaced.length} of ${state.totalServices})` : ""}</p>
            <ul className="space-y-0.5">{unplaced.slice(0, 200).map(serviceButton)}</ul>
          </div>
        )}
      </div>
      {sel && (
        <div className="mt-2 text-xs text-slate-300" aria-live="polite">
          <span className="font-semibold">{sel.id}</span> calls {sel.dependsOn.length ? sel.dependsOn.join(", ") : "nothing"}; called by {callers.length ? callers.join(", ") : "nobody"}; {sel.replicas}/{sel.maxReplicas} replicas.
        </div>
      )}
    </Panel>
  );
}
