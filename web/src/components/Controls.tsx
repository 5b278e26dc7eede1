"use client";
// Simulation controls, forwarded by the orchestrator to the engine: play /
// pause, speed, scenario and seed (a new run), and fault injection.
import { useEffect, useState } from "react";
import { FaultType } from "@/gen/sim/v1/events_pb";
import type { DashboardState } from "@/lib/types";
import { enumLabel } from "@/lib/format";
import { Panel } from "./ui";

export const SCENARIOS = ["cascade_failure", "high_load", "normal"];
const SPEEDS = [0.5, 1, 2, 5, 10, 20];
const FAULTS = [FaultType.NODE_CRASH, FaultType.NODE_DEGRADATION, FaultType.MEMORY_LEAK, FaultType.CPU_HOG,
  FaultType.TRAFFIC_SPIKE, FaultType.DEPENDENCY_LATENCY, FaultType.ERROR_BURST];

export interface ControlHandlers {
  play: () => void;
  pause: () => void;
  setSpeed: (tps: number, max: boolean) => void;
  setScenario: (scenario: string, seed: bigint) => void;
  reset: (seed: bigint) => void;
  injectFault: (f: { type: FaultType; targetId: string; intensity: number; durationTicks: number }) => void;
}

export default function Controls({ state, handlers, canMutate }: { state: DashboardState; handlers: ControlHandlers; canMutate: boolean }) {
  const run = state.run;
  const [scenario, setScenario] = useState(run?.scenario || "cascade_failure");
  const [seed, setSeed] = useState(run?.seed || "42");
  // Follow the run the page shows (the first snapshot arrives after the
  // first render, and a new run may be started elsewhere).
  const runScenario = run?.scenario;
  const runSeed = run?.seed;
  useEffect(() => {
    if (runScenario) setScenario(runScenario);
    if (runSeed) setSeed(runSeed);
  }, [runScenario, runSeed]);
  const [faultType, setFaultType] = useState<FaultType>(FaultType.ERROR_BURST);
  const [target, setTarget] = useState("");
  const [intensity, setIntensity] = useState("0.5");
  const [duration, setDuration] = useState("60");
  const targets = [...Object.keys(state.services), ...Object.keys(state.nodes)].sort();
  const seedOk = /^\d+$/.test(seed);
  const intensityNum = Number(intensity);
  const durationNum = Number(duration);
  const faultOk = target !== "" && Number.isFinite(intensityNum) && intensityNum > 0 && Number.isInteger(durationNum) && durationNum >= 0;

  return (
    <Panel title="Controls" id="controls">
      <div className="flex flex-wrap items-center gap-2 text-sm">
        {run?.running ? (
          <button type="button" disabled={!canMutate} onClick={handlers.pause} className="rounded bg-slate-700 px-3 py-1 font-semibold disabled:opacity-50">Pause</button>
        ) : (
          <button type="button" disabled={!canMutate} onClick={handlers.play} className="rounded bg-emerald-700 px-3 py-1 font-semibold disabled:opacity-50">Play</button>
        )}
        <label htmlFor="speed" className="text-xs">speed</label>
        <select id="speed" disabled={!canMutate} value={run?.maxSpeed ? "max" : String(run?.speed ?? 1)}
          onChange={(e) => (e.target.value === "max" ? handlers.setSpeed(0, true) : handlers.setSpeed(Number(e.target.value), false))}
          className="rounded border border-slate-600 bg-slate-950 px-1 py-0.5 text-xs">
          {SPEEDS.map((s) => <option key={s} value={String(s)}>{s} ticks/s</option>)}
          <option value="max">max</option>
          {run && !run.maxSpeed && !SPEEDS.includes(run.speed) && <option value={String(run.speed)}>{run.speed} ticks/s</option>}
        </select>
      </div>
      <form className="mt-3 flex flex-wrap items-end gap-2 text-xs" onSubmit={(e) => { e.preventDefault(); if (seedOk) handlers.setScenario(scenario, BigInt(seed)); }}>
        <div className="flex flex-col">
          <label htmlFor="scenario">scenario</label>
          <select id="scenario" value={scenario} onChange={(e) => setScenario(e.target.value)} className="rounded border border-slate-600 bg-slate-950 px-1 py-0.5">
            {SCENARIOS.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </div>
        <div className="flex flex-col">
          <label htmlFor="seed">seed</label>
          <input id="seed" inputMode="numeric" value={seed} onChange={(e) => setSeed(e.target.value)} aria-invalid={!seedOk} className="w-24 rounded border border-slate-600 bg-slate-950 px-1 py-0.5" />
        </div>
        <button type="submit" disabled={!canMutate || !seedOk} className="rounded bg-sky-800 px-2 py-1 font-semibold disabled:opacity-50">Start new run</button>
        <button type="button" disabled={!canMutate || !seedOk} onClick={() => handlers.reset(BigInt(seed))} className="rounded border border-slate-600 px-2 py-1 disabled:opacity-50">Reset</button>
        {!seedOk && <span role="alert" className="text-rose-300">The seed must be a whole number.</span>}
      </form>
      <form className="mt-3 flex flex-wrap items-end gap-2 text-xs" onSubmit={(e) => { e.preventDefault(); if (faultOk) handlers.injectFault({ type: faultType, targetId: target, intensity: intensityNum, durationTicks: durationNum }); }}>
        <div className="flex flex-col">
          <label htmlFor="fault-type">fault</label>
          <select id="fault-type" value={faultType} onChange={(e) => setFaultType(Number(e.target.value) as FaultType)} className="rounded border border-slate-600 bg-slate-950 px-1 py-0.5">
            {FAULTS.map((f) => <option key={f} value={f}>{enumLabel(FaultType[f], "")}</option>)}
          </select>
        </div>
        <div className="flex flex-col">
          <label htmlFor="fault-target">fault target</label>
          <input id="fault-target" list="fault-targets" value={target} onChange={(e) => setTarget(e.target.value)} className="w-32 rounded border border-slate-600 bg-slate-950 px-1 py-0.5" />
          <datalist id="fault-targets">{targets.map((t) => <option key={t} value={t} />)}</datalist>
        </div>
        <div className="flex flex-col">
          <label htmlFor="fault-intensity">intensity</label>
          <input id="fault-intensity" value={intensity} onChange={(e) => setIntensity(e.target.value)} className="w-16 rounded border border-slate-600 bg-slate-950 px-1 py-0.5" />
        </div>
        <div className="flex flex-col">
          <label htmlFor="fault-duration">duration (ticks)</label>
          <input id="fault-duration" value={duration} onChange={(e) => setDuration(e.target.value)} className="w-16 rounded border border-slate-600 bg-slate-950 px-1 py-0.5" />
        </div>
        <button type="submit" disabled={!canMutate || !faultOk} className="rounded bg-amber-700 px-2 py-1 font-semibold disabled:opacity-50">Inject fault</button>
      </form>
    </Panel>
  );
}
