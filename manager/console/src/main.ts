// The console: sign in with a bearer token, clusters with health, a trace form fed by the
// inventory, a live view of a running trace (WatchTraceflow), and the trace history.
//
//   sign in ─▶ ListClusters (proves the token), WhoAmI (the header's name and role)
//           ─▶ clusters table, cluster selects
//   cluster ─▶ ListNamespaces / ListPods / ListServices ─▶ source and destination dropdowns
//   Start ─▶ CreateTraceflow ─▶ WatchTraceflow (snapshots until terminal) ─▶ renderTrace
//   History ─▶ ListTraceflows (cluster filter, pages) ─▶ Open ─▶ GetTraceflow (+ watch)
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Api, connect, describe, isAbort, isUnauthenticated, session } from "./api.js";
import {
  type CreateTraceflowRequestSchema, type Traceflow, TraceflowPhase,
} from "./gen/traceflow/v1/traceflow_pb.js";
import { type InventoryPod, type InventoryService, Role } from "./gen/traceflow/v1/fleet_pb.js";
import * as fmt from "./format.js";
import { $, el, renderTrace, showError } from "./render.js";

let api: Api | null = null;
let watching: AbortController | null = null;
let pods: InventoryPod[] = [];
let services: InventoryService[] = [];
let namespaces: string[] = [];
let historyToken = "";
let historyNext = "";

function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}
function select(id: string): HTMLSelectElement {
  return $(id) as HTMLSelectElement;
}

function fillSelect(s: HTMLSelectElement, options: Array<[string, string]>, keep = true): void {
  const old = s.value;
  s.replaceChildren(...options.map(([value, label]) => {
    const o = el("option", label);
    o.value = value;
    return o;
  }));
  if (keep && options.some(([v]) => v === old)) s.value = old;
}

// ---------------------------------------------------------------------------------------------
// Session.

async function signIn(token: string, fromStorage: boolean): Promise<void> {
  const candidate = connect(token);
  const button = $("signin-submit") as HTMLButtonElement;
  button.disabled = true;
  try {
    const list = await candidate.clusters.listClusters({});
    const me = await candidate.users.whoAmI({});
    $("session-label").textContent = `Signed in as ${me.name} (${Role[me.role] ?? "unknown role"})`;
    session.set(token);
    api = candidate;
    input("token").value = "";
    showError("signin-error", null);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    renderClusters(list.clusters);
    await loadInventory();
    await loadHistory("");
  } catch (err) {
    if (isUnauthenticated(err)) session.clear();
    const prefix = fromStorage ? "Your session ended" : "Sign-in failed";
    showError("signin-error", `${prefix}. ${describe(err)}`);
  } finally {
    button.disabled = false;
  }
}

function signOut(): void {
  watching?.abort();
  session.clear();
  api = null;
  $("app").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  $("trace").hidden = true;
  input("token").focus();
}

/** Runs `f` with the API; an expired or revoked token sends the user back to sign in. */
async function withApi(errorId: string, f: (api: Api) => Promise<void>): Promise<void> {
  if (!api) return;
  showError(errorId, null);
  try {
    await f(api);
  } catch (err) {
    if (isUnauthenticated(err)) {
      signOut();
      showError("signin-error", `Your session ended. ${describe(err)}`);
      return;
    }
    showError(errorId, describe(err));
  }
}

// ---------------------------------------------------------------------------------------------
// Clusters and inventory.

function renderClusters(clusters: Awaited<ReturnType<Api["clusters"]["listClusters"]>>["clusters"]): void {
  const body = $("clusters").querySelector("tbody");
  if (!body) return;
  body.replaceChildren();
  for (const c of clusters) {
    const tr = el("tr");
    tr.dataset.cluster = c.name;
    const health = fmt.healthName(c.health);
    tr.append(
      el("td", c.name),
      el("td", health, `health-${health}`),
      el("td", `${c.connectedAgents} / ${c.expectedAgents}`),
      el("td", fmt.micros(c.lastHeartbeatMicros) || "never"),
    );
    body.append(tr);
  }
  if (clusters.length === 0) {
    const tr = el("tr");
    const td = el("td", "No clusters registered yet.");
    td.colSpan = 4;
    tr.append(td);
    body.append(tr);
  }
  const names = clusters.map((c): [string, string] => [c.name, `${c.name} (${fmt.healthName(c.health)})`]);
  fillSelect(select("cluster"), names);
  fillSelect(select("history-cluster"), [["", "All clusters"], ...clusters.map((c): [string, string] => [c.name, c.name])]);
}

async function refreshClusters(): Promise<void> {
  await withApi("clusters-error", async (a) => {
    renderClusters((await a.clusters.listClusters({})).clusters);
  });
}

async function all<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  for (let i = 0; i < 100; i++) {
    const r = await page(token);
    out.push(...r.items);
    if (!r.next) break;
    token = r.next;
  }
  return out;
}

async function loadInventory(): Promise<void> {
  const cluster = select("cluster").value;
  if (!cluster) {
    pods = []; services = []; namespaces = [];
    fillForm();
    return;
  }
  await withApi("trace-error", async (a) => {
    const req = (pageToken: string) => ({ cluster, pageSize: 1000, pageToken });
    const [ns, ps, ss] = await Promise.all([
      all(async (t) => { const r = await a.clusters.listNamespaces(req(t)); return { items: r.namespaces, next: r.nextPageToken }; }),
      all(async (t) => { const r = await a.clusters.listPods(req(t)); return { items: r.pods, next: r.nextPageToken }; }),
      all(async (t) => { const r = await a.clusters.listServices(req(t)); return { items: r.services, next: r.nextPageToken }; }),
    ]);
    namespaces = [...new Set([...ns.map((n) => n.name), ...ps.map((p) => p.namespace)])].sort();
    pods = ps.sort((x, y) => x.name.localeCompare(y.name));
    services = ss.sort((x, y) => x.name.localeCompare(y.name));
    fillForm();
  });
}

function podOptions(ns: string): Array<[string, string]> {
  return pods.filter((p) => p.namespace === ns).map((p): [string, string] =>
    [p.name, `${p.name} (${p.ips.join(", ") || "no IP"}${p.node ? `, ${p.node}` : ""})`]);
}

/** Fills the source and destination dropdowns from the loaded inventory. */
function fillForm(): void {
  const nsOptions = namespaces.map((n): [string, string] => [n, n]);
  fillSelect(select("src-namespace"), nsOptions);
  fillSelect(select("dst-namespace"), nsOptions);
  fillSelect(select("src-pod"), [["", "— none (live traffic only) —"], ...podOptions(select("src-namespace").value)]);
  if (select("src-pod").value === "" && select("src-pod").options.length > 1) select("src-pod").selectedIndex = 1;
  fillSelect(select("dst-pod"), podOptions(select("dst-namespace").value));
  fillSelect(select("dst-service"), services.filter((s) => s.namespace === select("dst-namespace").value)
    .map((s): [string, string] => [s.name, `${s.name} (${s.clusterIps.join(", ")})`]));
  syncForm();
}

/** Shows the fields the chosen destination type and protocol need. */
function syncForm(): void {
  const kind = select("dst-kind").value;
  $("dst-ns-group").hidden = kind === "ip";
  $("dst-pod-group").hidden = kind !== "pod";
  $("dst-service-group").hidden = kind !== "service";
  $("dst-ip-group").hidden = kind !== "ip";
  const proto = select("protocol").value;
  $("ports-group").hidden = proto === "ICMP";
  $("tcp-flags").hidden = proto !== "TCP";
  const live = input("live-traffic").checked;
  input("dropped-only").disabled = !live;
  if (!live) input("dropped-only").checked = false;
}

// ---------------------------------------------------------------------------------------------
// Traces.

const IP_PROTOCOL: Record<string, number> = { ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 };

function numberField(id: string, label: string): number | undefined {
  const v = input(id).value.trim();
  if (v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`${label} must be a whole number`);
  return n;
}

function buildRequest(): MessageInitShape<typeof CreateTraceflowRequestSchema> {
  const cluster = select("cluster").value;
  if (!cluster) throw new Error("Choose a cluster");
  const srcPod = select("src-pod").value;
  const source = srcPod ? { namespace: select("src-namespace").value, pod: srcPod } : undefined;
  const kind = select("dst-kind").value;
  const ns = select("dst-namespace").value;
  let destination;
  if (kind === "pod") destination = { namespace: ns, pod: select("dst-pod").value };
  else if (kind === "service") destination = { namespace: ns, service: select("dst-service").value };
  else destination = { ip: input("dst-ip").value.trim() };
  const v6 = select("ip-family").value === "6";
  const proto = select("protocol").value;
  const number = proto === "ICMP" && v6 ? 58 : IP_PROTOCOL[proto];
  const srcPort = numberField("src-port", "Source port") ?? 0;
  const dstPort = numberField("dst-port", "Destination port") ?? 0;
  let transportHeader;
  if (proto === "TCP") {
    let flags = 0;
    for (const c of $("tcp-flags").querySelectorAll<HTMLInputElement>("input[type=checkbox]")) {
      if (c.checked) flags |= Number(c.value);
    }
    transportHeader = { tcp: { srcPort, dstPort, flags } };
  } else if (proto === "UDP") {
    transportHeader = { udp: { srcPort, dstPort } };
  } else if (proto === "SCTP") {
    transportHeader = { sctp: { srcPort, dstPort } };
  }
  const packet = v6
    ? { ipv6Header: { nextHeader: number }, transportHeader }
    : { ipHeader: { protocol: number }, transportHeader };
  return {
    cluster,
    spec: {
      source,
      destination,
      packet,
      liveTraffic: input("live-traffic").checked,
      droppedOnly: input("dropped-only").checked,
      timeout: numberField("timeout", "Timeout") ?? 0,
    },
  };
}

function terminal(t: Traceflow): boolean {
  const p = t.status?.phase;
  return p === TraceflowPhase.Succeeded || p === TraceflowPhase.Failed;
}

/** Follows `uid` until it ends (or another trace is opened), re-rendering each snapshot. */
async function watch(uid: string): Promise<void> {
  watching?.abort();
  const ctl = new AbortController();
  watching = ctl;
  showError("trace-watch-error", null);
  if (!api) return;
  try {
    for await (const t of api.traces.watchTraceflow({ uid }, { signal: ctl.signal })) {
      renderTrace(t);
      if (terminal(t)) break;
    }
    await loadHistory(historyToken);
  } catch (err) {
    if (!isAbort(err) && !ctl.signal.aborted) showError("trace-watch-error", `Watching stopped. ${describe(err)}`);
  } finally {
    if (watching === ctl) watching = null;
  }
}

async function startTrace(): Promise<void> {
  showError("trace-error", null);
  let req;
  try {
    req = buildRequest();
  } catch (err) {
    showError("trace-error", err instanceof Error ? err.message : String(err));
    return;
  }
  const button = $("trace-start") as HTMLButtonElement;
  button.disabled = true;
  try {
    await withApi("trace-error", async (a) => {
      const t = await a.traces.createTraceflow(req);
      renderTrace(t);
      void watch(t.uid);
    });
  } finally {
    button.disabled = false;
  }
}

async function openTrace(uid: string): Promise<void> {
  await withApi("history-error", async (a) => {
    const t = await a.traces.getTraceflow({ uid });
    renderTrace(t);
    $("trace").scrollIntoView();
    if (!terminal(t)) void watch(uid);
    else watching?.abort();
  });
}

// ---------------------------------------------------------------------------------------------
// History.

async function loadHistory(pageToken: string): Promise<void> {
  await withApi("history-error", async (a) => {
    const r = await a.traces.listTraceflows({
      cluster: select("history-cluster").value,
      pageSize: 20,
      pageToken,
    });
    historyToken = pageToken;
    historyNext = r.nextPageToken;
    const body = $("history-table").querySelector("tbody");
    if (!body) return;
    body.replaceChildren();
    for (const t of r.traceflows) {
      const tr = el("tr");
      tr.dataset.uid = t.uid;
      tr.dataset.name = t.name;
      const phase = fmt.phaseName(t.status?.phase ?? 0);
      const open = el("button", "Open");
      open.type = "button";
      open.setAttribute("aria-label", `Open trace ${t.name}`);
      open.addEventListener("click", () => void openTrace(t.uid));
      const cell = el("td");
      cell.append(open);
      tr.append(
        el("td", t.name), el("td", t.cluster), el("td", fmt.source(t.spec?.source)),
        el("td", fmt.destination(t.spec?.destination)), el("td", phase, `phase-${phase}`),
        el("td", fmt.micros(t.creationTimeMicros)), el("td", t.createdBy), cell,
      );
      body.append(tr);
    }
    if (r.traceflows.length === 0) {
      const tr = el("tr");
      const td = el("td", "No traces.");
      td.colSpan = 8;
      tr.append(td);
      body.append(tr);
    }
    ($("history-next") as HTMLButtonElement).disabled = !historyNext;
    ($("history-first") as HTMLButtonElement).disabled = !historyToken;
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring.

function main(): void {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = input("token").value.trim();
    if (!token) {
      showError("signin-error", "Enter a bearer token.");
      return;
    }
    void signIn(token, false);
  });
  $("signout").addEventListener("click", signOut);
  $("clusters-refresh").addEventListener("click", () => void refreshClusters());
  select("cluster").addEventListener("change", () => void loadInventory());
  for (const id of ["src-namespace", "dst-namespace"]) select(id).addEventListener("change", fillForm);
  for (const id of ["dst-kind", "protocol", "live-traffic"]) $(id).addEventListener("change", syncForm);
  $("trace-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void startTrace();
  });
  select("history-cluster").addEventListener("change", () => void loadHistory(""));
  $("history-refresh").addEventListener("click", () => void loadHistory(historyToken));
  $("history-first").addEventListener("click", () => void loadHistory(""));
  $("history-next").addEventListener("click", () => void loadHistory(historyNext));
  syncForm();
  const token = session.get();
  if (token) void signIn(token, true);
  else input("token").focus();
}

main();
