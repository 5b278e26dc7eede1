// Shapes of the dashboard's SSE stream that are not protobuf messages
// (the per-tick views); protobuf messages come as proto3 JSON and are parsed
// with the generated schemas.
import type { Incident } from "@/gen/ops/v1/incidents_pb";
import type { Action, ApprovalDecision } from "@/gen/ops/v1/actions_pb";
import type { SimulationEvent } from "@/gen/sim/v1/events_pb";
import type { Topology } from "@/gen/sim/v1/simulation_pb";

export interface ServiceView {
  id: string;
  cpuUsage: number;
  memoryUsage: number;
  errorRate: number;
  p99LatencyMs: number;
  requestsPerSecond: number;
  replicas: number;
}

export interface NodeView {
  id: string;
  cpuUsage: number;
  memoryUsage: number;
  status: string;
}

export interface ClusterView {
  requestsPerSecond: number;
  errorRate: number;
  p99LatencyMs: number;
  cpuUsage: number;
  memoryUsage: number;
}

export interface RunInfo {
  runId: string;
  scenario: string;
  seed: string;
  mode: string;
  speed: number;
  maxSpeed: boolean;
  running: boolean;
  replayed: boolean;
}

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

/** A ring of recent values for a chart. */
export interface Series {
  ticks: number[];
  values: Record<string, number[]>;
}

export interface Marker {
  tick: number;
  kind: "incident" | "action";
  label: string;
  targetId: string;
}

export interface DashboardState {
  connection: ConnectionState;
  lastEventId: string | null;
  needsReload: boolean;
  run: RunInfo | null;
  tick: number;
  simTimeUnixMs: number;
  cluster: ClusterView | null;
  clusterHistory: Series;
  entityHistory: Record<string, Series>;
  services: Record<string, ServiceView>;
  nodes: Record<string, NodeView>;
  totalServices: number;
  downsampled: boolean;
  topology: Topology | null;
  incidents: Record<string, Incident>;
  actions: Record<string, Action>;
  decisions: ApprovalDecision[];
  events: SimulationEvent[];
  markers: Marker[];
}
