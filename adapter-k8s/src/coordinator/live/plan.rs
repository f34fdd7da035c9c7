//! Live-traffic spec → the per-Node `LiveTrace` commands (reference §3.3, §3.6).
//!
//! Pure: reads an [`Index`] and returns a [`LivePlan`]. Which Node tags the traffic:
//!
//! * source Pod given → its Node, role `SENDER` (ConntrackState, in_port = the Pod's port);
//! * only the destination Pod → its Node, role `RECEIVER_ONLY` (L2ForwardingCalc);
//!
//! Every other Node of the cluster gets role `ANY`: it installs no tagging flow but recognises
//! the tag (Output and the policy drop copies) so it reports the packet when it sees it. That
//! is what `droppedOnly` needs (any Node may drop) and what a cross-Node path needs.
//!
//! The coordinator fills `trace_uid`, `dscp_tag` and `timeout_seconds`. The spec was
//! validated at the edge (`TraceSpec::try_from`), so it has a source or a destination Pod.

use traceflow_core::{Destination, Source, TraceSpec, Transport};
use traceflow_proto::v1 as pb;

use crate::coordinator::resolve::{ResolveError, first_of_family};
use crate::inventory::Index;

/// The commands of one live trace, one per Node.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePlan {
    pub ipv6: bool,
    /// The Node that tags the traffic (sender or receiver-only).
    pub tagging_node: String,
    /// `(node, command)`, the tagging Node first, then the rest by name.
    pub commands: Vec<(String, pb::LiveTrace)>,
}

fn admission(msg: impl Into<String>) -> ResolveError {
    ResolveError::Admission(msg.into())
}

/// Plans a live-traffic `spec` against the inventory.
pub fn plan(spec: &TraceSpec, index: &Index) -> Result<LivePlan, ResolveError> {
    let family = spec.family;
    let ipv6 = family.is_v6();
    // The transport names its protocol and ports; without one, the IP header's protocol, and
    // 0 matches any (live traces are not defaulted to ICMP).
    let (src_port, dst_port) = match spec.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port }
        | Transport::Sctp { src_port, dst_port } => (i32::from(src_port), i32::from(dst_port)),
        Transport::Icmp { .. } | Transport::Protocol(_) => (0, 0),
    };
    let mut cmd = pb::LiveTrace {
        protocol: i32::from(spec.transport.protocol(family)),
        src_port,
        dst_port,
        ipv6,
        dropped_only: spec.dropped_only,
        ..Default::default()
    };

    // Source: a Pod (tagged on its Node) or just an IP to match.
    let mut sender = None;
    match &spec.source {
        Source::Pod(src) => {
            let Some(pod) = index.pod(&src.namespace, &src.name) else {
                return Err(admission(format!("requested source Pod {src} not found")));
            };
            if pod.node.is_empty() {
                return Err(admission(format!(
                    "source Pod {src} is not scheduled to a Node"
                )));
            }
            if let Some(ip) = first_of_family(&pod.ips, family) {
                cmd.src_ip = ip.to_string();
            }
            cmd.in_pod_namespace = src.namespace.clone();
            cmd.in_pod_name = src.name.clone();
            sender = Some(pod.node.clone());
        }
        Source::Ip(ip) => cmd.src_ip = ip.to_string(),
        Source::Unspecified => {}
    }

    // Destination: one kind (the spec enforces it).
    let mut receiver = None;
    let mut dst_pod = None;
    match &spec.destination {
        Destination::Ip(ip) => cmd.dst_ip = ip.to_string(),
        Destination::Pod(dst) => {
            let Some(pod) = index.pod(&dst.namespace, &dst.name) else {
                return Err(admission(format!(
                    "requested destination Pod {dst} not found"
                )));
            };
            if let Some(ip) = first_of_family(&pod.ips, family) {
                cmd.dst_ip = ip.to_string();
                cmd.dst_pod_ip = ip.to_string();
            }
            receiver = Some(pod.node.clone()).filter(|n| !n.is_empty());
            dst_pod = Some(dst);
        }
        Destination::Service(dst) => {
            let Some(svc) = index.service(&dst.namespace, &dst.name) else {
                return Err(admission(format!(
                    "requested destination Service {dst} not found"
                )));
            };
            if let Some(ip) = first_of_family(&svc.cluster_ips, family) {
                cmd.dst_ip = ip.to_string();
            }
        }
        Destination::Unspecified => {}
    }

    let (tagging_node, role) = match (sender, receiver) {
        (Some(n), _) => (n, pb::LiveTraceRole::Sender),
        (None, Some(n)) => (n, pb::LiveTraceRole::ReceiverOnly),
        (None, None) => {
            // The spec guarantees a source or a destination Pod; the source has a Node.
            let dst = dst_pod.map(ToString::to_string).unwrap_or_default();
            return Err(admission(format!(
                "destination Pod {dst} is not scheduled to a Node"
            )));
        }
    };
    if role == pb::LiveTraceRole::ReceiverOnly && cmd.dst_pod_ip.is_empty() {
        return Err(ResolveError::Node {
            node: tagging_node,
            error: "destination Pod does not have an address of the traced family".to_string(),
        });
    }

    let mut commands = vec![(
        tagging_node.clone(),
        pb::LiveTrace {
            role: role as i32,
            ..cmd.clone()
        },
    )];
    let mut others: Vec<String> = index
        .nodes()
        .map(|n| n.name.clone())
        .filter(|n| *n != tagging_node)
        .collect();
    others.sort();
    commands.extend(others.into_iter().map(|n| {
        (
            n,
            pb::LiveTrace {
                role: pb::LiveTraceRole::Any as i32,
                ..cmd.clone()
            },
        )
    }));
    Ok(LivePlan {
        ipv6,
        tagging_node,
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::convert::fixtures::*;

    fn index() -> Index {
        let mut idx = Index::new();
        let pods = [
            mk_pod("default", "p0", "n1", &["10.10.1.2", "fd00::2"]),
            mk_pod("web", "api", "n2", &["10.10.2.2"]),
        ];
        for o in objects(&two_nodes(), &pods, &[]) {
            idx.apply(o);
        }
        idx
    }

    /// Converts at the edge (as every caller does), then plans; the error is the reason.
    fn run(s: &pb::TraceflowSpec, name: &str) -> Result<LivePlan, String> {
        let s = TraceSpec::named(name, s.clone()).map_err(|e| e.message)?;
        plan(&s, &index()).map_err(|e| e.to_string())
    }

    fn spec(src: (&str, &str), dst: (&str, &str)) -> pb::TraceflowSpec {
        pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: src.0.into(),
                pod: src.1.into(),
                ip: String::new(),
            }),
            destination: Some(pb::Destination {
                namespace: dst.0.into(),
                pod: dst.1.into(),
                ..Default::default()
            }),
            live_traffic: true,
            ..Default::default()
        }
    }

    #[test]
    fn source_pod_node_tags_and_every_other_node_listens() {
        let plan = run(&spec(("default", "p0"), ("web", "api")), "t");
        let Ok(plan) = plan else {
            panic!("plan failed: {plan:?}");
        };
        assert_eq!(plan.tagging_node, "n1");
        assert_eq!(plan.commands.len(), 2);
        let (n, c) = &plan.commands[0];
        assert_eq!(n, "n1");
        assert_eq!(c.role, pb::LiveTraceRole::Sender as i32);
        assert_eq!(
            (c.in_pod_namespace.as_str(), c.in_pod_name.as_str()),
            ("default", "p0")
        );
        assert_eq!(
            (c.src_ip.as_str(), c.dst_ip.as_str()),
            ("10.10.1.2", "10.10.2.2")
        );
        assert_eq!(c.protocol, 0, "protocol unset = any");
        let (n, c) = &plan.commands[1];
        assert_eq!(n, "n2");
        assert_eq!(c.role, pb::LiveTraceRole::Any as i32);
    }

    #[test]
    fn a_transport_header_names_the_protocol_and_ports() {
        for (th, want) in [
            (
                pb::TransportHeader {
                    sctp: Some(pb::SctpHeader {
                        src_port: 0,
                        dst_port: 9000,
                    }),
                    ..Default::default()
                },
                (132, 9000),
            ),
            (
                pb::TransportHeader {
                    tcp: Some(pb::TcpHeader {
                        src_port: 0,
                        dst_port: 443,
                        flags: None,
                    }),
                    ..Default::default()
                },
                (6, 443),
            ),
        ] {
            let mut s = spec(("default", "p0"), ("web", "api"));
            s.packet = Some(pb::Packet {
                transport_header: Some(th),
                ..Default::default()
            });
            let Ok(plan) = run(&s, "t") else {
                panic!("plan failed");
            };
            let c = &plan.commands[0].1;
            assert_eq!((c.protocol, c.dst_port), want);
        }
    }

    #[test]
    fn destination_only_is_receiver_only_on_its_node() {
        let mut s = spec(("", ""), ("web", "api"));
        s.dropped_only = true;
        let plan = run(&s, "t");
        let Ok(plan) = plan else {
            panic!("plan failed: {plan:?}");
        };
        let (n, c) = &plan.commands[0];
        assert_eq!(n, "n2");
        assert_eq!(c.role, pb::LiveTraceRole::ReceiverOnly as i32);
        assert_eq!(c.dst_pod_ip, "10.10.2.2");
        assert!(c.src_ip.is_empty() && c.dropped_only);
    }

    #[test]
    fn admission_failures() {
        let reason = |s: pb::TraceflowSpec| run(&s, "t1").err();
        assert_eq!(
            reason(spec(("", ""), ("", ""))).as_deref(),
            Some("Traceflow t1 has neither source nor destination Pod specified")
        );
        assert_eq!(
            reason(spec(("default", "nope"), ("", ""))).as_deref(),
            Some("requested source Pod default/nope not found")
        );
    }
}
