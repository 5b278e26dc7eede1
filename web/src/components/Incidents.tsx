"use client";
import type { DashboardState } from "@/lib/types";
import { incidentFeed } from "@/lib/reducer";
import { enumLabel, formatTicks } from "@/lib/format";
import { Badge, Panel, type Tone } from "./ui";
import { IncidentSeverity } from "@/gen/common/v1/enums_pb";

function severityTone(s: IncidentSeverity): Tone {
  switch (s) {
    case IncidentSeverity.CRITICAL: return "bad";
    case IncidentSeverity.ERROR: return "bad";
    case IncidentSeverity.WARNING: return "warn";
    default: return "info";
  }
}

export default function Incidents({ state, filterTarget, onShowActions }: {
  state: DashboardState;
  filterTarget: string | null;
  onShowActions: (incidentId: string) => void;
}) {
  const all = incidentFeed(state);
  const list = filterTarget ? all.filter((i) => i.targetId === filterTarget || i.nodeId === filterTarget) : all;
  const actionsByIncident = new Map<string, number>();
  for (const a of Object.values(state.actions)) actionsByIncident.set(a.incidentId, (actionsByIncident.get(a.incidentId) ?? 0) + 1);
  return (
    <Panel title={`Incidents${filterTarget ? ` · ${filterTarget}` : ""}`} id="incidents">
      {list.length === 0 ? (
        <p className="text-sm text-slate-400">No incidents{filterTarget ? " for this target" : ""}.</p>
      ) : (
        <ol className="max-h-96 space-y-1 overflow-y-auto" aria-label="incident feed, newest first">
          {list.slice(0, 200).map((i) => {
            const end = i.resolved ? Number(i.resolvedAtTick) : state.tick;
            const duration = Math.max(0, end - Number(i.openedAtTick));
            const nActions = actionsByIncident.get(i.id) ?? 0;
            const sev = IncidentSeverity[i.severity] ?? "UNSPECIFIED";
            return (
              <li key={i.id} className="rounded border border-slate-800 p-2 text-sm" data-testid="incident" data-incident-id={i.id} data-resolved={i.resolved ? "true" : "false"}>
                <div className="flex flex-wrap items-center gap-2">
                  <Badge tone={severityTone(i.severity)}>{enumLabel(sev, "")}</Badge>
                  <Badge tone={i.resolved ? "ok" : "warn"}>{i.resolved ? "resolved" : "open"}</Badge>
                  <span className="font-medium">{i.title || i.ruleName}</span>
                </div>
                <p className="mt-1 text-xs text-slate-400">
                  rule <span className="font-mono">{i.ruleName}</span> · target <span className="font-mono">{i.targetId}</span> · opened at tick {String(i.openedAtTick)} · {i.resolved ? "lasted" : "open for"} {formatTicks(duration)}
                </p>
                {i.description && <p className="mt-0.5 text-xs text-slate-300">{i.description}</p>}
                {nActions > 0 && (
                  <button type="button" className="mt-1 text-xs text-sky-300 underline" onClick={() => onShowActions(i.id)}>
                    {nActions} related action{nActions === 1 ? "" : "s"}
                  </button>
                )}
              </li>
            );
          })}
        </ol>
      )}
    </Panel>
  );
}
