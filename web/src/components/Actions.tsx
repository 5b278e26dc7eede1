"use client";
// Pending actions with Approve / Reject (a rejection needs a reason), with
// keyboard shortcuts (a = approve, r = reject on the focused row) and
// optimistic updates that roll back when the call fails; and the history of
// decided actions with filters.
import { useState, type KeyboardEvent } from "react";
import type { Action } from "@/gen/ops/v1/actions_pb";
import { ActionStatus } from "@/gen/common/v1/enums_pb";
import type { DashboardState } from "@/lib/types";
import { actionHistory, pendingActions } from "@/lib/reducer";
import { enumLabel } from "@/lib/format";
import { Badge, Panel, type Tone } from "./ui";

export function statusName(s: ActionStatus): string {
  return `ACTION_STATUS_${ActionStatus[s] ?? "UNSPECIFIED"}`;
}

function statusTone(s: ActionStatus): Tone {
  switch (s) {
    case ActionStatus.PENDING: return "warn";
    case ActionStatus.APPROVED: return "info";
    case ActionStatus.EXECUTED: return "ok";
    case ActionStatus.FAILED: return "bad";
    case ActionStatus.REJECTED: return "bad";
    default: return "muted";
  }
}

function typeLabel(a: Action): string {
  return enumLabel(`ACTION_TYPE_${["UNSPECIFIED", "RESTART_SERVICE", "SCALE_UP", "SCALE_DOWN", "DRAIN_NODE", "REBALANCE_TRAFFIC"][a.actionType] ?? ""}`, "ACTION_TYPE_");
}

export interface ActionsProps {
  state: DashboardState;
  /** Status overrides from optimistic updates, by action id. */
  optimistic: Record<string, ActionStatus>;
  onApprove: (a: Action) => void;
  onReject: (a: Action, reason: string) => void;
  incidentFilter: string | null;
  onClearIncidentFilter: () => void;
  canMutate: boolean;
}

export default function Actions({ state, optimistic, onApprove, onReject, incidentFilter, onClearIncidentFilter, canMutate }: ActionsProps) {
  const [rejecting, setRejecting] = useState<string | null>(null);
  const [reason, setReason] = useState("");
  const [statusFilter, setStatusFilter] = useState<string>("all");
  const [targetFilter, setTargetFilter] = useState("");

  const pending = pendingActions(state).filter((a) => optimistic[a.id] === undefined);
  const decidedNow = pendingActions(state).filter((a) => optimistic[a.id] !== undefined);
  let history = [...decidedNow, ...actionHistory(state)];
  if (incidentFilter) history = history.filter((a) => a.incidentId === incidentFilter);
  if (statusFilter !== "all") history = history.filter((a) => statusName(optimistic[a.id] ?? a.status) === statusFilter);
  if (targetFilter) history = history.filter((a) => a.targetId.includes(targetFilter));

  const submitReject = (a: Action) => {
    if (!reason.trim()) return;
    onReject(a, reason.trim());
    setRejecting(null);
    setReason("");
  };

  const onRowKey = (e: KeyboardEvent<HTMLLIElement>, a: Action) => {
    if (e.target !== e.currentTarget || !canMutate) return;
    if (e.key === "a") {
      e.preventDefault();
      onApprove(a);
    } else if (e.key === "r") {
      e.preventDefault();
      setRejecting(a.id);
    }
  };

  return (
    <Panel title="Actions" id="actions">
      <h3 className="mb-1 text-xs font-semibold text-slate-400">Pending ({pending.length}) — focus a row, then <kbd>a</kbd> approve, <kbd>r</kbd> reject</h3>
      {pending.length === 0 ? (
        <p className="mb-2 text-sm text-slate-400">Nothing waiting for a decision.</p>
      ) : (
        <ul className="mb-3 space-y-1" aria-label="pending actions">
          {pending.map((a) => (
            <li key={a.id} tabIndex={0} onKeyDown={(e) => onRowKey(e, a)} className="rounded border border-amber-700/60 p-2 text-sm" data-testid="pending-action" data-action-id={a.id}>
              <div className="flex flex-wrap items-center gap-2">
                <Badge tone="warn">pending</Badge>
                <span className="font-medium">{typeLabel(a)}</span>
                <span className="font-mono text-xs">{a.targetId}</span>
                <span className="text-xs text-slate-400">proposed at tick {String(a.proposedAtTick)}</span>
              </div>
              <p className="mt-1 text-xs text-slate-300">{a.reason}</p>
              {rejecting === a.id ? (
                <form className="mt-2 flex flex-wrap items-center gap-2" onSubmit={(e) => { e.preventDefault(); submitReject(a); }}>
                  <label className="text-xs" htmlFor={`reason-${a.id}`}>Reason for rejecting</label>
                  <input id={`reason-${a.id}`} autoFocus required value={reason} onChange={(e) => setReason(e.target.value)} className="min-w-48 flex-1 rounded border border-slate-600 bg-slate-950 px-2 py-1 text-xs" />
                  <button type="submit" disabled={!reason.trim()} className="rounded bg-rose-700 px-2 py-1 text-xs font-semibold disabled:opacity-50">Reject</button>
                  <button type="button" onClick={() => { setRejecting(null); setReason(""); }} className="rounded border border-slate-600 px-2 py-1 text-xs">Cancel</button>
                </form>
              ) : (
                <div className="mt-2 flex gap-2">
                  <button type="button" disabled={!canMutate} onClick={() => onApprove(a)} className="rounded bg-emerald-700 px-2 py-1 text-xs font-semibold disabled:opacity-50" aria-label={`Approve ${typeLabel(a)} on ${a.targetId}`}>Approve</button>
                  <button type="button" disabled={!canMutate} onClick={() => setRejecting(a.id)} className="rounded bg-rose-800 px-2 py-1 text-xs font-semibold disabled:opacity-50" aria-label={`Reject ${typeLabel(a)} on ${a.targetId}`}>Reject…</button>
                </div>
              )}
            </li>
          ))}
        </ul>
      )}
      <div className="mb-1 flex flex-wrap items-center gap-2">
        <h3 className="text-xs font-semibold text-slate-400">History</h3>
        <label className="text-xs" htmlFor="history-status">status</label>
        <select id="history-status" value={statusFilter} onChange={(e) => setStatusFilter(e.target.value)} className="rounded border border-slate-600 bg-slate-950 px-1 py-0.5 text-xs">
          <option value="all">all</option>
          {[ActionStatus.APPROVED, ActionStatus.EXECUTED, ActionStatus.FAILED, ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.SUPERSEDED].map((s) => (
            <option key={s} value={statusName(s)}>{enumLabel(statusName(s), "ACTION_STATUS_").toLowerCase()}</option>
          ))}
        </select>
        <label className="text-xs" htmlFor="history-target">filter by target</label>
        <input id="history-target" value={targetFilter} onChange={(e) => setTargetFilter(e.target.value)} className="w-28 rounded border border-slate-600 bg-slate-950 px-1 py-0.5 text-xs" />
        {incidentFilter && (
          <button type="button" onClick={onClearIncidentFilter} className="text-xs text-sky-300 underline">showing one incident's actions — show all</button>
        )}
      </div>
      <ul className="max-h-72 space-y-1 overflow-y-auto" aria-label="action history">
        {history.slice(0, 200).map((a) => {
          const st = optimistic[a.id] ?? a.status;
          return (
            <li key={a.id} className="rounded border border-slate-800 p-1.5 text-xs" data-testid="history-action" data-action-id={a.id} data-status={statusName(st)}>
              <div className="flex flex-wrap items-center gap-2">
                <Badge tone={statusTone(st)}>{enumLabel(statusName(st), "ACTION_STATUS_").toLowerCase()}</Badge>
                <span className="font-medium">{typeLabel(a)}</span>
                <span className="font-mono">{a.targetId}</span>
                <span className="text-slate-400">tick {String(a.updatedAtTick || a.proposedAtTick)}{a.decidedBy ? ` · by ${a.decidedBy}` : ""}</span>
              </div>
              {a.statusReason && <p className="mt-0.5 text-slate-400">{a.statusReason}</p>}
            </li>
          );
        })}
      </ul>
    </Panel>
  );
}
