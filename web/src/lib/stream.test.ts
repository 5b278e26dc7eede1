import { describe, expect, it } from "vitest";
import { StreamClient, backoffDelay, streamUrl, type EventSourceLike } from "./stream";

class FakeES implements EventSourceLike {
  readyState = 0;
  onopen: ((ev: Event) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  listeners = new Map<string, (ev: MessageEvent) => void>();
  closed = false;
  constructor(public url: string) {}
  addEventListener(type: string, l: (ev: MessageEvent) => void) { this.listeners.set(type, l); }
  close() { this.closed = true; this.readyState = 2; }
  emit(type: string, id: string, data: string) {
    this.listeners.get(type)?.({ data, lastEventId: id } as MessageEvent);
  }
}

function harness() {
  const opened: FakeES[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const events: [string, string | null, unknown][] = [];
  const states: string[] = [];
  const c = new StreamClient({
    url: "http://x/api/stream",
    token: "tok",
    onEvent: (t, id, d) => events.push([t, id, d]),
    onState: (s) => states.push(s),
    open: (u) => { const e = new FakeES(u); opened.push(e); return e; },
    schedule: (fn, ms) => { timers.push({ fn, ms }); return timers.length; },
    cancel: () => {},
  });
  return { c, opened, timers, events, states };
}

describe("backoff", () => {
  it("doubles and caps", () => {
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, 500, 15000))).toEqual([500, 1000, 2000, 4000]);
    expect(backoffDelay(10, 500, 15000)).toBe(15000);
    expect(backoffDelay(1000, 500, 15000)).toBe(15000);
  });
  it("builds the url with resume id and token", () => {
    expect(streamUrl("http://h:1/api/stream", "17", "t k")).toBe("http://h:1/api/stream?last_event_id=17&access_token=t+k");
    expect(streamUrl("http://h:1/api/stream", null, null)).toBe("http://h:1/api/stream");
  });
});

describe("StreamClient", () => {
  it("delivers parsed events and tracks the last id", () => {
    const h = harness();
    h.c.start();
    const es = h.opened[0]!;
    es.onopen?.(new Event("open"));
    es.emit("tick", "4", '{"tick":4}');
    es.emit("tick", "5", "not json");
    expect(h.events).toEqual([["tick", "4", { tick: 4 }]]);
    expect(h.c.lastEventId).toBe("5");
    expect(h.states).toEqual(["connecting", "live"]);
  });

  it("reconnects after the stream closes, resuming from the last id, with growing delays", () => {
    const h = harness();
    h.c.start();
    let es = h.opened[0]!;
    es.onopen?.(new Event("open"));
    es.emit("incident", "9", "{}");
    es.readyState = 2;
    es.onerror?.(new Event("error"));
    expect(es.closed).toBe(true);
    expect(h.states.at(-1)).toBe("reconnecting");
    expect(h.timers[0]?.ms).toBe(500);
    h.timers[0]!.fn();
    es = h.opened[1]!;
    expect(es.url).toContain("last_event_id=9");
    expect(es.url).toContain("access_token=tok");
    es.readyState = 2;
    es.onerror?.(new Event("error"));
    expect(h.timers[1]?.ms).toBe(1000);
    h.timers[1]!.fn();
    h.opened[2]!.onopen?.(new Event("open"));
    expect(h.states.at(-1)).toBe("live");
    // After a successful open the delay starts again from the base.
    h.opened[2]!.readyState = 2;
    h.opened[2]!.onerror?.(new Event("error"));
    expect(h.timers[2]?.ms).toBe(500);
  });

  it("lets the browser retry by itself while CONNECTING", () => {
    const h = harness();
    h.c.start();
    const es = h.opened[0]!;
    es.readyState = 0;
    es.onerror?.(new Event("error"));
    expect(es.closed).toBe(false);
    expect(h.timers.length).toBe(0);
    expect(h.states.at(-1)).toBe("reconnecting");
  });

  it("a reset event drops the resume id", () => {
    const h = harness();
    h.c.start();
    const es = h.opened[0]!;
    es.emit("tick", "3", "{}");
    es.emit("reset", "", '{"reason":"gone"}');
    expect(h.c.lastEventId).toBeNull();
  });

  it("stop closes and never reconnects", () => {
    const h = harness();
    h.c.start();
    h.c.stop();
    expect(h.opened[0]!.closed).toBe(true);
    h.opened[0]!.onerror?.(new Event("error"));
    expect(h.timers.length).toBe(0);
    expect(h.states.at(-1)).toBe("offline");
  });
});
