import { describe, expect, it } from "vitest";
import { ENTITY_HISTORY, CLUSTER_HISTORY, actionHistory, incidentFeed, initialState, pendingActions, pushPoint, reduce, type StreamEvent } from "./reducer";
import type { DashboardState } from "./types";

const incident = (id: string, over: Record<string, unknown> = {}) => ({
  id, severity: "INCIDENT_SEVERITY_WARNING", title: `t-${id}`, ruleName: "high_error_rate", targetId: "database",
  state: "INCIDENT_STATE_OPENED", openedAtTick: "10", updatedAtTick: "10", ...over,
});
const action = (id: string, over: Record<string, unknown> = {}) => ({
  id, incidentId: "i1", actionType: "ACTION_TYPE_RESTART_SERVICE", targetId: "database",
  status: "ACTION_STATUS_PENDING", reason: "critical error rate", proposedAtTick: "12", ...over,
});
const tick = (n: number, services: unknown[] = [], extra: Record<string, unknown> = {}) => ({
  type: "tick", id: String(n), data: {
    tick: n, simTimeUnixMs: 1_700_000_000_000 + n * 1000, runId: "run-1",
    cluster: { requestsPerSecond: 100 + n, errorRate: n / 10, p99LatencyMs: 50, cpuUsage: 40, memoryUsage: 30 },
    services, nodes: [{ id: "node-1", cpuUsage: 50, memoryUsage: 40, status: "NODE_STATUS_READY" }], ...extra,
  },
});

function run(events: StreamEvent[], s: DashboardState = initialState()): DashboardState {
  return events.reduce(reduce, s);
}

describe("reducer", () => {
  it("builds state from a snapshot", () => {
    const s = run([{ type: "snapshot", id: "5", data: {
      tick: 40, simTimeUnixMs: 123,
      run: { runId: "run-1", scenario: "cascade_failure", seed: "42", mode: "SIMULATION_MODE_LOCKSTEP", speed: 2, running: true },
      openIncidents: [incident("i1")], pendingActions: [action("a1")], recentActions: [action("a0", { status: "ACTION_STATUS_EXECUTED", updatedAtTick: "30" })],
      services: [{ id: "database", errorRate: 12, replicas: 1 }], nodes: [{ id: "node-1", status: "NODE_STATUS_DOWN" }],
      topology: { nodes: [{ id: "node-1", cpuCores: 8 }], services: [{ id: "database", dependsOn: [], nodeIds: ["node-1"], replicas: 1, maxReplicas: 3 }] },
    } }]);
    expect(s.tick).toBe(40);
    expect(s.lastEventId).toBe("5");
    expect(s.run?.scenario).toBe("cascade_failure");
    expect(s.run?.seed).toBe("42");
    expect(Object.keys(s.incidents)).toEqual(["i1"]);
    expect(pendingActions(s).map((a) => a.id)).toEqual(["a1"]);
    expect(actionHistory(s).map((a) => a.id)).toEqual(["a0"]);
    expect(s.services.database?.errorRate).toBe(12);
    expect(s.nodes["node-1"]?.status).toBe("NODE_STATUS_DOWN");
    expect(s.topology?.services[0]?.maxReplicas).toBe(3);
  });

  it("a snapshot replaces what was there (a reload restores state)", () => {
    const before = run([{ type: "incident", id: "1", data: incident("old") }, tick(3)]);
    const after = reduce(before, { type: "snapshot", id: "9", data: { tick: 50, openIncidents: [incident("new")] } });
    expect(Object.keys(after.incidents)).toEqual(["new"]);
    expect(after.tick).toBe(50);
    expect(after.clusterHistory.ticks).toEqual([]);
  });

  it("tick events advance the tick and the histories", () => {
    const s = run([tick(1, [{ id: "cart", errorRate: 1 }]), tick(2, [{ id: "cart", errorRate: 2 }]), tick(3)]);
    expect(s.tick).toBe(3);
    expect(s.lastEventId).toBe("3");
    expect(s.clusterHistory.ticks).toEqual([1, 2, 3]);
    expect(s.clusterHistory.values.requestsPerSecond).toEqual([101, 102, 103]);
    expect(s.entityHistory.cart?.values.errorRate).toEqual([1, 2]);
    expect(s.cluster?.errorRate).toBeCloseTo(0.3);
  });

  it("keeps histories bounded", () => {
    let s = initialState();
    for (let i = 1; i <= CLUSTER_HISTORY + 50; i++) s = reduce(s, tick(i, [{ id: "cart", errorRate: i }]));
    expect(s.clusterHistory.ticks.length).toBe(CLUSTER_HISTORY);
    expect(s.clusterHistory.ticks[0]).toBe(51);
    expect(s.entityHistory.cart?.ticks.length).toBe(ENTITY_HISTORY);
    expect(s.entityHistory.cart?.values.errorRate?.at(-1)).toBe(CLUSTER_HISTORY + 50);
  });

  it("incidents upsert by id; resolution keeps one entry; feed is open-first, newest-first", () => {
    const s = run([
      { type: "incident", id: "1", data: incident("i1", { updatedAtTick: "10" }) },
      { type: "incident", id: "2", data: incident("i2", { updatedAtTick: "11", targetId: "cart" }) },
      { type: "incident", id: "3", data: incident("i1", { severity: "INCIDENT_SEVERITY_CRITICAL", updatedAtTick: "12", state: "INCIDENT_STATE_UPDATED" }) },
      { type: "incident", id: "4", data: incident("i2", { resolved: true, resolvedAtTick: "13", updatedAtTick: "13", state: "INCIDENT_STATE_RESOLVED" }) },
    ]);
    expect(Object.keys(s.incidents).sort()).toEqual(["i1", "i2"]);
    expect(s.incidents.i1?.severity).toBe(4);
    expect(incidentFeed(s).map((i) => i.id)).toEqual(["i1", "i2"]);
    expect(s.markers.filter((m) => m.kind === "incident").length).toBe(2);
  });

  it("an action's status changes move it from pending to history", () => {
    const s1 = run([{ type: "action", id: "1", data: action("a1") }, { type: "action", id: "2", data: action("a2", { proposedAtTick: "11" }) }]);
    expect(pendingActions(s1).map((a) => a.id)).toEqual(["a2", "a1"]);
    const s2 = reduce(s1, { type: "action", id: "3", data: action("a1", { status: "ACTION_STATUS_EXECUTED", updatedAtTick: "14" }) });
    expect(pendingActions(s2).map((a) => a.id)).toEqual(["a2"]);
    expect(actionHistory(s2).map((a) => a.id)).toEqual(["a1"]);
  });

  it("ignores malformed events without losing state", () => {
    const s1 = run([tick(1), { type: "incident", id: "2", data: incident("i1") }]);
    const s2 = run([
      { type: "incident", id: "3", data: { id: 5, severity: "NOT_A_SEVERITY" } },
      { type: "action", id: "4", data: "garbage" },
      { type: "tick", id: "5", data: null },
      { type: "unknown", id: "6", data: {} },
    ], s1);
    expect(Object.keys(s2.incidents)).toEqual(["i1"]);
    expect(s2.tick).toBe(0); // a tick without a number parses as tick 0, but nothing is thrown
    expect(s2.lastEventId).toBe("6");
  });

  it("a reset event asks for a reload; connection events set the state", () => {
    const s = run([{ type: "connection", state: "live" }, { type: "reset", id: null, data: { reason: "history gone" } }]);
    expect(s.connection).toBe("live");
    expect(s.needsReload).toBe(true);
  });

  it("decisions and engine events are kept newest first, bounded", () => {
    let s = initialState();
    for (let i = 0; i < 250; i++) {
      s = reduce(s, { type: "decision", id: String(2 * i), data: { decisionId: `d${i}`, actionId: "a1", approved: true, effectiveTick: String(i) } });
      s = reduce(s, { type: "event", id: String(2 * i + 1), data: { eventId: `e${i}`, kind: "SIMULATION_EVENT_KIND_FAULT_STARTED", message: "m" } });
    }
    expect(s.decisions.length).toBe(200);
    expect(s.decisions[0]?.decisionId).toBe("d249");
    expect(s.events.length).toBe(200);
    expect(s.events[0]?.eventId).toBe("e249");
  });
});

describe("pushPoint", () => {
  it("replaces the last point for a repeated tick", () => {
    let s = pushPoint({ ticks: [], values: {} }, 1, { a: 1 }, 10);
    s = pushPoint(s, 2, { a: 2 }, 10);
    s = pushPoint(s, 2, { a: 5 }, 10);
    expect(s.ticks).toEqual([1, 2]);
    expect(s.values.a).toEqual([1, 5]);
  });
});
