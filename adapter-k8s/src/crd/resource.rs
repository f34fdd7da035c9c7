//! The `Traceflow` custom resource as a Rust type: the one source of the CRD the cluster chart
//! installs (`charts/traceflow-cluster/crds/traceflows.yaml`, written by
//! `traceflow-adapter crd`; a test fails when the two differ) and the lab's API serves.
//!
//! Field names, ranges and printer columns are Antrea's `crd.antrea.io/v1beta1` Traceflow
//! (shared/reference/antrea-traceflow.md §1), plus ours: `sctp` in the transport header and, in
//! the status, `traceId`, `startTimeMicros`, `endTimeMicros`, per-observation `sequence` and
//! `timestampMicros`, and a filled-in `role`. The short name is `tflow`, because Antrea's
//! `tf` names `traceflows.crd.antrea.io` in clusters that run both.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Short name of `traceflows.crd.traceflow.io` (Antrea's is `tf`).
pub const SHORT_NAME: &str = "tflow";

/// What to trace (Antrea's `TraceflowSpec`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.traceflow.io",
    version = "v1beta1",
    kind = "Traceflow",
    plural = "traceflows",
    singular = "traceflow",
    shortname = "tflow",
    status = "TraceflowStatus",
    derive = "PartialEq",
    // Printer columns as JSON strings: clippy's duplicated_attributes lint misreads repeated
    // nested `printcolumn(type_ = ...)` attributes.
    doc = "A trace of one packet through the cluster's Open vSwitch pipeline, run by traceflow-adapter (Antrea's Traceflow schema).",
    printcolumn = r#"{"name":"Phase", "type":"string", "description":"Phase of the trace", "jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Source-Pod", "type":"string", "description":"Source Pod", "jsonPath":".spec.source.pod"}"#,
    printcolumn = r#"{"name":"Destination-Pod", "type":"string", "description":"Destination Pod", "jsonPath":".spec.destination.pod"}"#,
    printcolumn = r#"{"name":"Destination-IP", "type":"string", "description":"Destination IP", "jsonPath":".spec.destination.ip", "priority":10}"#,
    printcolumn = r#"{"name":"Live-Traffic", "type":"boolean", "description":"Traces real traffic instead of an injected packet", "jsonPath":".spec.liveTraffic", "priority":10}"#,
    printcolumn = r#"{"name":"Dropped-Only", "type":"boolean", "description":"Captures only a packet a NetworkPolicy drops", "jsonPath":".spec.droppedOnly", "priority":10}"#,
    printcolumn = r#"{"name":"Timeout", "type":"integer", "description":"Timeout in seconds", "jsonPath":".spec.timeout", "priority":10}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TraceflowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<PacketSpec>,
    /// Trace the first packet of the first new matching connection instead of injecting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_traffic: Option<bool>,
    /// Only with liveTraffic: capture only a packet a NetworkPolicy drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_only: Option<bool>,
    /// Seconds; omitted means 20.
    // The bound is the one the spec conversion applies (traceflow_core::limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = traceflow_core::limits::MAX_TIMEOUT_SECS))]
    pub timeout: Option<i32>,
    /// Also trace the reply of a packet Delivered to a Pod (injected traces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<bool>,
}

/// The source: a Pod, or (live traffic only) an IP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// The destination: a Pod, a Service or an IP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// The packet to inject. Neither header: IPv4 + ICMP; `ipv6Header` present (even `{}`): IPv6.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacketSpec {
    #[serde(rename = "ipHeader", default, skip_serializing_if = "Option::is_none")]
    pub ip_header: Option<IpHeader>,
    #[serde(
        rename = "ipv6Header",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_header: Option<Ipv6Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_header: Option<TransportHeader>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpHeader {
    /// IP protocol number: 1 ICMP, 6 TCP, 17 UDP, 132 SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub protocol: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub ttl: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 7))]
    pub flags: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6Header {
    /// Omitted means ICMPv6 (58).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub next_header: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub hop_limit: Option<i32>,
}

/// At most one of `icmp`, `udp`, `tcp`, `sctp` (ours).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpEchoHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<PortsHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<PortsHeader>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IcmpEchoHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub sequence: Option<i32>,
}

/// UDP or SCTP ports; a source port left out is chosen at random.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortsHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub src_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub dst_port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub src_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub dst_port: Option<i32>,
    /// Omitted means SYN (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub flags: Option<i32>,
}

/// What the trace found (Antrea's `TraceflowStatus` plus ours); written by the adapter only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceflowStatus {
    /// "" (new), Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the trace failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the trace went Running (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Ours: startTime in microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_micros: Option<i64>,
    /// Ours: when the trace ended, microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_micros: Option<i64>,
    /// The DSCP tag of a live-traffic trace, 0 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_tag: Option<i32>,
    /// Ours: the data-plane id of an injected trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<NodeResult>>,
    /// The traced packet of a live-traffic trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_packet: Option<CapturedPacket>,
}

/// The observations of one Node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// sender or receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<Vec<Observation>>,
    /// Forward or Reply (the leg of a `reply` trace); omitted means Forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

/// What one table did to the traced packet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(rename = "dstMAC", default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy_rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub ttl: Option<i32>,
    #[serde(
        rename = "translatedSrcIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub translated_src_ip: Option<String>,
    #[serde(
        rename = "translatedDstIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub translated_dst_ip: Option<String>,
    #[serde(
        rename = "tunnelDstIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tunnel_dst_ip: Option<String>,
    #[serde(rename = "egressIP", default, skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_node: Option<String>,
    #[serde(rename = "srcPodIP", default, skip_serializing_if = "Option::is_none")]
    pub src_pod_ip: Option<String>,
    /// Ours: position in the hop order across all Nodes, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Ours: when the agent saw the packet-in, microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_micros: Option<i64>,
}

/// The packet a live-traffic trace captured.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapturedPacket {
    #[serde(rename = "srcIP", default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(rename = "dstIP", default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub length: Option<i32>,
    #[serde(rename = "ipHeader", default, skip_serializing_if = "Option::is_none")]
    pub ip_header: Option<IpHeader>,
    #[serde(
        rename = "ipv6Header",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_header: Option<Ipv6Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_header: Option<TransportHeader>,
}

/// Path of the chart's copy, relative to the workspace root.
pub const CHART_PATH: &str = "charts/traceflow-cluster/crds/traceflows.yaml";

/// Whole-number bounds as integers (`maximum: 300`, not `300.0`): k8s-openapi keeps them as
/// `f64`, and integer fields read better, and compare exactly, with integer bounds.
fn integral_bounds(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if let ("minimum" | "maximum", Some(f)) = (k.as_str(), item.as_f64())
                    && f.fract() == 0.0
                    && f.abs() < 9.0e15
                {
                    *item = serde_json::json!(f as i64);
                } else {
                    integral_bounds(item);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_bounds),
        _ => {}
    }
}

/// The CRD as the chart installs it: a generated-file header, then YAML.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(Traceflow::crd())
        .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    integral_bounds(&mut crd);
    let body = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated from adapter-k8s/src/crd/resource.rs by `traceflow-adapter crd`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceflow_proto::v1 as pb;

    #[test]
    fn the_charts_crd_is_the_generated_one() -> Result<(), Box<dyn std::error::Error>> {
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CHART_PATH);
        let on_disk = std::fs::read_to_string(&chart)?;
        assert!(
            on_disk == crd_yaml()?,
            "{CHART_PATH} is stale: run `cargo run -p traceflow-adapter -- crd > {CHART_PATH}`"
        );
        Ok(())
    }

    #[test]
    fn names_do_not_collide_with_antrea() {
        use kube::CustomResourceExt;
        let crd = Traceflow::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec![SHORT_NAME.into()]));
        assert_ne!(
            SHORT_NAME, "tf",
            "Antrea's traceflows.crd.antrea.io owns `tf`"
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["Phase", "Source-Pod", "Destination-Pod", "Age"]);
    }

    /// Every field the adapter writes into `.status` has a place in the schema, so a real API
    /// server (which prunes unknown fields) keeps them all.
    #[test]
    fn the_status_the_adapter_writes_survives_the_schema() -> Result<(), serde_json::Error> {
        let packet = pb::Packet {
            src_ip: "10.0.0.1".into(),
            dst_ip: "10.0.0.2".into(),
            length: 84,
            ip_header: Some(pb::IpHeader {
                protocol: 6,
                ttl: 64,
                flags: 2,
            }),
            ipv6_header: Some(pb::IPv6Header {
                next_header: Some(6),
                hop_limit: 64,
            }),
            transport_header: Some(pb::TransportHeader {
                icmp: Some(pb::IcmpEchoRequestHeader { id: 1, sequence: 2 }),
                udp: Some(pb::UdpHeader {
                    src_port: 1,
                    dst_port: 2,
                }),
                tcp: Some(pb::TcpHeader {
                    src_port: 1,
                    dst_port: 2,
                    flags: Some(2),
                }),
                sctp: Some(pb::SctpHeader {
                    src_port: 1,
                    dst_port: 2,
                }),
            }),
        };
        let observation = pb::Observation {
            component: pb::Component::Lb as i32,
            component_info: "Output".into(),
            action: pb::Action::Forwarded as i32,
            pod: "default/p1".into(),
            dst_mac: "aa:bb:cc:dd:ee:ff".into(),
            network_policy: "K8sNetworkPolicy:default/np".into(),
            network_policy_rule: "r1".into(),
            egress: "eg".into(),
            ttl: 63,
            translated_src_ip: "10.0.0.9".into(),
            translated_dst_ip: "10.0.0.8".into(),
            tunnel_dst_ip: "192.168.77.3".into(),
            egress_ip: "192.168.77.9".into(),
            egress_node: "n2".into(),
            src_pod_ip: "10.0.0.1".into(),
            sequence: 3,
            timestamp_micros: 1_700_000_000_000_001,
        };
        let status = pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Succeeded as i32,
            reason: "r".into(),
            start_time_micros: 1_700_000_000_000_000,
            dataplane_tag: 7,
            results: vec![pb::NodeResult {
                node: "n1".into(),
                role: "sender".into(),
                timestamp: 1_700_000_000,
                observations: vec![observation],
                direction: pb::Direction::Forward as i32,
            }],
            captured_packet: Some(packet),
            trace_id: 5,
            end_time_micros: 1_700_000_000_000_002,
        };
        let written = super::super::status::to_crd(&status);
        let typed: TraceflowStatus = serde_json::from_value(written.clone())?;
        assert_eq!(serde_json::to_value(&typed)?, written);
        Ok(())
    }
}
