// Text for the protocol's values: times, enums, endpoints, packets.
import {
  Action, Component, TraceflowPhase,
  type Destination, type Packet, type Source, type Traceflow,
} from "./gen/traceflow/v1/traceflow_pb.js";
import { ClusterHealth } from "./gen/traceflow/v1/fleet_pb.js";

export function micros(us: bigint): string {
  if (us === 0n) return "";
  const ms = Number(us / 1000n);
  const frac = (us % 1_000_000n).toString().padStart(6, "0");
  const d = new Date(ms);
  return `${d.toISOString().slice(0, 19).replace("T", " ")}.${frac} UTC`;
}

/** Whole Unix seconds (a NodeResult's Antrea-style timestamp). */
export function seconds(s: bigint): string {
  if (s === 0n) return "";
  return `${new Date(Number(s) * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function phaseName(p: TraceflowPhase): string {
  return p === TraceflowPhase.PHASE_UNSPECIFIED ? "Unknown" : TraceflowPhase[p];
}

export function healthName(h: ClusterHealth): string {
  return h === ClusterHealth.HEALTH_UNSPECIFIED ? "Unknown" : ClusterHealth[h];
}

export function componentName(c: Component): string {
  return c === Component.COMPONENT_UNSPECIFIED ? "Unknown" : Component[c];
}

export function actionName(a: Action): string {
  return a === Action.ACTION_UNSPECIFIED ? "Unknown" : Action[a];
}

export function source(s: Source | undefined): string {
  if (!s) return "";
  if (s.pod) return `${s.namespace}/${s.pod}`;
  return s.ip;
}

export function destination(d: Destination | undefined): string {
  if (!d) return "";
  if (d.pod) return `Pod ${d.namespace}/${d.pod}`;
  if (d.service) return `Service ${d.namespace}/${d.service}`;
  return d.ip;
}

const PROTOCOLS: Record<number, string> = { 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP" };

export function packet(p: Packet | undefined): string {
  if (!p) return "default (ICMP echo request)";
  const parts: string[] = [];
  const v6 = p.ipv6Header !== undefined;
  parts.push(v6 ? "IPv6" : "IPv4");
  const t = p.transportHeader;
  let proto = v6 ? p.ipv6Header?.nextHeader : p.ipHeader?.protocol;
  if (!proto && t?.tcp) proto = 6;
  if (!proto && t?.udp) proto = 17;
  if (!proto && t?.sctp) proto = 132;
  parts.push(proto ? (PROTOCOLS[proto] ?? `protocol ${proto}`) : v6 ? "ICMPv6" : "ICMP");
  if (p.srcIp) parts.push(`src ${p.srcIp}`);
  if (p.dstIp) parts.push(`dst ${p.dstIp}`);
  const ports = t?.tcp ?? t?.udp ?? t?.sctp;
  if (ports) parts.push(`ports ${ports.srcPort || "any"} → ${ports.dstPort}`);
  if (t?.tcp?.flags !== undefined) parts.push(`flags ${t.tcp.flags}`);
  if (p.length) parts.push(`length ${p.length}`);
  return parts.join(", ");
}

export function duration(t: Traceflow): string {
  const s = t.status;
  if (!s || s.startTimeMicros === 0n) return "";
  if (s.endTimeMicros === 0n) return "in progress";
  const us = s.endTimeMicros - s.startTimeMicros;
  return `${(Number(us) / 1000).toFixed(1)} ms`;
}

/** Microseconds after the first hop: `+12 µs`, `+1.234 ms`, `−40 µs`. */
export function offset(us: bigint): string {
  // Negative when another Node's clock runs behind the sender's.
  const sign = us < 0n ? "−" : "+";
  const n = Math.abs(Number(us));
  if (n < 1000) return `${sign}${n} µs`;
  if (n < 1_000_000) return `${sign}${(n / 1000).toFixed(3)} ms`;
  return `${sign}${(n / 1e6).toFixed(3)} s`;
}
