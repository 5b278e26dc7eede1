"use client";
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { ActionStatus } from "@/gen/common/v1/enums_pb";
import type { Action } from "@/gen/ops/v1/actions_pb";
import { initialState, reduce } from "@/lib/reducer";
import { StreamClient } from "@/lib/stream";
import { createClients, describeError, streamBaseUrl } from "@/lib/api";
import { saveToken, takeTokenFromUrl } from "@/lib/token";
import { enumLabel, formatLatency, formatPercent, formatRate, formatSimTime, formatSpeed } from "@/lib/format";
import { Badge, Panel, Sparkline, type Tone } from "./ui";
import Chart from "./Chart";
import Health from "./Health";
import Incidents from "./Incidents";
import Actions from "./Actions";
import Controls, { type ControlHandlers } from "./Controls";

const CONNECTION: Record<string, { tone: Tone; label: string }> = {
  connecting: { tone: "muted", label: "connecting" },
  live: { tone: "ok", label: "live" },
  reconnecting: { tone: "warn", label: "reconnecting" },
  offline: { tone: "bad", label: "offline" },
};

const CLUSTER_SERIES = [
  { key: "errorRate", label: "error rate %", color: "#f43f5e" },
  { key: "cpuUsage", label: "cpu %", color: "#f59e0b" },
];
const LATENCY_SERIES = [{ key: "p99LatencyMs", label: "p99 ms", color: "#a78bfa" }];
const RPS_SERIES = [{ key: "requestsPerSecond", label: "requests/s", color: "#38bdf8" }];
const NODE_SERIES = [
  { key: "cpuUsage", label: "cpu %", color: "#f59e0b" },
  { key: "memoryUsage", label: "memory %", color: "#22c55e" },
];

export default function Dashboard() {
  const [state, dispatch] = useReducer(reduce, undefined, initialState);
  const [token, setToken] = useState<string | null>(null);
  const [tokenDraft, setTokenDraft] = useState("");
  const [message, setMessage] = useState<{ tone: Tone; text: string } | null>(null);
  const [optimistic, setOptimistic] = useState<Record<string, ActionStatus>>({});
  const [selected, setSelected] = useState<string | null>(null);
  const [incidentFilter, setIncidentFilter] = useState<string | null>(null);
  const tokenRef = useRef<string | null>(null);
  const streamRef = useRef<StreamClient | null>(null);
  tokenRef.current = token;

  useEffect(() => {
    const t = takeTokenFromUrl(window.location, window.sessionStorage, window.history);
    setToken(t);
    tokenRef.current = t;
    const client = new StreamClient({
      url: streamBaseUrl(),
      token: t,
      onEvent: (type, id, data) => dispatch({ type, id, data }),
      onState: (s) => dispatch({ type: "connection", state: s }),
    });
    streamRef.current = client;
    client.start();
    return () => client.stop();
  }, []);

  // A `reset` event means our resume point is gone: reconnect for a fresh
  // snapshot.
  useEffect(() => {
    if (!state.needsReload) return;
    const c = streamRef.current;
    if (!c) return;
    c.stop();
    c.resetResume();
    c.start();
  }, [state.needsReload]);

  const clients = useMemo(() => createClients(() => tokenRef.current), []);

  const fail = useCallback((what: string, err: unknown) => {
    setMessage({ tone: "bad", text: `${what} failed. ${describeError(err)}` });
  }, []);

  const approve = useCallback((a: Action) => {
    setOptimistic((o) => ({ ...o, [a.id]: ActionStatus.APPROVED }));
    clients.actions.approveAction({ actionId: a.id, actor: "dashboard" }).then(
      () => setMessage({ tone: "ok", text: `Approved ${a.targetId}.` }),
      (err) => fail("Approving", err),
    ).finally(() => setOptimistic((o) => { const n = { ...o }; delete n[a.id]; return n; }));
  }, [clients, fail]);

  const reject = useCallback((a: Action, reason: string) => {
    setOptimistic((o) => ({ ...o, [a.id]: ActionStatus.REJECTED }));
    clients.actions.rejectAction({ actionId: a.id, reason, actor: "dashboard" }).then(
      () => setMessage({ tone: "ok", text: `Rejected ${a.targetId}.` }),
      (err) => fail("Rejecting", err),
    ).finally(() => setOptimistic((o) => { const n = { ...o }; delete n[a.id]; return n; }));
  }, [clients, fail]);

  const control = useCallback((what: string, p: Promise<unknown>) => {
    p.then(() => setMessage({ tone: "ok", text: `${what}: done.` }), (err) => fail(what, err));
  }, [fail]);

  const handlers: ControlHandlers = useMemo(() => ({
    play: () => control("Play", clients.sim.play({})),
    pause: () => control("Pause", clients.sim.pause({})),
    setSpeed: (tps, max) => control("Set speed", clients.sim.setSpeed({ ticksPerSecond: tps, maxSpeed: max })),
    setScenario: (scenario, seed) => control("Start new run", clients.sim.setScenario({ scenario, seed })),
    reset: (seed) => control("Reset", clients.sim.reset({ seed })),
    injectFault: (f) => control("Inject fault", clients.sim.injectFault({ fault: { type: f.type, targetId: f.targetId, intensity: f.intensity, durationTicks: f.durationTicks } })),
  }), [clients, control]);

  const conn = CONNECTION[state.connection] ?? { tone: "muted" as Tone, label: state.connection };
  const run = state.run;
  const c = state.cluster;
  const hist = state.clusterHistory;
  const selService = selected ? state.services[selected] : undefined;
  const selNode = selected ? state.nodes[selected] : undefined;
  const selHistory = selected ? state.entityHistory[selected] : undefined;
  const markers = selected ? state.markers.filter((m) => m.targetId === selected) : state.markers;

  return (
    <main className="mx-auto max-w-[1800px] space-y-3 p-3">
      <header className="flex flex-wrap items-center gap-3">
        <h1 className="text-lg font-bold">Microcloud</h1>
        <Badge tone={conn.tone}><span data-testid="connection">{conn.label}</span></Badge>
        {run?.replayed && <Badge tone="info">replayed run</Badge>}
        <dl className="flex flex-wrap gap-x-4 gap-y-1 text-sm">
          <div><dt className="inline text-slate-400">tick </dt><dd className="inline font-mono" data-testid="tick">{state.tick}</dd></div>
          <div><dt className="inline text-slate-400">sim time </dt><dd className="inline font-mono">{formatSimTime(state.simTimeUnixMs)}</dd></div>
          <div><dt className="inline text-slate-400">speed </dt><dd className="inline">{run ? formatSpeed(run.speed, run.maxSpeed) : "—"}{run && !run.running ? " (paused)" : ""}</dd></div>
          <div><dt className="inline text-slate-400">mode </dt><dd className="inline">{run ? enumLabel(run.mode, "SIMULATION_MODE_").toLowerCase() : "—"}</dd></div>
          <div><dt className="inline text-slate-400">scenario </dt><dd className="inline">{run?.scenario || "—"}</dd></div>
          <div><dt className="inline text-slate-400">seed </dt><dd className="inline font-mono">{run?.seed || "—"}</dd></div>
        </dl>
        <form className="ml-auto flex items-center gap-1 text-xs" onSubmit={(e) => { e.preventDefault(); saveToken(window.sessionStorage, tokenDraft); setToken(tokenDraft || null); setTokenDraft(""); setMessage(null); }}>
          <label htmlFor="token">{token ? "token set — replace" : "API token"}</label>
          <input id="token" type="password" autoComplete="off" value={tokenDraft} onChange={(e) => setTokenDraft(e.target.value)} className="w-40 rounded border border-slate-600 bg-slate-950 px-1 py-0.5" />
          <button type="submit" className="rounded border border-slate-600 px-2 py-0.5">Save</button>
        </form>
      </header>
      {!token && (
        <p role="status" className="rounded border border-amber-700 bg-amber-950/50 p-2 text-sm">
          No API token: you can watch, but approving, rejecting and the controls need the token from the URL that <code>make run</code> printed.
        </p>
      )}
      {message && (
        <p role={message.tone === "bad" ? "alert" : "status"} data-testid="message" className={`flex items-start justify-between gap-2 rounded border p-2 text-sm ${message.tone === "bad" ? "border-rose-700 bg-rose-950/60" : "border-emerald-800 bg-emerald-950/40"}`}>
          <span>{message.text}</span>
          <button type="button" onClick={() => setMessage(null)} aria-label="Dismiss message" className="text-xs">✕</button>
        </p>
      )}
      <section aria-label="traffic statistics" className="grid grid-cols-1 gap-3 sm:grid-cols-3">
        {[
          { label: "Requests/s", value: c ? formatRate(c.requestsPerSecond) : "—", key: "requestsPerSecond", color: "#38bdf8" },
          { label: "Error rate", value: c ? formatPercent(c.errorRate) : "—", key: "errorRate", color: "#f43f5e" },
          { label: "p99 latency", value: c ? formatLatency(c.p99LatencyMs) : "—", key: "p99LatencyMs", color: "#a78bfa" },
        ].map((s) => (
          <div key={s.key} className="flex items-center justify-between rounded-lg border border-slate-800 bg-slate-900/60 p-3">
            <div>
              <p className="text-xs uppercase text-slate-400">{s.label}</p>
              <p className="text-2xl font-semibold" data-testid={`stat-${s.key}`}>{s.value}</p>
            </div>
            <Sparkline values={(hist.values[s.key] ?? []).slice(-60)} label={s.label} color={s.color} />
          </div>
        ))}
      </section>
      <div className="grid grid-cols-1 gap-3 xl:grid-cols-3">
        <div className="space-y-3 xl:col-span-2">
          <Panel title={selected ? `Metrics · ${selected}` : "Metrics · cluster"} id="charts" actions={selected ? <button type="button" className="text-xs text-sky-300 underline" onClick={() => setSelected(null)}>back to cluster</button> : undefined}>
            {selected && (selService || selNode) ? (
              <div className="grid grid-cols-1 gap-2 lg:grid-cols-2">
                {selService ? (
                  <>
                    <Chart title={`${selected}: error rate and cpu`} series={CLUSTER_SERIES} data={selHistory ?? { ticks: [], values: {} }} markers={markers} />
                    <Chart title={`${selected}: p99 latency`} series={LATENCY_SERIES} data={selHistory ?? { ticks: [], values: {} }} markers={markers} />
                  </>
                ) : (
                  <Chart title={`${selected}: cpu and memory`} series={NODE_SERIES} data={selHistory ?? { ticks: [], values: {} }} markers={markers} />
                )}
              </div>
            ) : (
              <div className="grid grid-cols-1 gap-2 lg:grid-cols-3">
                <Chart title="cluster error rate and cpu" series={CLUSTER_SERIES} data={hist} markers={markers} />
                <Chart title="cluster p99 latency" series={LATENCY_SERIES} data={hist} markers={markers} />
                <Chart title="cluster requests/s" series={RPS_SERIES} data={hist} markers={markers} />
              </div>
            )}
          </Panel>
          <Health state={state} selected={selected} onSelect={setSelected} />
          <Controls state={state} handlers={handlers} canMutate={!!token} />
        </div>
        <div className="space-y-3">
          <Actions state={state} optimistic={optimistic} onApprove={approve} onReject={reject} incidentFilter={incidentFilter} onClearIncidentFilter={() => setIncidentFilter(null)} canMutate={!!token} />
          <Incidents state={state} filterTarget={selected} onShowActions={(id) => setIncidentFilter(id)} />
        </div>
      </div>
    </main>
  );
}
