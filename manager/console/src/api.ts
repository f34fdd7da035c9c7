// The manager's API over gRPC-Web, same origin as this page, with the signed-in bearer token.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { TraceflowService } from "./gen/traceflow/v1/traceflow_pb.js";
import { ClusterService, UserService } from "./gen/traceflow/v1/fleet_pb.js";

const TOKEN_KEY = "traceflow.console.token";

/** The bearer token of this tab: sessionStorage only (never a URL, never localStorage). */
export const session = {
  get(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear(): void {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export interface Api {
  traces: Client<typeof TraceflowService>;
  clusters: Client<typeof ClusterService>;
  users: Client<typeof UserService>;
}

/** Clients that send `authorization: Bearer <token>` on every call. */
export function connect(token: string): Api {
  const auth: Interceptor = (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({
    baseUrl: window.location.origin,
    interceptors: [auth],
  });
  return {
    traces: createClient(TraceflowService, transport),
    clusters: createClient(ClusterService, transport),
    users: createClient(UserService, transport),
  };
}

const TITLES: Partial<Record<Code, string>> = {
  [Code.PermissionDenied]: "Permission denied",
  [Code.Unauthenticated]: "Not signed in",
  [Code.InvalidArgument]: "Invalid request",
  [Code.NotFound]: "Not found",
  [Code.FailedPrecondition]: "Cannot run now",
  [Code.ResourceExhausted]: "Too many traces",
  [Code.Unavailable]: "Manager unreachable",
  [Code.DeadlineExceeded]: "Timed out",
  [Code.AlreadyExists]: "Already exists",
};

/** A message a person can act on: the status title and the manager's own words. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  const title = TITLES[e.code] ?? `Error (${Code[e.code] ?? e.code})`;
  return `${title}: ${e.rawMessage || "no detail from the manager"}`;
}

export function isUnauthenticated(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unauthenticated;
}

export function isAbort(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}
