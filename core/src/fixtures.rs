//! The specs tests across the workspace start from, so each crate's tests do not spell them
//! out again. Compiled for this crate's tests and, in other crates, through the `fixtures`
//! feature their dev-dependencies enable.

use traceflow_proto::v1 as pb;

/// Pod `default/<src>` to Pod `default/<dst>`, everything else left to the defaults.
pub fn pod_to_pod(src: &str, dst: &str) -> pb::TraceflowSpec {
    pb::TraceflowSpec {
        source: Some(pb::Source {
            namespace: "default".into(),
            pod: src.into(),
            ip: String::new(),
        }),
        destination: Some(pb::Destination {
            namespace: "default".into(),
            pod: dst.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod `default/<src>` to Service `<namespace>/<service>`.
pub fn pod_to_service(src: &str, namespace: &str, service: &str) -> pb::TraceflowSpec {
    pb::TraceflowSpec {
        destination: Some(pb::Destination {
            namespace: namespace.into(),
            service: service.into(),
            ..Default::default()
        }),
        ..pod_to_pod(src, "")
    }
}

/// A sender's result on Node `n1` with one observation: the Service load balancer picked
/// `10.0.0.2` (first hop, `sequence` 1).
pub fn lb_result(timestamp_micros: i64) -> pb::NodeResult {
    pb::NodeResult {
        node: "n1".into(),
        role: "sender".into(),
        timestamp: timestamp_micros / 1_000_000,
        direction: pb::Direction::Forward as i32,
        observations: vec![pb::Observation {
            component: pb::Component::Lb as i32,
            action: pb::Action::Forwarded as i32,
            translated_dst_ip: "10.0.0.2".into(),
            timestamp_micros,
            sequence: 1,
            ..Default::default()
        }],
    }
}

/// A packet with only a TCP header.
pub fn tcp(src_port: i32, dst_port: i32, flags: Option<i32>) -> pb::Packet {
    pb::Packet {
        transport_header: Some(pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                src_port,
                dst_port,
                flags,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
