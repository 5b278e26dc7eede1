// The stream reducer: events from /api/stream in, dashboard state out. Pure
// (no I/O, no clock), so it is unit-tested on its own and the page only
// renders what it returns.
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { IncidentSchema, type Incident } from "@/gen/ops/v1/incidents_pb";
import {
  ActionSchema,
  ApprovalDecisionSchema,
  type Action,
} from "@/gen/ops/v1/actions_pb";
import { SimulationEventSchema } from "@/gen/sim/v1/events_pb";
import { SimulationStateSchema, SimulationMode, TopologySchema } from "@/gen/sim/v1/simulation_pb";
import type {
  ClusterView,
  ConnectionState,
  DashboardState,
  Marker,
  NodeView,
  RunInfo,
  Series,
  ServiceView,
} from "./types";

/** Points kept for the cluster charts and for each entity's charts. */
export const CLUSTER_HISTORY = 600;
export const ENTITY_HISTORY = 120;
const MAX_EVENTS = 200;
const MAX_DECISIONS = 200;
const MAX_MARKERS = 300;
const MAX_FINISHED_ACTIONS = 500;
const MAX_RESOLVED_INCIDENTS = 500;

export type StreamEvent =
  | { type: "connection"; state: ConnectionState }
  | { type: string; id?: string | null; data: unknown };

const PARSE = { ignoreUnknownFields: true } as const;

export function initialState(): DashboardState {
  return {
    connection: "connecting",
    lastEventId: null,
    needsReload: false,
    run: null,
    tick: 0,
    simTimeUnixMs: 0,
    cluster: null,
    clusterHistory: { ticks: [], values: {} },
    entityHistory: {},
    services: {},
    nodes: {},
    totalServices: 0,
    downsampled: false,
    topology: null,
    incidents: {},
    actions: {},
    decisions: [],
    events: [],
    markers: [],
  };
}

function num(v: unknown, fallback = 0): number {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && v.trim() !== "") {
    const n = Number(v);
    if (Number.isFinite(n)) return n;
  }
  return fallback;
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function obj(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** Appends a point to a series, keeping at most `max` points (a new array,
 * so React sees the change). A tick at or before the last one replaces it. */
export function pushPoint(s: Series, tick: number, values: Record<string, number>, max: number): Series {
  const ticks = s.ticks.slice();
  const out: Record<string, number[]> = {};
  const last = ticks.length ? ticks[ticks.length - 1] : undefined;
  const replace = last !== undefined && tick <= last;
  if (!replace) ticks.push(tick);
  for (const [k, v] of Object.entries(values)) {
    const col = (s.values[k] ?? new Array(ticks.length - (replace ? 0 : 1)).fill(NaN)).slice();
    if (replace) col[col.length - 1] = v;
    else col.push(v);
    out[k] = col;
  }
  const drop = ticks.length - max;
  if (drop > 0) {
    ticks.splice(0, drop);
    for (const k of Object.keys(out)) out[k]?.splice(0, drop);
  }
  return { ticks, values: out };
}

function parseService(v: unknown): ServiceView {
  const o = obj(v);
  return {
    id: str(o.id),
    cpuUsage: num(o.cpuUsage),
    memoryUsage: num(o.memoryUsage),
    errorRate: num(o.errorRate),
    p99LatencyMs: num(o.p99LatencyMs),
    requestsPerSecond: num(o.requestsPerSecond),
    replicas: num(o.replicas),
  };
}

function parseNode(v: unknown): NodeView {
  const o = obj(v);
  return { id: str(o.id), cpuUsage: num(o.cpuUsage), memoryUsage: num(o.memoryUsage), status: str(o.status) };
}

function parseCluster(v: unknown): ClusterView {
  const o = obj(v);
  return {
    requestsPerSecond: num(o.requestsPerSecond),
    errorRate: num(o.errorRate),
    p99LatencyMs: num(o.p99LatencyMs),
    cpuUsage: num(o.cpuUsage),
    memoryUsage: num(o.memoryUsage),
  };
}

function parseRun(v: unknown): RunInfo {
  const o = obj(v);
  return {
    runId: str(o.runId),
    scenario: str(o.scenario),
    seed: String(o.seed ?? ""),
    mode: str(o.mode),
    speed: num(o.speed),
    maxSpeed: o.maxSpeed === true,
    running: o.running === true,
    replayed: o.replayed === true,
  };
}

function tryParse<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

/** Incidents that are resolved are kept for the feed, the oldest dropped
 * beyond a bound; open ones are always kept. */
function boundIncidents(m: Record<string, Incident>): Record<string, Incident> {
  const resolved = Object.values(m).filter((i) => i.resolved);
  if (resolved.length <= MAX_RESOLVED_INCIDENTS) return m;
  resolved.sort((a, b) => Number(a.updatedAtTick - b.updatedAtTick) || a.id.localeCompare(b.id));
  const out = { ...m };
  for (const i of resolved.slice(0, resolved.length - MAX_RESOLVED_INCIDENTS)) delete out[i.id];
  return out;
}

const FINISHED = new Set(["ACTION_STATUS_EXECUTED", "ACTION_STATUS_FAILED", "ACTION_STATUS_REJECTED",
  "ACTION_STATUS_EXPIRED", "ACTION_STATUS_SUPERSEDED"]);

export function isPending(a: Action): boolean {
  return a.status === 1; // ActionStatus.PENDING
}

function boundActions(m: Record<string, Action>): Record<string, Action> {
  const finished = Object.values(m).filter((a) => !isPending(a) && a.status !== 2);
  if (finished.length <= MAX_FINISHED_ACTIONS) return m;
  finished.sort((a, b) => Number(a.updatedAtTick - b.updatedAtTick) || a.id.localeCompare(b.id));
  const out = { ...m };
  for (const a of finished.slice(0, finished.length - MAX_FINISHED_ACTIONS)) delete out[a.id];
  return out;
}

function addMarker(markers: Marker[], m: Marker): Marker[] {
  const out = markers.concat([m]);
  return out.length > MAX_MARKERS ? out.slice(out.length - MAX_MARKERS) : out;
}

function applyTickViews(
  state: DashboardState,
  tick: number,
  services: ServiceView[],
  nodes: NodeView[],
): Pick<DashboardState, "services" | "nodes" | "entityHistory"> {
  const svc: Record<string, ServiceView> = { ...state.services };
  const nd: Record<string, NodeView> = { ...state.nodes };
  const hist: Record<string, Series> = { ...state.entityHistory };
  for (const s of services) {
    if (!s.id) continue;
    svc[s.id] = s;
    hist[s.id] = pushPoint(hist[s.id] ?? { ticks: [], values: {} }, tick, {
      errorRate: s.errorRate,
      p99LatencyMs: s.p99LatencyMs,
      cpuUsage: s.cpuUsage,
      requestsPerSecond: s.requestsPerSecond,
    }, ENTITY_HISTORY);
  }
  for (const n of nodes) {
    if (!n.id) continue;
    nd[n.id] = n;
    hist[n.id] = pushPoint(hist[n.id] ?? { ticks: [], values: {} }, tick, {
      cpuUsage: n.cpuUsage,
      memoryUsage: n.memoryUsage,
    }, ENTITY_HISTORY);
  }
  return { services: svc, nodes: nd, entityHistory: hist };
}

export function reduce(state: DashboardState, ev: StreamEvent): DashboardState {
  if (ev.type === "connection" && "state" in ev) {
    return { ...state, connection: ev.state };
  }
  if (!("data" in ev)) return state;
  const id = ev.id ?? null;
  const base = id ? { ...state, lastEventId: id } : state;
  const data = ev.data;
  switch (ev.type) {
    case "snapshot": {
      const o = obj(data);
      const fresh = initialState();
      const incidents: Record<string, Incident> = {};
      for (const j of arr(o.openIncidents)) {
        const inc = tryParse(() => fromJson(IncidentSchema, j as JsonValue, PARSE));
        if (inc?.id) incidents[inc.id] = inc;
      }
      const actions: Record<string, Action> = {};
      for (const j of [...arr(o.recentActions), ...arr(o.pendingActions)]) {
        const a = tryParse(() => fromJson(ActionSchema, j as JsonValue, PARSE));
        if (a?.id) actions[a.id] = a;
      }
      const tick = num(o.tick);
      const services = arr(o.services).map(parseService);
      const nodes = arr(o.nodes).map(parseNode);
      const views = applyTickViews(fresh, tick, services, nodes);
      const topology = o.topology ? tryParse(() => fromJson(TopologySchema, o.topology as JsonValue, PARSE)) : null;
      return {
        ...fresh,
        ...views,
        connection: state.connection,
        lastEventId: id ?? state.lastEventId,
        run: o.run ? parseRun(o.run) : null,
        tick,
        simTimeUnixMs: num(o.simTimeUnixMs),
        topology,
        incidents,
        actions,
        totalServices: services.length,
      };
    }
    case "tick": {
      const o = obj(data);
      const tick = num(o.tick);
      const cluster = parseCluster(o.cluster);
      const views = applyTickViews(base, tick, arr(o.services).map(parseService), arr(o.nodes).map(parseNode));
      const clusterHistory = pushPoint(base.clusterHistory, tick, {
        requestsPerSecond: cluster.requestsPerSecond,
        errorRate: cluster.errorRate,
        p99LatencyMs: cluster.p99LatencyMs,
        cpuUsage: cluster.cpuUsage,
      }, CLUSTER_HISTORY);
      const run = base.run && o.runId && str(o.runId) !== base.run.runId ? { ...base.run, runId: str(o.runId) } : base.run;
      return {
        ...base,
        ...views,
        run,
        tick,
        simTimeUnixMs: num(o.simTimeUnixMs, base.simTimeUnixMs),
        cluster,
        clusterHistory,
        totalServices: num(o.totalServices, Object.keys(views.services).length),
        downsampled: o.downsampled === true,
      };
    }
    case "incident": {
      const inc = tryParse(() => fromJson(IncidentSchema, data as JsonValue, PARSE));
      if (!inc?.id) return base;
      const prev = base.incidents[inc.id];
      const markers = prev
        ? base.markers
        : addMarker(base.markers, { tick: Number(inc.openedAtTick), kind: "incident", label: inc.title || inc.ruleName, targetId: inc.targetId });
      return { ...base, incidents: boundIncidents({ ...base.incidents, [inc.id]: inc }), markers };
    }
    case "action": {
      const a = tryParse(() => fromJson(ActionSchema, data as JsonValue, PARSE));
      if (!a?.id) return base;
      const prev = base.actions[a.id];
      const markers = prev
        ? base.markers
        : addMarker(base.markers, { tick: Number(a.proposedAtTick), kind: "action", label: a.reason, targetId: a.targetId });
      return { ...base, actions: boundActions({ ...base.actions, [a.id]: a }), markers };
    }
    case "decision": {
      const d = tryParse(() => fromJson(ApprovalDecisionSchema, data as JsonValue, PARSE));
      if (!d) return base;
      const decisions = [d, ...base.decisions].slice(0, MAX_DECISIONS);
      return { ...base, decisions };
    }
    case "event": {
      const e = tryParse(() => fromJson(SimulationEventSchema, data as JsonValue, PARSE));
      if (!e) return base;
      return { ...base, events: [e, ...base.events].slice(0, MAX_EVENTS) };
    }
    case "state": {
      const s = tryParse(() => fromJson(SimulationStateSchema, data as JsonValue, PARSE));
      if (!s) return base;
      const run: RunInfo = {
        runId: s.runId,
        scenario: s.scenario,
        seed: s.seed.toString(),
        mode: s.mode === SimulationMode.LOCKSTEP ? "SIMULATION_MODE_LOCKSTEP" : s.mode === SimulationMode.REALTIME ? "SIMULATION_MODE_REALTIME" : "",
        speed: s.speed,
        maxSpeed: s.maxSpeed,
        running: s.running,
        replayed: base.run?.replayed ?? false,
      };
      return { ...base, run };
    }
    case "reset":
      return { ...base, needsReload: true };
    default:
      return base;
  }
}

/** Open incidents, newest first; then resolved ones, newest first. */
export function incidentFeed(state: DashboardState): Incident[] {
  return Object.values(state.incidents).sort((a, b) => {
    if (a.resolved !== b.resolved) return a.resolved ? 1 : -1;
    const d = Number(b.updatedAtTick - a.updatedAtTick);
    return d || a.id.localeCompare(b.id);
  });
}

/** Pending actions, oldest first (the order to decide them in). */
export function pendingActions(state: DashboardState): Action[] {
  return Object.values(state.actions)
    .filter(isPending)
    .sort((a, b) => Number(a.proposedAtTick - b.proposedAtTick) || a.id.localeCompare(b.id));
}

/** Decided actions, newest first. */
export function actionHistory(state: DashboardState): Action[] {
  return Object.values(state.actions)
    .filter((a) => !isPending(a))
    .sort((a, b) => Number(b.updatedAtTick - a.updatedAtTick) || a.id.localeCompare(b.id));
}

export { FINISHED };
