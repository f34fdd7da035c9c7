// DOM for a trace, as NSX shows it: a summary, a table of observations in hop order (type,
// component, Node, timestamp) whose component opens a details panel, the path graph, and the
// captured packet. Text only (no innerHTML).
import type { NodeResult, Observation, Packet, Traceflow } from "./gen/traceflow/v1/traceflow_pb.js";
import { Direction } from "./gen/traceflow/v1/traceflow_pb.js";
import * as fmt from "./format.js";
import { renderGraph } from "./graph.js";

/** Whether a Node's result belongs to the reply leg of a `reply` trace. */
export function isReply(n: NodeResult): boolean {
  return n.direction === Direction.Reply;
}

/** "n1 (sender)", or "n1 (sender, reply)" on the way back. */
export function nodeLabel(n: NodeResult): string {
  const parts = [n.role, isReply(n) ? "reply" : ""].filter((p) => p);
  return parts.length ? `${n.node} (${parts.join(", ")})` : n.node;
}

export function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`console page has no #${id}`);
  return el;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K, text?: string, cls?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

export function showError(id: string, message: string | null): void {
  const e = $(id);
  e.textContent = message ?? "";
  e.hidden = !message;
}

/** One observation with the Node that reported it. */
export interface Hop {
  node: NodeResult;
  obs: Observation;
}

/** Every observation of every Node, in hop (sequence) order. */
export function hops(t: Traceflow): Hop[] {
  const all: Hop[] = [];
  for (const node of t.status?.results ?? []) for (const obs of node.observations) all.push({ node, obs });
  return all.sort((a, b) => a.obs.sequence - b.obs.sequence);
}

/** The component as NSX names it: the OVS table (componentInfo) when there is one. */
export function componentLabel(o: Observation): string {
  const c = fmt.componentName(o.component);
  return o.componentInfo ? `${c} · ${o.componentInfo}` : c;
}

/** Details fields of an observation, in a reader's order: [label, value]. */
function detailFields(h: Hop, first: bigint): Array<[string, string]> {
  const o = h.obs;
  const rows: Array<[string, string]> = [
    ["Component", fmt.componentName(o.component)],
    ["Table", o.componentInfo],
    ["Observation type", fmt.actionName(o.action)],
    ["Node", nodeLabel(h.node)],
    ["Policy", o.networkPolicy],
    ["Rule", o.networkPolicyRule],
    ["Endpoint Pod", o.pod],
    ["Translated source IP", o.translatedSrcIp],
    ["Translated destination IP", o.translatedDstIp],
    ["Tunnel destination IP", o.tunnelDstIp],
    ["Egress", o.egress],
    ["Egress IP", o.egressIp],
    ["Egress Node", o.egressNode],
    ["Source Pod IP", o.srcPodIp],
    ["Destination MAC", o.dstMac],
    ["TTL", o.ttl ? String(o.ttl) : ""],
    ["Sequence", String(o.sequence)],
    ["Timestamp", fmt.micros(o.timestampMicros)],
    ["Offset", o.timestampMicros && first ? fmt.offset(o.timestampMicros - first) : ""],
  ];
  return rows.filter(([, v]) => v !== "");
}

let current: Hop[] = [];
let firstMicros = 0n;
let openSequence: number | null = null;

/** Opens the details panel for the observation with `sequence`; focus moves to it. */
export function openDetails(sequence: number, focus = true): void {
  const h = current.find((x) => x.obs.sequence === sequence);
  if (!h) return;
  openSequence = sequence;
  const panel = $("details");
  panel.hidden = false;
  panel.dataset.sequence = String(sequence);
  $("details-title").textContent = `Details: #${sequence} ${componentLabel(h.obs)} ${fmt.actionName(h.obs.action)}`;
  const dl = $("details-fields");
  dl.replaceChildren();
  for (const [k, v] of detailFields(h, firstMicros)) {
    const dd = el("dd", v);
    dd.dataset.field = k;
    dl.append(el("dt", k), dd);
  }
  for (const b of document.querySelectorAll<HTMLButtonElement>("#observations button.component")) {
    b.setAttribute("aria-expanded", String(Number(b.dataset.sequence) === sequence));
  }
  if (focus) $("details-title").focus();
}

export function closeDetails(): void {
  const seq = openSequence;
  openSequence = null;
  $("details").hidden = true;
  for (const b of document.querySelectorAll<HTMLButtonElement>("#observations button.component")) {
    b.setAttribute("aria-expanded", "false");
  }
  if (seq !== null) {
    document.querySelector<HTMLButtonElement>(`#observations button.component[data-sequence="${seq}"]`)?.focus();
  }
}

function observationsTable(list: Hop[], phase: string): void {
  const body = $("observations").querySelector("tbody");
  if (!body) return;
  body.replaceChildren();
  for (const h of list) {
    const o = h.obs;
    const action = fmt.actionName(o.action);
    const tr = el("tr");
    tr.dataset.sequence = String(o.sequence);
    tr.dataset.component = fmt.componentName(o.component);
    tr.dataset.componentInfo = o.componentInfo;
    tr.dataset.action = action;
    tr.dataset.node = h.node.node;
    const button = el("button", componentLabel(o), "component link");
    button.type = "button";
    button.dataset.sequence = String(o.sequence);
    button.setAttribute("aria-controls", "details");
    button.setAttribute("aria-expanded", "false");
    button.addEventListener("click", () => openDetails(o.sequence));
    const comp = el("td");
    comp.append(button);
    const when = el("td");
    when.append(el("span", fmt.micros(o.timestampMicros)));
    if (o.timestampMicros && firstMicros) when.append(el("span", ` ${fmt.offset(o.timestampMicros - firstMicros)}`, "help"));
    tr.append(
      el("td", String(o.sequence)),
      el("td", action, `action action-${action}`),
      comp,
      el("td", nodeLabel(h.node)),
      when,
    );
    body.append(tr);
  }
  const empty = $("observations-empty");
  empty.hidden = list.length > 0;
  empty.textContent = phase === "Running" || phase === "Pending" ? "Waiting for observations…" : "No observations.";
}

function packetFields(dl: HTMLElement, p: Packet): void {
  dl.replaceChildren();
  const add = (k: string, v: string) => {
    if (!v) return;
    dl.append(el("dt", k), el("dd", v));
  };
  add("Source IP", p.srcIp);
  add("Destination IP", p.dstIp);
  add("Length", p.length ? String(p.length) : "");
  add("Summary", fmt.packet(p));
  if (p.ipHeader) add("TTL / flags", `${p.ipHeader.ttl} / ${p.ipHeader.flags}`);
  if (p.ipv6Header) add("Hop limit", String(p.ipv6Header.hopLimit));
}

/** Shows `t` in the trace section (replacing what was there; an open details panel stays
 *  open on the same observation when it still exists). */
export function renderTrace(t: Traceflow): void {
  const s = t.status;
  const phase = fmt.phaseName(s?.phase ?? 0);
  const same = $("trace").dataset.uid === t.uid;
  $("trace").hidden = false;
  $("trace").dataset.uid = t.uid;
  $("trace").dataset.name = t.name;
  $("trace-name").textContent = t.name;
  const ph = $("trace-phase");
  ph.textContent = phase;
  ph.className = `phase-${phase}`;
  $("trace-cluster").textContent = t.cluster;
  $("trace-source").textContent = fmt.source(t.spec?.source);
  $("trace-destination").textContent = fmt.destination(t.spec?.destination);
  const live = t.spec?.liveTraffic ? ` (live traffic${t.spec.droppedOnly ? ", dropped only" : ""})` : "";
  const reply = t.spec?.reply ? " (and its reply)" : "";
  $("trace-packet").textContent = fmt.packet(t.spec?.packet) + live + reply;
  $("trace-created").textContent = `${fmt.micros(t.creationTimeMicros)}${t.createdBy ? ` by ${t.createdBy}` : ""}`;
  $("trace-duration").textContent = fmt.duration(t);
  $("trace-reason").textContent = s?.reason || "—";

  current = hops(t);
  firstMicros = current.find((h) => h.obs.timestampMicros !== 0n)?.obs.timestampMicros ?? 0n;
  observationsTable(current, phase);
  renderGraph($("graph"), t, current, (seq) => openDetails(seq));
  if (same && openSequence !== null && current.some((h) => h.obs.sequence === openSequence)) {
    openDetails(openSequence, false);
  } else {
    openSequence = null;
    $("details").hidden = true;
  }
  const cap = s?.capturedPacket;
  $("captured").hidden = !cap;
  if (cap) packetFields($("captured-packet"), cap);
}
