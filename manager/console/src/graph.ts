// The path of a trace as an SVG drawn here (no library): the source Pod, then each Node's
// components in hop order inside a box per Node, the tunnel between Nodes (with its
// destination IP), and the destination, or the drop point, highlighted, when a component
// dropped or rejected the packet.
//
//   [source] ─▶ ┌ Node n1 (sender) ───────────────┐ ─tunnel 192.168.77.3─▶ ┌ Node n2 ─────┐ ─▶ [dest]
//               │ [SpoofGuard]─▶[LB]─▶[Output]     │                        │ [✕ Ingress]  │
//               └──────────────────────────────────┘                        └──────────────┘
//
// Component boxes are buttons (click, Enter or Space) that open the same details panel as
// the observations table.
import type { Traceflow } from "./gen/traceflow/v1/traceflow_pb.js";
import * as fmt from "./format.js";
import type { Hop } from "./render.js";
import { isReply } from "./render.js";

const NS = "http://www.w3.org/2000/svg";
const BOX_W = 128;
const BOX_H = 58;
const GAP = 24;
const PAD = 14;
const HEAD = 26;
const LINK = 104; // between Node boxes: room for the tunnel label
const TOP = 16;

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K, attrs: Record<string, string | number>, text?: string,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function clip(s: string, n = 18): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

/** A labelled box (endpoint or component) at x, y; returns its group. */
function box(x: number, y: number, lines: string[], cls: string, title: string): SVGGElement {
  const g = svg("g", { class: cls, transform: `translate(${x},${y})` });
  g.append(svg("title", {}, title));
  g.append(svg("rect", { width: BOX_W, height: BOX_H, rx: 6 }));
  lines.forEach((line, i) => {
    g.append(svg("text", { x: BOX_W / 2, y: 18 + i * 16, "text-anchor": "middle", class: i === 0 ? "strong" : "" }, clip(line)));
  });
  return g;
}

function arrow(x1: number, x2: number, y: number, cls = "edge"): SVGLineElement {
  return svg("line", { x1, y1: y, x2: x2 - 2, y2: y, class: cls, "marker-end": "url(#tf-arrow)" });
}

/** Groups hops by Node, in the order the packet reached them (a Node seen twice, e.g. on a
 *  hairpin through another Node, gets a second group). */
function legs(list: Hop[]): Array<{ node: string; role: string; hops: Hop[] }> {
  const out: Array<{ node: string; role: string; reply: boolean; hops: Hop[] }> = [];
  for (const h of list) {
    const last = out[out.length - 1];
    const reply = isReply(h.node);
    // The reply leg starts a new group even on the same Node (intra-Node traces).
    if (last && last.node === h.node.node && last.reply === reply) last.hops.push(h);
    else out.push({ node: h.node.node, role: reply ? `${h.node.role}, reply` : h.node.role, reply, hops: [h] });
  }
  return out;
}

export function renderGraph(host: HTMLElement, t: Traceflow, list: Hop[], open: (sequence: number) => void): void {
  host.replaceChildren();
  const phase = fmt.phaseName(t.status?.phase ?? 0);
  const groups = legs(list);
  const lastHop = list[list.length - 1];
  const lastAction = lastHop ? fmt.actionName(lastHop.obs.action) : "";
  const dropped = lastAction === "Dropped" || lastAction === "Rejected";
  const running = phase === "Running" || phase === "Pending";

  // Widths: source, then each Node box, then the destination.
  const nodeW = (n: number) => PAD * 2 + n * BOX_W + (n - 1) * GAP;
  let width = 10 + BOX_W + GAP * 2;
  groups.forEach((g, i) => { width += nodeW(g.hops.length) + (i < groups.length - 1 ? LINK : GAP * 2); });
  if (groups.length === 0) width += GAP;
  width += BOX_W + 10;
  const height = TOP + HEAD + BOX_H + PAD * 2 + 10;
  const midY = TOP + HEAD + PAD + BOX_H / 2;

  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-labelledby": "graph-title graph-desc", class: dropped ? "path dropped" : "path",
  });
  const steps = list.map((h) => `${h.node.node} ${fmt.componentName(h.obs.component)}${h.obs.componentInfo ? ` ${h.obs.componentInfo}` : ""} ${fmt.actionName(h.obs.action)}`);
  const destText = fmt.destination(t.spec?.destination) || "destination";
  const ending = dropped
    ? `dropped at ${lastHop.node.node} ${componentLabelPlain(lastHop)}`
    : running ? "in progress" : lastAction === "Delivered" ? `delivered to ${destText}` : `ends with ${lastAction || "no observation"}`;
  root.append(svg("title", { id: "graph-title" }, `Path of ${t.name}: ${ending}`));
  root.append(svg("desc", { id: "graph-desc" }, [fmt.source(t.spec?.source) || "source", ...steps].join(" → ")));
  const defs = svg("defs", {});
  const marker = svg("marker", { id: "tf-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);

  let x = 10;
  const boxY = TOP + HEAD + PAD;
  root.append(box(x, boxY, ["Source", fmt.source(t.spec?.source) || "any"], "endpoint source", `Source ${fmt.source(t.spec?.source)}`));
  x += BOX_W;
  root.append(arrow(x, x + GAP * 2, midY));
  x += GAP * 2;

  groups.forEach((g, gi) => {
    const w = nodeW(g.hops.length);
    const frame = svg("g", { class: "node-frame", "data-node": g.node });
    frame.append(svg("rect", { x, y: TOP, width: w, height: HEAD + BOX_H + PAD * 2, rx: 8 }));
    frame.append(svg("text", { x: x + PAD, y: TOP + 18, class: "strong" }, `Node ${g.node}${g.role ? ` (${g.role})` : ""}`));
    root.append(frame);
    let bx = x + PAD;
    g.hops.forEach((h, hi) => {
      const action = fmt.actionName(h.obs.action);
      const isDrop = dropped && h === lastHop;
      const cls = `hop action-${action}${isDrop ? " drop" : ""}`;
      const label = componentLabelPlain(h);
      const hb = box(bx, boxY, [fmt.componentName(h.obs.component), h.obs.componentInfo || " ", `${isDrop ? "✕ " : ""}${action}`], cls,
        `#${h.obs.sequence} ${label} ${action}${h.obs.networkPolicy ? ` (${h.obs.networkPolicy})` : ""}`);
      hb.dataset.sequence = String(h.obs.sequence);
      hb.setAttribute("tabindex", "0");
      hb.setAttribute("role", "button");
      hb.setAttribute("aria-label", `Details of #${h.obs.sequence} ${label} ${action} on ${g.node}${isDrop ? ", the drop point" : ""}`);
      hb.addEventListener("click", () => open(h.obs.sequence));
      hb.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open(h.obs.sequence);
        }
      });
      root.append(hb);
      bx += BOX_W;
      if (hi < g.hops.length - 1) {
        root.append(arrow(bx, bx + GAP, midY));
        bx += GAP;
      }
    });
    x += w;
    if (gi < groups.length - 1) {
      const tunnel = g.hops.map((h) => h.obs.tunnelDstIp).filter(Boolean).pop();
      const link = svg("g", { class: "tunnel" });
      link.append(arrow(x, x + LINK, midY, "edge tunnel-edge"));
      link.append(svg("text", { x: x + LINK / 2, y: midY - 8, "text-anchor": "middle" }, "tunnel"));
      if (tunnel) link.append(svg("text", { x: x + LINK / 2, y: midY + 16, "text-anchor": "middle", class: "small" }, tunnel));
      root.append(link);
      x += LINK;
    }
  });

  // The destination: reached, not reached (after a drop), or still to come.
  const reached = !dropped && !running && list.length > 0;
  const destCls = `endpoint destination${reached ? "" : " unreached"}`;
  const status = dropped ? "not reached" : running ? "…" : lastAction === "Delivered" ? "delivered" : lastAction || "no observations";
  if (!dropped) root.append(arrow(x, x + GAP * 2, midY, reached ? "edge" : "edge pending"));
  x += GAP * 2;
  root.append(box(x, boxY, ["Destination", destText, status], destCls, `Destination ${destText}: ${status}`));
  host.append(root);
}

function componentLabelPlain(h: Hop): string {
  const c = fmt.componentName(h.obs.component);
  return h.obs.componentInfo ? `${c} ${h.obs.componentInfo}` : c;
}
