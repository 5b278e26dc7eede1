// The SSE client: one EventSource at a time, reconnecting with capped
// exponential backoff. The browser's own reconnect sends Last-Event-ID by
// itself; when we open a new EventSource after an error we pass the last id
// as a query parameter so the server resumes where we left off.
import type { ConnectionState } from "./types";

export const EVENT_TYPES = ["snapshot", "tick", "event", "incident", "action", "decision", "state", "reset"] as const;

export interface EventSourceLike {
  readyState: number;
  onopen: ((ev: Event) => void) | null;
  onerror: ((ev: Event) => void) | null;
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void;
  close(): void;
}

export interface StreamOptions {
  url: string;
  token?: string | null;
  onEvent: (type: string, id: string | null, data: unknown) => void;
  onState: (state: ConnectionState) => void;
  /** For tests: how to open a stream and schedule a retry. */
  open?: (url: string) => EventSourceLike;
  schedule?: (fn: () => void, ms: number) => unknown;
  cancel?: (handle: unknown) => void;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** The delay before reconnect attempt n (0-based): base·2^n, capped. */
export function backoffDelay(attempt: number, baseMs = 500, maxMs = 15000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
}

/** The stream URL with the resume id and the token (EventSource cannot send
 * headers, so the token goes in the query when reads require it). */
export function streamUrl(base: string, lastEventId: string | null, token?: string | null): string {
  const u = new URL(base, typeof window !== "undefined" ? window.location.href : "http://localhost/");
  if (lastEventId) u.searchParams.set("last_event_id", lastEventId);
  if (token) u.searchParams.set("access_token", token);
  return u.toString();
}

export class StreamClient {
  private es: EventSourceLike | null = null;
  private lastId: string | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private stopped = false;
  private readonly opts: Required<Pick<StreamOptions, "baseDelayMs" | "maxDelayMs">> & StreamOptions;

  constructor(opts: StreamOptions) {
    this.opts = { baseDelayMs: 500, maxDelayMs: 15000, ...opts };
  }

  get lastEventId(): string | null {
    return this.lastId;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) (this.opts.cancel ?? clearTimeout)(this.timer as ReturnType<typeof setTimeout>);
    this.timer = null;
    this.es?.close();
    this.es = null;
    this.opts.onState("offline");
  }

  /** Forgets the resume point: the next connection starts with a snapshot. */
  resetResume(): void {
    this.lastId = null;
  }

  private connect(): void {
    const open = this.opts.open ?? ((url: string) => new EventSource(url) as unknown as EventSourceLike);
    const es = open(streamUrl(this.opts.url, this.lastId, this.opts.token));
    this.es = es;
    this.opts.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    es.onopen = () => {
      this.attempt = 0;
      this.opts.onState("live");
    };
    es.onerror = () => {
      if (this.stopped || this.es !== es) return;
      // readyState 0 (CONNECTING) means the browser is already retrying by
      // itself, with Last-Event-ID; 2 (CLOSED) means it gave up.
      if (es.readyState === 0) {
        this.opts.onState("reconnecting");
        return;
      }
      es.close();
      this.es = null;
      this.opts.onState("reconnecting");
      const delay = backoffDelay(this.attempt, this.opts.baseDelayMs, this.opts.maxDelayMs);
      this.attempt++;
      this.timer = (this.opts.schedule ?? setTimeout)(() => {
        this.timer = null;
        if (!this.stopped) this.connect();
      }, delay);
    };
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (ev: MessageEvent) => {
        if (this.es !== es) return;
        if (ev.lastEventId) this.lastId = ev.lastEventId;
        if (type === "reset") this.lastId = null;
        let data: unknown = null;
        try {
          data = JSON.parse(String(ev.data));
        } catch {
          return; // a malformed event is dropped, never breaks the page
        }
        this.opts.onEvent(type, ev.lastEventId || null, data);
      });
    }
  }
}
