// Connect clients for the orchestrator's APIs (the dashboard talks only to
// the orchestrator, which forwards simulation control to the engine).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ActionService } from "@/gen/ops/v1/action_service_pb";
import { SimulationService } from "@/gen/sim/v1/simulation_pb";

export function apiBaseUrl(): string {
  const env = process.env.NEXT_PUBLIC_API_URL;
  if (env) return env;
  return typeof window !== "undefined" ? window.location.origin : "http://localhost:8081";
}

export function streamBaseUrl(): string {
  return process.env.NEXT_PUBLIC_STREAM_URL || `${apiBaseUrl()}/api/stream`;
}

export function createClients(getToken: () => string | null) {
  const auth: Interceptor = (next) => async (req) => {
    const t = getToken();
    if (t) req.header.set("Authorization", `Bearer ${t}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl: apiBaseUrl(), interceptors: [auth], useBinaryFormat: false });
  return {
    actions: createClient(ActionService, transport),
    sim: createClient(SimulationService, transport),
  };
}

export type Clients = ReturnType<typeof createClients>;

/** A message a person can act on, for any failed call. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  switch (e.code) {
    case Code.Unauthenticated:
      return "Not authorized: the token is missing or wrong. Open the URL that `make run` printed, or paste the token.";
    case Code.PermissionDenied:
      return "Permission denied for this token.";
    case Code.Unavailable:
      return `The service is unavailable: ${e.rawMessage}`;
    case Code.FailedPrecondition:
      return `Not possible now: ${e.rawMessage}`;
    case Code.NotFound:
      return `Not found: ${e.rawMessage}`;
    case Code.InvalidArgument:
      return `Invalid input: ${e.rawMessage}`;
    default:
      return e.rawMessage || e.message;
  }
}
