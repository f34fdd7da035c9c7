//! The br-int pipeline: Antrea's tables ([`tables`]), its register layout ([`regs`]), the
//! desired flows ([`flows`]) and the task that keeps br-int programmed ([`spawn`]).
//!
//! Ownership: the agent owns every flow whose cookie is [`COOKIE`] and nothing else on the
//! bridge. Reconciliation deletes our cookie and re-adds the desired flows in one atomic,
//! ordered OpenFlow bundle (falling back to delete + add + barrier if bundles are refused),
//! so a reconcile is idempotent and never leaves the bridge half-programmed.

pub mod egress;
pub mod flows;
pub mod live;
pub mod meter_drops;
pub mod policy;
pub mod regs;
pub mod services;
pub mod tables;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::desired::DesiredState;
use crate::ovs::openflow::message::{ErrorType, TABLE_ALL, TlvMap, TlvTableMod, tlv_cmd};
use crate::ovs::openflow::{FlowMod, Message, OfError, PacketIn, Switch};
use crate::ports::NodePorts;

pub use tables::Table;

/// Cookie of every pipeline flow.
pub const COOKIE: u64 = 0x7f1c_0000_0000_0001;
/// Cookie mask selecting exactly the pipeline's flows.
pub const COOKIE_MASK: u64 = u64::MAX;

/// The DSCP "trace class" of injected trace packets: 63 (`0b111111`, TOS byte `0xfc`).
///
/// Why 63: RFC 2474 §6 pool 2 (`xxxx11`) is reserved for experimental and local use, so no
/// standard PHB (EF 46, AFxy, CSx, all pool 1) collides with it; it is the farthest value from
/// the small tags (1, 2, ...) a live-traffic trace allocates from the bottom of the DSCP space;
/// and DSCP survives Geneve encapsulation (reference §3.1), so the receiver Node's Output table
/// recognises the class too. A Pod that itself sends DSCP 63 would be trapped like a trace
/// packet, which is the same trade-off Antrea makes with its tags.
pub const TRACE_DSCP: u8 = 63;

/// Ethernet types the pipeline matches on.
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;

/// `m` narrowed to IP packets of `ip`'s family whose source (`src`) or destination is `ip`.
pub(crate) fn with_host(
    m: crate::ovs::openflow::Match,
    ip: std::net::IpAddr,
    src: bool,
) -> crate::ovs::openflow::Match {
    use crate::ovs::openflow::Oxm;
    use std::net::IpAddr;
    match (ip, src) {
        (IpAddr::V4(v), true) => m.with(Oxm::eth_type(ETH_IPV4)).with(Oxm::ipv4_src(v)),
        (IpAddr::V4(v), false) => m.with(Oxm::eth_type(ETH_IPV4)).with(Oxm::ipv4_dst(v)),
        (IpAddr::V6(v), true) => m.with(Oxm::eth_type(ETH_IPV6)).with(Oxm::ipv6_src(v)),
        (IpAddr::V6(v), false) => m.with(Oxm::eth_type(ETH_IPV6)).with(Oxm::ipv6_dst(v)),
    }
}

/// `m` narrowed to IP packets of `net`'s family whose source (`src`) or destination is in
/// `net` (a masked match).
pub(crate) fn with_net(
    m: crate::ovs::openflow::Match,
    net: &ipnet::IpNet,
    src: bool,
) -> crate::ovs::openflow::Match {
    use crate::ovs::openflow::{
        Oxm,
        oxm::{CLASS_BASIC, basic},
    };
    let (eth, field, addr, mask) = match net {
        ipnet::IpNet::V4(n) => (
            ETH_IPV4,
            if src {
                basic::IPV4_SRC
            } else {
                basic::IPV4_DST
            },
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
        ipnet::IpNet::V6(n) => (
            ETH_IPV6,
            if src {
                basic::IPV6_SRC
            } else {
                basic::IPV6_DST
            },
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
    };
    m.with(Oxm::eth_type(eth))
        .with(Oxm::masked(CLASS_BASIC, field, &addr, &mask))
}

/// The global virtual MAC: destination MAC of every routed packet sent into a tunnel, and
/// what Antrea's ARPResponder answers for remote gateways.
pub const GLOBAL_VIRTUAL_MAC: [u8; 6] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

/// First delay before reconnecting to br-int (jittered up to twice this).
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Every br-int reconnect delay stays below this (ovs-vswitchd restarts are quick).
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The meter every trace packet-in passes (Antrea's `PacketInMeterIDTF`, 257).
pub const PACKET_IN_METER: u32 = 257;
/// Its rate (packets per second); the burst is twice that (Antrea's `packetInRate` default).
pub const PACKET_IN_RATE: u32 = 5000;

/// The meter Reject packet-ins pass (Antrea's `PacketInMeterIDNP`, 256): separate from
/// [`PACKET_IN_METER`] so a flood of rejected packets cannot starve trace packet-ins. Installed
/// with it; policy flows use it whenever they are given the trace meter.
pub const REJECT_PACKET_IN_METER: u32 = 256;

/// The meter live-traffic packet-ins pass: separate from [`PACKET_IN_METER`] so that real
/// traffic carrying a live tag (a busy connection, or a flood aimed at the tag) cannot starve
/// injected traces, and the other way round.
pub const LIVE_PACKET_IN_METER: u32 = 258;

/// A meter that only counts: the packets PipelineRootClassifier clears of a trace DSCP or a
/// live tag that no trace gave them (forged), read back as the `forged_trace_packets` counter
/// ([`meter_drops`]). Its rate is the most a meter can say, so it never drops one: a forged
/// trace packet is still someone's traffic, forwarded as the plain packet it is.
pub const FORGED_TRACE_METER: u32 = 259;

/// Installs (or updates) [`PACKET_IN_METER`], [`REJECT_PACKET_IN_METER`],
/// [`LIVE_PACKET_IN_METER`] and [`FORGED_TRACE_METER`].
async fn ensure_packet_in_meter(sw: &Switch) -> Result<(), OfError> {
    ensure_meter(sw, PACKET_IN_METER, PACKET_IN_RATE).await?;
    ensure_meter(sw, REJECT_PACKET_IN_METER, PACKET_IN_RATE).await?;
    ensure_meter(sw, LIVE_PACKET_IN_METER, PACKET_IN_RATE).await?;
    ensure_meter(sw, FORGED_TRACE_METER, u32::MAX / 2).await
}

/// Installs (or updates) meter `meter_id` at `rate` packets per second (burst twice that).
async fn ensure_meter(sw: &Switch, meter_id: u32, rate: u32) -> Result<(), OfError> {
    use crate::ovs::openflow::message::{
        METER_BURST, METER_EXISTS, METER_PKTPS, MeterMod, meter_cmd,
    };
    let meter = |command| {
        Message::MeterMod(MeterMod {
            command,
            flags: METER_PKTPS | METER_BURST,
            meter_id,
            drop_bands: vec![(rate, rate.saturating_mul(2))],
        })
    };
    match sw.transact(&[meter(meter_cmd::ADD)]).await {
        Err(OfError::Switch(e))
            if e.kind == ErrorType::MeterModFailed && e.code == METER_EXISTS =>
        {
            sw.transact(&[meter(meter_cmd::MODIFY)]).await
        }
        other => other,
    }
}

static BUNDLE_ID: AtomicU32 = AtomicU32::new(1);

/// The Geneve option that carries the cluster's tunnel key on trace and live-tagged packets
/// (class 0xffff, "experimental use" in IANA's Geneve option class registry; type 0x01, not
/// critical, so a Node that does not know it ignores it), as `tun_metadata0`.
pub const TUNNEL_KEY_OPTION: TlvMap = TlvMap {
    option_class: 0xffff,
    option_type: 0x01,
    option_len: 8,
    index: 0,
};

/// Maps [`TUNNEL_KEY_OPTION`] on the switch (the table is the datapath's, shared by every
/// bridge and kept across agent restarts): true once it is mapped as we need it, whether this
/// call or an earlier one did it. False (logged) when the switch refuses it and the mapping is
/// not there: flows then never use `tun_metadata0`, which the switch would refuse.
async fn ensure_tunnel_option(sw: &Switch) -> bool {
    // Asked first: after the first reconcile (or an agent restart) it is there already, and
    // adding it again would only make the switch log an error.
    let mapped = |reply: &Result<Message, OfError>| matches!(reply, Ok(Message::TlvTableReply(t)) if t.mappings.contains(&TUNNEL_KEY_OPTION));
    if mapped(&sw.request(&Message::TlvTableRequest).await) {
        return true;
    }
    let add = Message::TlvTableMod(TlvTableMod {
        command: tlv_cmd::ADD,
        mappings: vec![TUNNEL_KEY_OPTION],
    });
    match sw.transact(&[add]).await {
        Ok(()) => true,
        Err(error) => {
            warn!(%error, "cannot map the Geneve option of the tunnel key; tunnelled trace packets are checked by their secret only");
            false
        }
    }
}

/// Programs the pipeline for `ports` on a connected switch: one atomic bundle of
/// "delete our cookie" + every desired flow.
/// The flows come from the OVSDB ports and the desired state (peers, Services, policies).
/// Returns how many flows, and the tunnel key they use (none when the desired state has none
/// or the switch cannot carry it).
pub async fn reconcile(
    sw: &Switch,
    ports: &NodePorts,
    desired: &DesiredState,
) -> Result<(usize, Option<u64>), OfError> {
    let meter = match ensure_packet_in_meter(sw).await {
        Ok(()) => Some(PACKET_IN_METER),
        Err(error) => {
            warn!(%error, "no packet-in meter on this switch; trace packet-ins are not rate-limited");
            None
        }
    };
    let tunnel_key = match desired.trace_tunnel_key {
        Some(key) if ports.tunnel_ofport.is_some() && ensure_tunnel_option(sw).await => Some(key),
        _ => None,
    };
    let svc = services::service_flows(ports, desired);
    let desired = state_flows(ports, desired, meter, tunnel_key);
    let n = desired.len();
    let mut msgs = Vec::with_capacity(n + svc.groups.len() + 2);
    msgs.push(Message::FlowMod(FlowMod::delete_by_cookie(
        TABLE_ALL,
        COOKIE,
        COOKIE_MASK,
    )));
    // The agent owns every group on br-int (Service select groups): replaced wholesale,
    // in the same bundle, before the flows that reference them.
    msgs.extend(svc.group_messages().into_iter().map(Message::GroupMod));
    msgs.extend(desired.into_iter().map(Message::FlowMod));
    let id = BUNDLE_ID.fetch_add(1, Ordering::Relaxed);
    match sw.bundle(id, &msgs).await {
        Err(OfError::Switch(e)) if bundles_unsupported(&e) => {
            warn!(error = %e, "switch refused the bundle; falling back to delete + add + barrier");
            sw.transact(&msgs).await?;
        }
        other => other?,
    }
    Ok((n, tunnel_key))
}

/// Every desired flow for `ports` and `desired`: the base pipeline with the peers' routes
/// ([`flows`]), then Services ([`services`]), policies ([`policy`]) and Egresses ([`egress`]).
pub fn state_flows(
    ports: &NodePorts,
    desired: &DesiredState,
    packet_in_meter: Option<u32>,
    tunnel_key: Option<u64>,
) -> Vec<FlowMod> {
    let mut f = built_flows(ports, desired, packet_in_meter, tunnel_key);
    // A flow OVS would refuse must not take the others down with it (the bundle is all or
    // nothing): it is left out, loudly. Tests keep this from ever happening.
    f.retain(|flow| match flow.fields.repeated_field() {
        None => true,
        Some((class, field)) => {
            tracing::error!(
                table = flow.table_id,
                priority = flow.priority,
                class,
                field,
                "a desired flow matches one field twice; left out (a bug: please report it)"
            );
            false
        }
    });
    f
}

/// [`state_flows`] as the builders make them, unchecked.
fn built_flows(
    ports: &NodePorts,
    desired: &DesiredState,
    packet_in_meter: Option<u32>,
    tunnel_key: Option<u64>,
) -> Vec<FlowMod> {
    let mut f = flows::desired_flows_with(
        ports,
        &desired.tunnel_peers(),
        &flows::TraceClass {
            live_tags: &desired.live_tags,
            tunnel_key,
        },
        packet_in_meter,
    );
    f.extend(services::service_flows_with(ports, desired, packet_in_meter).flows);
    f.extend(policy::policy_flows(desired, packet_in_meter));
    f.extend(egress::egress_flows(ports, desired));
    f
}

/// Whether an error says "no bundles here" rather than "this flow is wrong".
fn bundles_unsupported(e: &crate::ovs::openflow::ErrorMsg) -> bool {
    use crate::ovs::openflow::message::kind;
    e.kind == ErrorType::BundleFailed
        || (e.kind == ErrorType::BadRequest
            && matches!(
                e.failed_request_kind(),
                Some(kind::BUNDLE_CONTROL | kind::BUNDLE_ADD_MESSAGE)
            ))
}

/// What the running pipeline task exposes.
#[derive(Clone)]
pub struct DatapathHandle {
    /// The current OpenFlow connection (None while disconnected).
    pub switch: watch::Receiver<Option<Switch>>,
    /// Counts successful reconciles; a test can wait for it to move after a restart.
    pub programmed: watch::Receiver<u64>,
    /// The desired state br-int was last programmed with (a live trace waits here until its
    /// tag's drop copies are in place before it tags traffic).
    pub programmed_state: watch::Receiver<Arc<DesiredState>>,
    /// The tunnel key br-int's flows were last programmed with (live traces send their
    /// tunnelled packets with it).
    pub tunnel_key: watch::Receiver<Option<u64>>,
}

/// Keeps br-int programmed: waits (up to 5 s) for the first OVSDB snapshot, connects to `mgmt`
/// (reconnecting with a jittered backoff, [`RECONNECT_MIN`] to just under [`RECONNECT_MAX`],
/// when ovs-vswitchd goes away; reset once the pipeline is programmed), reconciles on connect
/// and whenever `ports` or `desired` change, and forwards every packet-in to `packet_ins`.
/// Stops when `shutdown` is cancelled.
pub fn spawn(
    mgmt: PathBuf,
    mut ports: watch::Receiver<NodePorts>,
    mut desired: watch::Receiver<Arc<DesiredState>>,
    packet_ins: mpsc::Sender<PacketIn>,
    shutdown: CancellationToken,
) -> DatapathHandle {
    let (sw_tx, sw_rx) = watch::channel(None);
    let (prog_tx, prog_rx) = watch::channel(0u64);
    let (state_tx, state_rx) = watch::channel(Arc::new(DesiredState::default()));
    let (key_tx, key_rx) = watch::channel(None);
    let span = info_span!("datapath", mgmt = %mgmt.display());
    tokio::spawn(
        async move {
            // Programming before OVSDB was read would briefly install a pipeline without
            // any Pod (dropping their traffic after an agent restart): wait for the first
            // snapshot, but not forever.
            if tokio::time::timeout(Duration::from_secs(5), ports.changed()).await.is_err() {
                warn!("no OVSDB snapshot after 5 s; programming with the ports known so far");
            }
            let mut backoff = traceflow_daemon::Reconnect::new(RECONNECT_MIN, RECONNECT_MAX);
            let mut logged_down = false;
            while !shutdown.is_cancelled() {
                let (sw, mut pins) = match Switch::connect(&mgmt).await {
                    Ok(c) => c,
                    Err(error) => {
                        if !logged_down {
                            warn!(%error, "cannot connect to br-int; retrying");
                            logged_down = true;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        continue;
                    }
                };
                logged_down = false;
                info!(dpid = format!("{:016x}", sw.features().datapath_id), "connected to br-int");
                let current = ports.borrow_and_update().clone();
                let current_desired = desired.borrow_and_update().clone();
                match reconcile(&sw, &current, &current_desired).await {
                    Ok((n, key)) => {
                        info!(flows = n, pods = current.pods.len(), tunnel_key = key.is_some(), "pipeline programmed");
                        key_tx.send_replace(key);
                        prog_tx.send_modify(|g| *g += 1);
                        state_tx.send_replace(current_desired);
                    }
                    Err(error) => {
                        // Back off: a flow OVS rejects would fail again at once.
                        let retry_in = backoff.next_delay();
                        warn!(%error, ?retry_in, "programming the pipeline failed; reconnecting");
                        sw.close();
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(retry_in) => {}
                        }
                        continue;
                    }
                }
                backoff.reset();
                let _ = sw_tx.send(Some(sw.clone()));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = sw.closed() => {
                            warn!("openflow connection lost; reconnecting");
                            break;
                        }
                        changed = async {
                            tokio::select! {
                                c = ports.changed() => c,
                                c = desired.changed() => c,
                            }
                        } => {
                            if changed.is_err() {
                                // A desired-state source is gone: nothing more to follow.
                                shutdown.cancel();
                                break;
                            }
                            let current = ports.borrow_and_update().clone();
                            let current_desired = desired.borrow_and_update().clone();
                            match reconcile(&sw, &current, &current_desired).await {
                                Ok((n, key)) => {
                                    info!(flows = n, pods = current.pods.len(), peers = current_desired.peers.len(), services = current_desired.services.len(), rules = current_desired.rules.len(), "pipeline reprogrammed");
                                    key_tx.send_replace(key);
                                    prog_tx.send_modify(|g| *g += 1);
                                    state_tx.send_replace(current_desired);
                                }
                                Err(error) => {
                                    warn!(%error, "reprogramming failed; reconnecting");
                                    sw.close();
                                    break;
                                }
                            }
                        }
                        pin = pins.recv() => match pin {
                            Some(p) => {
                                if packet_ins.send(p).await.is_err() {
                                    shutdown.cancel();
                                    break;
                                }
                            }
                            None => break,
                        },
                    }
                }
                let _ = sw_tx.send(None);
                sw.close();
            }
        }
        .instrument(span),
    );
    DatapathHandle {
        switch: sw_rx,
        programmed: prog_rx,
        programmed_state: state_rx,
        tunnel_key: key_rx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::model::Egress;
    use crate::ovs::openflow::oxm::Oxm;
    use crate::ports::fixtures::mk_node;

    /// A Node with a Service (an endpoint here, one on the peer), an ingress and an egress
    /// policy rule, a peer, an Egress served by the peer and one served here: every flow of
    /// the pipeline, Services, policies and Egresses together, none matching a field twice.
    #[test]
    fn no_desired_flow_matches_a_field_twice() {
        let rule = |id: u32, direction: &str| traceflow_proto::v1::PolicyRule {
            conjunction_id: id,
            direction: direction.into(),
            action: "Drop".into(),
            policy_type: "AntreaNetworkPolicy".into(),
            policy_namespace: "default".into(),
            policy_name: format!("p{id}"),
            rule_name: format!("r{id}"),
            table: format!("AntreaPolicy{direction}Rule"),
            priority: 1000 + id,
            applied_to_ips: vec!["10.1.0.3".into()],
            any_peer: false,
            peer_cidrs: vec!["10.2.0.0/24".into()],
            services: vec![traceflow_proto::v1::RuleService {
                protocol: "TCP".into(),
                port: 80,
                end_port: 0,
            }],
        };
        let mut d = DesiredState::default();
        let errors = d.apply(traceflow_proto::v1::NodeState {
            replace: true,
            services_upsert: vec![crate::desired::fixtures::svc(
                "web",
                &["10.1.0.3", "10.2.0.2"],
            )],
            rules_upsert: vec![rule(7, "Ingress"), rule(8, "Egress")],
            ..Default::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let nodes = crate::desired::fixtures::two_nodes();
        d.node = nodes.node;
        d.peers = nodes.peers;
        for (name, node, ip, mark) in [("here", "n1", 100, 1), ("there", "n2", 101, 2)] {
            d.egresses.insert(
                name.into(),
                Egress {
                    name: name.into(),
                    egress_ip: [192, 168, 77, ip].into(),
                    egress_node: node.into(),
                    pod_ips: [[10, 1, 0, 2].into(), [10, 2, 0, 5].into()].into(),
                    mark,
                },
            );
        }
        let flows = built_flows(&mk_node(), &d, Some(1), Some(7));
        assert_eq!(
            state_flows(&mk_node(), &d, Some(1), Some(7)).len(),
            flows.len()
        );
        for table in [
            Table::ServiceLB,
            Table::AntreaPolicyIngressRule,
            Table::AntreaPolicyEgressRule,
            Table::EgressMark,
        ] {
            assert!(
                flows.iter().any(|f| f.table_id == table.id()),
                "no flow in {table:?}: the fixture lost a part"
            );
        }
        for f in &flows {
            assert_eq!(
                f.fields.repeated_field(),
                None,
                "table {} priority {}: {:?}",
                f.table_id,
                f.priority,
                f.fields
            );
        }
    }

    #[test]
    fn a_repeated_field_is_found() {
        let m = crate::ovs::openflow::oxm::Match::new()
            .with(Oxm::in_port(1))
            .with(Oxm::eth_type(0x0800))
            .with(Oxm::in_port(2));
        assert!(m.repeated_field().is_some());
        let ok = crate::ovs::openflow::oxm::Match::new()
            .with(Oxm::in_port(1))
            .with(Oxm::eth_type(0x0800));
        assert_eq!(ok.repeated_field(), None);
    }
}
