// DOM for a trace: summary, per-Node ordered hops, captured packet. Text only (no innerHTML).
import type { Observation, Packet, Traceflow } from "./gen/traceflow/v1/traceflow_pb.js";
import * as fmt from "./format.js";

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

/** Optional observation fields, in the order a reader wants them. */
const DETAILS: Array<[keyof Observation, string]> = [
  ["networkPolicy", "policy"],
  ["networkPolicyRule", "rule"],
  ["pod", "endpoint pod"],
  ["translatedSrcIp", "translatedSrcIP"],
  ["translatedDstIp", "translatedDstIP"],
  ["tunnelDstIp", "tunnelDstIP"],
  ["srcPodIp", "srcPodIP"],
  ["dstMac", "dstMAC"],
  ["egress", "egress"],
  ["egressIp", "egressIP"],
  ["egressNode", "egressNode"],
  ["ttl", "ttl"],
];

function hop(o: Observation): HTMLLIElement {
  const li = el("li");
  const component = fmt.componentName(o.component);
  const action = fmt.actionName(o.action);
  li.dataset.component = component;
  li.dataset.componentInfo = o.componentInfo;
  li.dataset.action = action;
  li.dataset.sequence = String(o.sequence);
  const head = el("div", undefined, "hop-head");
  head.append(
    el("span", `#${o.sequence} `, "hop-seq"),
    el("span", component, "hop-component"),
    document.createTextNode(" "),
  );
  if (o.componentInfo) head.append(el("span", `${o.componentInfo} `, "hop-info"));
  head.append(el("span", action, `hop-action action-${action}`));
  li.append(head);
  const detail = el("div", undefined, "hop-detail");
  for (const [key, label] of DETAILS) {
    const v = o[key];
    if (v === "" || v === 0 || v === undefined) continue;
    const s = el("span", `${label}: ${String(v)}`);
    s.dataset.field = key;
    detail.append(s);
  }
  if (o.timestampMicros !== 0n) detail.append(el("span", `at ${fmt.micros(o.timestampMicros)}`));
  if (detail.childElementCount > 0) li.append(detail);
  return li;
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

/** Shows `t` in the trace section (replacing what was there). */
export function renderTrace(t: Traceflow): void {
  const s = t.status;
  const phase = fmt.phaseName(s?.phase ?? 0);
  $("trace").hidden = false;
  $("trace").dataset.uid = t.uid;
  $("trace-name").textContent = t.name;
  const ph = $("trace-phase");
  ph.textContent = phase;
  ph.className = `phase-${phase}`;
  $("trace-cluster").textContent = t.cluster;
  $("trace-source").textContent = fmt.source(t.spec?.source);
  $("trace-destination").textContent = fmt.destination(t.spec?.destination);
  const live = t.spec?.liveTraffic ? ` (live traffic${t.spec.droppedOnly ? ", dropped only" : ""})` : "";
  $("trace-packet").textContent = fmt.packet(t.spec?.packet) + live;
  $("trace-created").textContent = `${fmt.micros(t.creationTimeMicros)}${t.createdBy ? ` by ${t.createdBy}` : ""}`;
  $("trace-duration").textContent = fmt.duration(t);
  $("trace-reason").textContent = s?.reason || "—";

  const results = $("trace-results");
  results.replaceChildren();
  const nodes = [...(s?.results ?? [])].sort((a, b) =>
    Math.min(...a.observations.map((o) => o.sequence), Infinity)
    - Math.min(...b.observations.map((o) => o.sequence), Infinity));
  if (nodes.length === 0) {
    results.append(el("p", phase === "Running" || phase === "Pending"
      ? "Waiting for observations…" : "No observations."));
  }
  for (const r of nodes) {
    const div = el("div", undefined, "node");
    div.dataset.node = r.node;
    div.append(el("h3", `Node ${r.node}${r.role ? ` (${r.role})` : ""}`));
    if (r.timestamp !== 0n) div.append(el("p", `reported at ${fmt.seconds(r.timestamp)}`, "help"));
    const ol = el("ol", undefined, "hops");
    ol.setAttribute("aria-label", `Observations on Node ${r.node}`);
    for (const o of [...r.observations].sort((a, b) => a.sequence - b.sequence)) ol.append(hop(o));
    div.append(ol);
    results.append(div);
  }
  const cap = s?.capturedPacket;
  $("captured").hidden = !cap;
  if (cap) packetFields($("captured-packet"), cap);
}
