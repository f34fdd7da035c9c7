// The console: sign in with a bearer token, then three pages (Trace, History, Clusters).
//
//   sign in ─▶ ListClusters (proves the token), WhoAmI (the header's name and role)
//           ─▶ cluster list (type-to-filter), clusters page (health, agents, inventory counts)
//   cluster ─▶ ListNodes / ListNamespaces / ListPods / ListServices ─▶ Node and Namespace
//              filters, source and destination dropdowns
//   Trace ─▶ CreateTraceflow ─▶ WatchTraceflow (snapshots until terminal) ─▶ renderTrace
//   History ─▶ ListTraceflows (cluster, phase, pages) ─▶ Open (Get + watch), Retrace, Delete
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Api, connect, describe, isAbort, isUnauthenticated, session } from "./api.js";
import {
  type CreateTraceflowRequestSchema, type Traceflow, TraceflowPhase,
} from "./gen/traceflow/v1/traceflow_pb.js";
import { type Cluster, type InventoryPod, type InventoryService, Role } from "./gen/traceflow/v1/fleet_pb.js";
import * as fmt from "./format.js";
import { $, closeDetails, el, renderTrace, showError } from "./render.js";

let api: Api | null = null;
let watching: AbortController | null = null;
let clusterNames: string[] = [];
let pods: InventoryPod[] = [];
let services: InventoryService[] = [];
let namespaces: string[] = [];
let nodes: string[] = [];
let inventoryOf = "";
let historyToken = "";
let historyNext = "";
let historyPage = 1;
// Filters change faster than answers arrive: only the newest request's answer is shown.
let historyRequest = 0;

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
// Pages.

type View = "trace" | "history" | "clusters";

function show(view: View): void {
  for (const v of ["trace", "history", "clusters"] as View[]) $(`view-${v}`).hidden = v !== view;
  for (const b of document.querySelectorAll<HTMLButtonElement>("#nav .tab")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  if (view === "history") void loadHistory(historyToken, historyPage);
  if (view === "clusters") void refreshClusters();
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
    $("nav").hidden = false;
    renderClusters(list.clusters);
    show("trace");
    await loadInventory();
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
  $("nav").hidden = true;
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

function renderClusters(clusters: Cluster[]): void {
  const body = $("clusters").querySelector("tbody");
  if (!body) return;
  body.replaceChildren();
  for (const c of clusters) {
    const tr = el("tr");
    tr.dataset.cluster = c.name;
    const health = fmt.healthName(c.health);
    const inv = c.inventory;
    const short = c.connectedAgents < c.expectedAgents;
    tr.append(
      el("th", c.name),
      el("td", health, `health-${health}`),
      el("td", `${c.connectedAgents} / ${c.expectedAgents}`, short ? "health-Degraded" : ""),
      el("td", String(inv?.nodes ?? 0)),
      el("td", String(inv?.namespaces ?? 0)),
      el("td", String(inv?.pods ?? 0)),
      el("td", String(inv?.services ?? 0)),
      el("td", String(inv?.policies ?? 0)),
      el("td", fmt.micros(c.lastHeartbeatMicros) || "never"),
    );
    (tr.firstElementChild as HTMLElement).setAttribute("scope", "row");
    body.append(tr);
  }
  if (clusters.length === 0) {
    const tr = el("tr");
    const td = el("td", "No clusters registered yet.");
    td.colSpan = 9;
    tr.append(td);
    body.append(tr);
  }
  clusterNames = clusters.map((c) => c.name);
  const list = $("cluster-list");
  list.replaceChildren(...clusters.map((c) => {
    const o = el("option", `${fmt.healthName(c.health)}, ${c.connectedAgents}/${c.expectedAgents} agents`);
    o.value = c.name;
    return o;
  }));
  const box = input("cluster");
  if (!clusterNames.includes(box.value)) box.value = clusterNames.length === 1 ? clusterNames[0] : "";
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
  const cluster = input("cluster").value.trim();
  if (!clusterNames.includes(cluster)) {
    pods = []; services = []; namespaces = []; nodes = []; inventoryOf = "";
    fillForm();
    return;
  }
  if (cluster === inventoryOf) return;
  await withApi("trace-error", async (a) => {
    const req = (pageToken: string) => ({ cluster, pageSize: 1000, pageToken });
    const [ns, ps, ss, ns2] = await Promise.all([
      all(async (t) => { const r = await a.clusters.listNamespaces(req(t)); return { items: r.namespaces, next: r.nextPageToken }; }),
      all(async (t) => { const r = await a.clusters.listPods(req(t)); return { items: r.pods, next: r.nextPageToken }; }),
      all(async (t) => { const r = await a.clusters.listServices(req(t)); return { items: r.services, next: r.nextPageToken }; }),
      all(async (t) => { const r = await a.clusters.listNodes(req(t)); return { items: r.nodes, next: r.nextPageToken }; }),
    ]);
    namespaces = [...new Set([...ns.map((n) => n.name), ...ps.map((p) => p.namespace)])].sort();
    nodes = [...new Set([...ns2.map((n) => n.name), ...ps.map((p) => p.node).filter(Boolean)])].sort();
    pods = ps.sort((x, y) => x.namespace.localeCompare(y.namespace) || x.name.localeCompare(y.name));
    services = ss.sort((x, y) => x.namespace.localeCompare(y.namespace) || x.name.localeCompare(y.name));
    inventoryOf = cluster;
    fillForm();
  });
}

/** Pods matching a Node and Namespace filter ("" = any), as `namespace/name` options. */
function podOptions(node: string, ns: string, hostNetworkOk: boolean): Array<[string, string]> {
  return pods
    .filter((p) => (!node || p.node === node) && (!ns || p.namespace === ns) && (hostNetworkOk || !p.hostNetwork))
    .map((p): [string, string] => [`${p.namespace}/${p.name}`,
      `${p.namespace}/${p.name} (${p.ips.join(", ") || "no IP"}${p.node ? `, ${p.node}` : ""})`]);
}

/** Fills the filters and the source and destination dropdowns from the loaded inventory. */
function fillForm(): void {
  const any = (label: string, list: string[]): Array<[string, string]> =>
    [["", label], ...list.map((n): [string, string] => [n, n])];
  for (const id of ["src-node", "dst-node"]) fillSelect(select(id), any("All Nodes", nodes));
  for (const id of ["src-namespace", "dst-namespace"]) fillSelect(select(id), any("All namespaces", namespaces));
  // Source: Pods only, never hostNetwork (NSX and Antrea refuse them for injected traces).
  fillSelect(select("src-pod"), [["", "— none (live traffic only) —"],
    ...podOptions(select("src-node").value, select("src-namespace").value, false)]);
  if (select("src-pod").value === "" && select("src-pod").options.length > 1) select("src-pod").selectedIndex = 1;
  fillSelect(select("dst-pod"), podOptions(select("dst-node").value, select("dst-namespace").value, true));
  const dstNs = select("dst-namespace").value;
  fillSelect(select("dst-service"), services.filter((s) => !dstNs || s.namespace === dstNs)
    .map((s): [string, string] => [`${s.namespace}/${s.name}`, `${s.namespace}/${s.name} (${s.clusterIps.join(", ")})`]));
  syncForm();
}

/** Shows the fields the chosen destination type and protocol need. */
function syncForm(): void {
  const kind = select("dst-kind").value;
  $("dst-node-group").hidden = kind !== "pod";
  $("dst-ns-group").hidden = kind === "ip";
  $("dst-pod-group").hidden = kind !== "pod";
  $("dst-service-group").hidden = kind !== "service";
  $("dst-ip-group").hidden = kind !== "ip";
  const proto = select("protocol").value;
  for (const e of document.querySelectorAll<HTMLElement>("#packet-group .ports")) e.hidden = proto === "ICMP";
  $("icmp-id-group").hidden = proto !== "ICMP";
  $("icmp-seq-group").hidden = proto !== "ICMP";
  $("tcp-flags").hidden = proto !== "TCP";
  $("ttl-label").textContent = select("ip-family").value === "6" ? "Hop limit" : "TTL";
  const live = input("live-traffic").checked;
  // An injected packet to a Pod or IP needs a destination port; a Service lends its own, and
  // for live traffic the port is only a filter.
  const portOptional = live || kind === "service";
  input("dst-port").required = !portOptional && proto !== "ICMP";
  $("dst-port-help").textContent = live ? "Empty: any port."
    : kind === "service" ? "Empty: the Service's port." : "Required for a Pod or IP destination.";
  input("dropped-only").disabled = !live;
  if (!live) input("dropped-only").checked = false;
  // The reply leg follows an injected packet only.
  input("reply").disabled = live;
  if (live) input("reply").checked = false;
}

// ---------------------------------------------------------------------------------------------
// Traces.

const IP_PROTOCOL: Record<string, number> = { ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 };

function numberField(id: string, label: string, min: number, max: number): number {
  const v = input(id).value.trim();
  if (v === "") return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${label} must be a whole number from ${min} to ${max}`);
  return n;
}

function split(nsName: string): { namespace: string; name: string } {
  const i = nsName.indexOf("/");
  return { namespace: nsName.slice(0, i), name: nsName.slice(i + 1) };
}

function buildRequest(): MessageInitShape<typeof CreateTraceflowRequestSchema> {
  const cluster = input("cluster").value.trim();
  if (!cluster) throw new Error("Choose a cluster");
  if (!clusterNames.includes(cluster)) throw new Error(`No registered cluster is named ${cluster}; pick one from the list`);
  const srcPod = select("src-pod").value;
  const source = srcPod ? { namespace: split(srcPod).namespace, pod: split(srcPod).name } : undefined;
  const kind = select("dst-kind").value;
  let destination;
  if (kind === "pod") {
    if (!select("dst-pod").value) throw new Error("Choose a destination Pod (or clear the Node and Namespace filters)");
    const d = split(select("dst-pod").value);
    destination = { namespace: d.namespace, pod: d.name };
  } else if (kind === "service") {
    if (!select("dst-service").value) throw new Error("Choose a destination Service");
    const d = split(select("dst-service").value);
    destination = { namespace: d.namespace, service: d.name };
  } else {
    const ip = input("dst-ip").value.trim();
    if (!ip) throw new Error("Enter a destination IP address");
    destination = { ip };
  }
  const v6 = select("ip-family").value === "6";
  const proto = select("protocol").value;
  const number = proto === "ICMP" && v6 ? 58 : IP_PROTOCOL[proto];
  const ttl = numberField("ttl", v6 ? "Hop limit" : "TTL", 0, 255);
  const srcPort = numberField("src-port", "Source port", 0, 65535);
  const dstPort = numberField("dst-port", "Destination port", 0, 65535);
  if (proto !== "ICMP" && dstPort === 0 && !input("live-traffic").checked && kind !== "service") {
    throw new Error(`Enter a destination port (1 to 65535): an injected ${proto} packet to a Pod or IP needs one`);
  }
  let transportHeader;
  if (proto === "ICMP") {
    transportHeader = { icmp: { id: numberField("icmp-id", "Identifier", 0, 65535), sequence: numberField("icmp-seq", "Sequence", 0, 65535) } };
  } else if (proto === "TCP") {
    let flags = 0;
    for (const c of $("tcp-flags").querySelectorAll<HTMLInputElement>("input[type=checkbox]")) {
      if (c.checked) flags |= Number(c.value);
    }
    transportHeader = { tcp: { srcPort, dstPort, flags } };
  } else if (proto === "UDP") {
    transportHeader = { udp: { srcPort, dstPort } };
  } else {
    transportHeader = { sctp: { srcPort, dstPort } };
  }
  const packet = v6
    ? { ipv6Header: { nextHeader: number, hopLimit: ttl }, transportHeader }
    : { ipHeader: { protocol: number, ttl }, transportHeader };
  return {
    cluster,
    spec: {
      source,
      destination,
      packet,
      liveTraffic: input("live-traffic").checked,
      droppedOnly: input("dropped-only").checked,
      reply: input("reply").checked,
      timeout: numberField("timeout", "Timeout", 1, 300),
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
  } catch (err) {
    if (!isAbort(err) && !ctl.signal.aborted) showError("trace-watch-error", `Watching stopped. ${describe(err)}`);
  } finally {
    if (watching === ctl) watching = null;
  }
}

/** Shows `t` on the Trace page and follows it while it runs. */
function present(t: Traceflow): void {
  show("trace");
  renderTrace(t);
  $("trace").scrollIntoView();
  if (!terminal(t)) void watch(t.uid);
  else watching?.abort();
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
      present(await a.traces.createTraceflow(req));
    });
  } finally {
    button.disabled = false;
  }
}

async function openTrace(uid: string): Promise<void> {
  await withApi("history-error", async (a) => {
    present(await a.traces.getTraceflow({ uid }));
  });
}

async function retrace(uid: string): Promise<void> {
  await withApi("history-error", async (a) => {
    present(await a.traces.retrace({ uid }));
  });
}

async function deleteTrace(uid: string, name: string): Promise<void> {
  await withApi("history-error", async (a) => {
    await a.traces.deleteTraceflow({ uid });
    // The list first: "Deleted" is said of a list that no longer shows the trace.
    await loadHistory(historyToken, historyPage);
    $("history-status").textContent = `Deleted ${name}.`;
  });
}

// ---------------------------------------------------------------------------------------------
// History.

function actionButton(text: string, label: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", text);
  b.type = "button";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

async function loadHistory(pageToken: string, page: number): Promise<void> {
  const mine = ++historyRequest;
  await withApi("history-error", async (a) => {
    const cluster = select("history-cluster").value;
    const phase = Number(select("history-phase").value || 0);
    const r = await a.traces.listTraceflows({ cluster, phase, pageSize: 20, pageToken });
    if (mine !== historyRequest) return;
    // What the table shows, for tests and for reading the DOM: the filters it answers.
    $("history-table").dataset.cluster = cluster;
    $("history-table").dataset.phase = String(phase);
    historyToken = pageToken;
    historyNext = r.nextPageToken;
    historyPage = page;
    const body = $("history-table").querySelector("tbody");
    if (!body) return;
    body.replaceChildren();
    for (const t of r.traceflows) {
      const tr = el("tr");
      tr.dataset.uid = t.uid;
      tr.dataset.name = t.name;
      const phaseText = fmt.phaseName(t.status?.phase ?? 0);
      const cell = el("td", undefined, "actions");
      const del = actionButton("Delete", `Delete trace ${t.name}`, () => {
        // Two steps, no modal: the first click asks, the second deletes.
        if (del.dataset.confirm === "1") void deleteTrace(t.uid, t.name);
        else {
          del.dataset.confirm = "1";
          del.textContent = "Confirm delete";
          del.setAttribute("aria-label", `Confirm delete of trace ${t.name}`);
        }
      });
      del.classList.add("danger");
      cell.append(
        actionButton("Open", `Open trace ${t.name}`, () => void openTrace(t.uid)),
        actionButton("Retrace", `Retrace ${t.name}`, () => void retrace(t.uid)),
        del,
      );
      tr.append(
        el("td", t.name), el("td", t.cluster), el("td", fmt.source(t.spec?.source)),
        el("td", fmt.destination(t.spec?.destination)), el("td", phaseText, `phase-${phaseText}`),
        el("td", fmt.micros(t.creationTimeMicros)), el("td", t.createdBy), cell,
      );
      body.append(tr);
    }
    if (r.traceflows.length === 0) {
      const tr = el("tr");
      const td = el("td", "No traces match.");
      td.colSpan = 8;
      tr.append(td);
      body.append(tr);
    }
    $("history-page").textContent = `Page ${historyPage}`;
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
  for (const b of document.querySelectorAll<HTMLButtonElement>("#nav .tab")) {
    b.addEventListener("click", () => show(b.dataset.view as View));
  }
  $("clusters-refresh").addEventListener("click", () => void refreshClusters());
  for (const ev of ["change", "input"]) input("cluster").addEventListener(ev, () => void loadInventory());
  for (const id of ["src-node", "src-namespace", "dst-node", "dst-namespace"]) select(id).addEventListener("change", fillForm);
  for (const id of ["dst-kind", "protocol", "ip-family", "live-traffic"]) $(id).addEventListener("change", syncForm);
  $("tcp-syn-preset").addEventListener("click", () => {
    for (const c of $("tcp-flags").querySelectorAll<HTMLInputElement>("input[type=checkbox]")) c.checked = c.value === "2";
  });
  // An error is about the values that were submitted: editing any field clears it.
  $("trace-form").addEventListener("change", () => showError("trace-error", null));
  $("trace-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void startTrace();
  });
  $("details-close").addEventListener("click", closeDetails);
  $("details").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDetails();
  });
  select("history-cluster").addEventListener("change", () => void loadHistory("", 1));
  select("history-phase").addEventListener("change", () => void loadHistory("", 1));
  $("history-refresh").addEventListener("click", () => void loadHistory(historyToken, historyPage));
  $("history-first").addEventListener("click", () => void loadHistory("", 1));
  $("history-next").addEventListener("click", () => void loadHistory(historyNext, historyPage + 1));
  syncForm();
  const token = session.get();
  if (token) void signIn(token, true);
  else input("token").focus();
}

main();
