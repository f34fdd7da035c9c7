//! The validated trace spec: built once from the wire form, with Antrea's admission rules
//! (reference §2.2) and messages, its defaults and precedence (§1.2, §3.2), NSX's TCP flag rules
//! (nsx-and-peers.md §1.5) and our bounds on every string (see [`crate::limits`]).
//!
//! On top, an injected trace must be one that can report (`check_injected`): a TCP, UDP or
//! SCTP packet needs a destination port (Antrea's docs say it "needs to be set", yet Antrea
//! sends port 0; only a Service destination lends its own port, §3.2), and a TCP packet must be
//! one OVS conntrack accepts as the first packet of a connection, since anything else is
//! `+inv` and dropped in ConntrackState before any table reports it. Live traces keep both
//! open: there they are filters.
//!
//! Checks that need a cluster's inventory (the source Pod exists, is not hostNetwork) are
//! [`TraceSpec::check_source_pod`]; everything else is decided here, before a trace exists.

use std::{fmt, net::IpAddr, time::Duration};

use traceflow_proto::v1 as pb;

use crate::{
    limits::*,
    naming::{is_dns_label, is_dns_subdomain},
};

/// An invalid field: `field` is its JSON path in the request (`spec.packet.ipHeader.ttl`).
/// The message never repeats a long input back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A namespaced object: a Pod, or a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where the traced packet comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Pod(PodRef),
    /// Live traffic only: packets from this address (`source.ip` is ignored with a Pod).
    Ip(IpAddr),
    /// Live traffic only, with a destination Pod: whatever reaches it (receiver-only).
    Unspecified,
}

/// Where it goes: exactly one kind (Antrea documents them as exclusive; we enforce it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Pod(PodRef),
    Service(PodRef),
    Ip(IpAddr),
    /// Live traffic only, with a source Pod: its first new connection anywhere.
    Unspecified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn is_v6(self) -> bool {
        self == Family::V6
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The transport of the traced packet. Ports 0 mean "not set": a random source port, a
/// Service's port, or (live traffic) any port. An injected TCP, UDP or SCTP packet to a Pod or
/// an IP always has a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Icmp {
        id: u16,
        sequence: u16,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: Option<u8>,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Sctp {
        src_port: u16,
        dst_port: u16,
    },
    /// No transport header: an IP protocol number from the IP header, 0 when unset (a
    /// Service's protocol, else ICMP, reference §3.2). Never TCP, UDP or SCTP: those numbers
    /// without a header become their variant with ports 0 (so TCP gets Antrea's SYN).
    Protocol(u8),
}

impl Transport {
    /// The IP protocol number, 0 when unset; ICMP follows the family.
    pub fn protocol(self, family: Family) -> u8 {
        let icmp = if family.is_v6() {
            PROTO_ICMPV6
        } else {
            PROTO_ICMP
        };
        match self {
            Transport::Icmp { .. } => icmp,
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Udp { .. } => PROTO_UDP,
            Transport::Sctp { .. } => PROTO_SCTP,
            Transport::Protocol(PROTO_ICMP | PROTO_ICMPV6) => icmp,
            Transport::Protocol(n) => n,
        }
    }
}

/// A trace request that passed every check, with Antrea's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    pub source: Source,
    pub destination: Destination,
    pub family: Family,
    pub transport: Transport,
    /// TTL / hop limit; 0 = [`DEFAULT_TTL`].
    pub ttl: u8,
    /// IPv4 flags (0-7).
    pub ip_flags: u8,
    /// Live traffic: packet addresses to match beyond the source and destination.
    pub packet_src_ip: Option<IpAddr>,
    pub packet_dst_ip: Option<IpAddr>,
    pub timeout: Duration,
    pub live_traffic: bool,
    pub dropped_only: bool,
    /// Also trace the reply of a packet Delivered to a Pod (injected traces only).
    pub reply: bool,
    /// The wire form this was built from, with the default timeout filled in: what is stored
    /// and sent on.
    proto: pb::TraceflowSpec,
}

impl TryFrom<pb::TraceflowSpec> for TraceSpec {
    type Error = Invalid;

    fn try_from(spec: pb::TraceflowSpec) -> Result<Self, Invalid> {
        TraceSpec::parse(spec, "")
    }
}

impl TraceSpec {
    /// As `try_from`, for a trace called `name` (Antrea names it in one message).
    pub fn named(name: &str, spec: pb::TraceflowSpec) -> Result<Self, Invalid> {
        TraceSpec::parse(spec, name)
    }

    /// The wire form, normalised (default timeout filled in).
    pub fn proto(&self) -> &pb::TraceflowSpec {
        &self.proto
    }

    pub fn into_proto(self) -> pb::TraceflowSpec {
        self.proto
    }

    /// The timeout in whole seconds (1..=300).
    pub fn timeout_secs(&self) -> u16 {
        u16::try_from(self.timeout.as_secs()).unwrap_or(MAX_TIMEOUT_SECS)
    }

    /// The source Pod, when the spec names one.
    pub fn source_pod(&self) -> Option<&PodRef> {
        match &self.source {
            Source::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// Antrea's inventory-backed admission rules 2 and 3 (non-live traces only): `pod` is the
    /// source Pod's `hostNetwork`, or `None` when the Pod does not exist.
    pub fn check_source_pod(&self, host_network: Option<bool>) -> Result<(), Invalid> {
        if self.live_traffic {
            return Ok(());
        }
        let Source::Pod(src) = &self.source else {
            return Ok(());
        };
        match host_network {
            None => Err(Invalid::new(
                "spec.source.pod",
                format!("requested source Pod {src} not found"),
            )),
            Some(true) => Err(Invalid::new(
                "spec.source.pod",
                "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported",
            )),
            Some(false) => Ok(()),
        }
    }

    fn parse(mut spec: pb::TraceflowSpec, name: &str) -> Result<Self, Invalid> {
        let source = spec.source.clone().unwrap_or_default();
        let dest = spec.destination.clone().unwrap_or_default();

        // Antrea's admission rules 1 and 4, in order (reference §2.2).
        if !spec.live_traffic && (source.namespace.is_empty() || source.pod.is_empty()) {
            return Err(Invalid::new(
                "spec.source.pod",
                "source Pod must be specified in non-live-traffic Traceflow",
            ));
        }
        if source.pod.is_empty() && dest.pod.is_empty() {
            let message = if name.is_empty() {
                // Not named yet (the manager names it later): no double space.
                "Traceflow has neither source nor destination Pod specified".to_string()
            } else {
                format!("Traceflow {name} has neither source nor destination Pod specified")
            };
            return Err(Invalid::new("spec.source.pod", message));
        }
        if spec.dropped_only && !spec.live_traffic {
            return Err(Invalid::new(
                "spec.droppedOnly",
                "droppedOnly works only with live-traffic Traceflow",
            ));
        }
        if spec.reply && spec.live_traffic {
            return Err(Invalid::new(
                "spec.reply",
                "reply works only with injected (non-live-traffic) Traceflow; unset liveTraffic \
                 or reply",
            ));
        }
        if spec.timeout == 0 {
            spec.timeout = i32::from(DEFAULT_TIMEOUT_SECS);
        }
        let Some(timeout) = u16::try_from(spec.timeout)
            .ok()
            .filter(|t| (1..=MAX_TIMEOUT_SECS).contains(t))
        else {
            return Err(Invalid::new(
                "spec.timeout",
                format!(
                    "must be between 1 and {MAX_TIMEOUT_SECS} seconds (0 means the default, \
                     {DEFAULT_TIMEOUT_SECS}), got {}",
                    spec.timeout
                ),
            ));
        };

        let packet = spec.packet.clone().unwrap_or_default();
        // Presence of ipv6Header alone selects IPv6 (reference §1.2).
        let family = if packet.ipv6_header.is_some() {
            Family::V6
        } else {
            Family::V4
        };

        let source = if !source.pod.is_empty() {
            Source::Pod(pod_ref(
                "spec.source",
                &source.namespace,
                &source.pod,
                false,
            )?)
        } else if !source.ip.is_empty() {
            Source::Ip(ip_of(
                "spec.source.ip",
                &source.ip,
                family,
                "source IP does not match the IP header family",
            )?)
        } else {
            Source::Unspecified
        };

        let kinds = [
            !dest.pod.is_empty(),
            !dest.service.is_empty(),
            !dest.ip.is_empty(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if kinds > 1 {
            return Err(Invalid::new(
                "spec.destination",
                "pod, service and ip are mutually exclusive; set only one",
            ));
        }
        let destination = if !dest.pod.is_empty() {
            Destination::Pod(pod_ref(
                "spec.destination",
                &dest.namespace,
                &dest.pod,
                false,
            )?)
        } else if !dest.service.is_empty() {
            Destination::Service(pod_ref(
                "spec.destination",
                &dest.namespace,
                &dest.service,
                true,
            )?)
        } else if !dest.ip.is_empty() {
            Destination::Ip(ip_of(
                "spec.destination.ip",
                &dest.ip,
                family,
                "destination IP does not match the IP header family",
            )?)
        } else if spec.live_traffic {
            Destination::Unspecified
        } else {
            return Err(Invalid::new(
                "spec.destination",
                "destination is not specified; set pod, service or ip",
            ));
        };

        let packet_ip = |field: &str, s: &str| -> Result<Option<IpAddr>, Invalid> {
            if s.is_empty() {
                return Ok(None);
            }
            ip_of(field, s, family, "does not match the IP header family").map(Some)
        };
        let packet_src_ip = packet_ip("spec.packet.srcIP", &packet.src_ip)?;
        let packet_dst_ip = packet_ip("spec.packet.dstIP", &packet.dst_ip)?;

        // The IP header: TTL, flags, and an explicit protocol number.
        let (ttl, ip_flags, protocol, proto_field) = match (&packet.ipv6_header, &packet.ip_header)
        {
            (Some(h6), _) => {
                let ttl = byte("spec.packet.ipv6Header.hopLimit", h6.hop_limit, 255)?;
                let field = "spec.packet.ipv6Header.nextHeader";
                let protocol = match h6.next_header {
                    None => 0,
                    Some(n) if [6, 17, 58, 132].contains(&n) => byte(field, n, 255)?,
                    Some(n) => {
                        return Err(Invalid::new(
                            field,
                            format!(
                                "must be 6 (TCP), 17 (UDP), 58 (ICMPv6) or 132 (SCTP), got {n}"
                            ),
                        ));
                    }
                };
                (ttl, 0, protocol, field)
            }
            (None, h) => {
                let h = (*h).unwrap_or_default();
                let ttl = byte("spec.packet.ipHeader.ttl", h.ttl, 255)?;
                let flags = byte("spec.packet.ipHeader.flags", h.flags, 7)?;
                let field = "spec.packet.ipHeader.protocol";
                let protocol = match h.protocol {
                    n @ (0 | 1 | 6 | 17 | 132) => byte(field, n, 255)?,
                    n => {
                        return Err(Invalid::new(
                            field,
                            format!("must be 1 (ICMP), 6 (TCP), 17 (UDP) or 132 (SCTP), got {n}"),
                        ));
                    }
                };
                (ttl, flags, protocol, field)
            }
        };

        let transport = transport(
            packet.transport_header.unwrap_or_default(),
            protocol,
            proto_field,
            family,
        )?;
        if !spec.live_traffic {
            check_injected(transport, &destination)?;
        }

        Ok(TraceSpec {
            source,
            destination,
            family,
            transport,
            ttl,
            ip_flags,
            packet_src_ip,
            packet_dst_ip,
            timeout: Duration::from_secs(u64::from(timeout)),
            live_traffic: spec.live_traffic,
            dropped_only: spec.dropped_only,
            reply: spec.reply,
            proto: spec,
        })
    }
}

/// The transport header (at most one kind), checked against an explicit protocol number.
fn transport(
    th: pb::TransportHeader,
    protocol: u8,
    proto_field: &str,
    family: Family,
) -> Result<Transport, Invalid> {
    let set = [
        th.icmp.is_some(),
        th.udp.is_some(),
        th.tcp.is_some(),
        th.sctp.is_some(),
    ];
    if set.into_iter().filter(|b| *b).count() > 1 {
        return Err(Invalid::new(
            "spec.packet.transportHeader",
            "icmp, udp, tcp and sctp are mutually exclusive; set only one",
        ));
    }
    const TH: &str = "spec.packet.transportHeader";
    // 0 is "not set" for both; whether an unset destination port is allowed depends on the
    // trace (`check_injected`).
    let ports = |kind: &str, src: i32, dst: i32| -> Result<(u16, u16), Invalid> {
        Ok((
            port(&format!("{TH}.{kind}.srcPort"), src)?,
            port(&format!("{TH}.{kind}.dstPort"), dst)?,
        ))
    };
    let t = if let Some(sc) = th.sctp {
        let (src_port, dst_port) = ports("sctp", sc.src_port, sc.dst_port)?;
        Transport::Sctp { src_port, dst_port }
    } else if let Some(i) = th.icmp {
        Transport::Icmp {
            id: u16_of(&format!("{TH}.icmp.id"), i.id)?,
            sequence: u16_of(&format!("{TH}.icmp.sequence"), i.sequence)?,
        }
    } else if let Some(u) = th.udp {
        let (src_port, dst_port) = ports("udp", u.src_port, u.dst_port)?;
        Transport::Udp { src_port, dst_port }
    } else if let Some(t) = th.tcp {
        let (src_port, dst_port) = ports("tcp", t.src_port, t.dst_port)?;
        let flags = match t.flags {
            None => None,
            Some(f) => {
                Some(check_tcp_flags(f).map_err(|m| Invalid::new(&format!("{TH}.tcp.flags"), m))?)
            }
        };
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
        }
    } else {
        // A transport protocol without its header is that header with every field unset, so
        // the defaults (SYN, a Service's port) and the injected rules apply to it alike.
        return Ok(match protocol {
            PROTO_TCP => Transport::Tcp {
                src_port: 0,
                dst_port: 0,
                flags: None,
            },
            PROTO_UDP => Transport::Udp {
                src_port: 0,
                dst_port: 0,
            },
            PROTO_SCTP => Transport::Sctp {
                src_port: 0,
                dst_port: 0,
            },
            n => Transport::Protocol(n),
        });
    };
    let wanted = t.protocol(family);
    if protocol != 0 && Transport::Protocol(protocol).protocol(family) != wanted {
        let kind = match t {
            Transport::Icmp { .. } => "icmp",
            Transport::Tcp { .. } => "tcp",
            Transport::Udp { .. } => "udp",
            Transport::Sctp { .. } => "sctp",
            Transport::Protocol(_) => "ip",
        };
        return Err(Invalid::new(
            proto_field,
            format!("protocol {protocol} does not match the {kind} transport header"),
        ));
    }
    Ok(t)
}

/// NSX's TCP flag rules: SYN not with RST or FIN; without SYN, ACK or RST is required; ACK not
/// with FIN, PSH or URG. Returns the flags as a byte.
pub fn check_tcp_flags(flags: i32) -> Result<u8, String> {
    let Ok(f) = u8::try_from(flags) else {
        return Err(format!("must be between 0 and 255, got {flags}"));
    };
    let has = |bit: u8| f & bit != 0;
    if has(TCP_SYN) && (has(TCP_RST) || has(TCP_FIN)) {
        return Err(format!(
            "SYN cannot be combined with RST or FIN (flags {f})"
        ));
    }
    if !has(TCP_SYN) && !has(TCP_ACK) && !has(TCP_RST) {
        return Err(format!(
            "without SYN, ACK or RST must be set (flags {f}); unset means SYN (2)"
        ));
    }
    if has(TCP_ACK) && (has(TCP_FIN) || has(TCP_PSH) || has(TCP_URG)) {
        return Err(format!(
            "ACK cannot be combined with FIN, PSH or URG (flags {f})"
        ));
    }
    Ok(f)
}

/// The rules only an injected trace has: its packet must be one a table reports.
///
/// - TCP, UDP and SCTP need a destination port, unless the destination is a Service (its
///   first port is used, reference §3.2). Antrea has no default for it.
/// - TCP flags must open a connection ([`check_new_tcp_connection`]); unset means SYN.
fn check_injected(transport: Transport, destination: &Destination) -> Result<(), Invalid> {
    const TH: &str = "spec.packet.transportHeader";
    let (kind, name, example, dst_port) = match transport {
        Transport::Tcp { dst_port, .. } => ("tcp", "TCP", "tcp,tcp_dst=80", dst_port),
        Transport::Udp { dst_port, .. } => ("udp", "UDP", "udp,udp_dst=53", dst_port),
        Transport::Sctp { dst_port, .. } => ("sctp", "SCTP", "sctp,sctp_dst=9000", dst_port),
        Transport::Icmp { .. } | Transport::Protocol(_) => return Ok(()),
    };
    if dst_port == 0 && !matches!(destination, Destination::Service(_)) {
        return Err(Invalid::new(
            &format!("{TH}.{kind}.dstPort"),
            format!(
                "an injected {name} packet needs a destination port: set one (tfctl -f \
                 {example}); only a Service destination (its port) or live traffic may \
                 leave it unset"
            ),
        ));
    }
    if let Transport::Tcp { flags: Some(f), .. } = transport {
        check_new_tcp_connection(f).map_err(|m| Invalid::new(&format!("{TH}.tcp.flags"), m))?;
    }
    Ok(())
}

/// The TCP flags OVS conntrack accepts as the first packet of a new connection (userspace
/// datapath, `lib/conntrack-tcp.c`: `tcp_valid_new` over `tcp_invalid_flags`): no SYN with
/// ACK, and FIN, PSH and URG only with ACK. With [`check_tcp_flags`] (SYN without RST or
/// FIN; without SYN, ACK or RST) this leaves SYN, ACK, RST and RST+ACK, each with or without
/// ECE and CWR.
/// Anything else is `+inv` and dropped in ConntrackState, before any table reports it.
fn check_new_tcp_connection(flags: u8) -> Result<(), String> {
    let has = |bit: u8| flags & bit != 0;
    if has(TCP_SYN) && has(TCP_ACK) {
        return Err(format!(
            "SYN+ACK (flags {flags}) cannot open a connection: conntrack drops it as invalid \
             before any table reports it; send SYN (2, the default) and set reply (tfctl \
             --reply) to trace the SYN-ACK back"
        ));
    }
    if !has(TCP_ACK) && (has(TCP_FIN) || has(TCP_PSH) || has(TCP_URG)) {
        return Err(format!(
            "FIN, PSH and URG without ACK (flags {flags}) cannot open a connection: conntrack \
             drops it as invalid before any table reports it; use SYN (2, the default)"
        ));
    }
    Ok(())
}

/// `<prefix>.namespace` + `<prefix>.pod|service`: a DNS label namespace and a name (DNS
/// subdomain for Pods, label for Services).
fn pod_ref(prefix: &str, namespace: &str, name: &str, service: bool) -> Result<PodRef, Invalid> {
    let kind = if service { "service" } else { "pod" };
    if namespace.is_empty() {
        return Err(Invalid::new(
            &format!("{prefix}.namespace"),
            format!("is required with a {} {kind}", &prefix["spec.".len()..]),
        ));
    }
    if !is_dns_label(namespace) {
        return Err(Invalid::new(
            &format!("{prefix}.namespace"),
            "not a valid namespace: 1-63 lower-case letters, digits or '-'",
        ));
    }
    let ok = if service {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !ok {
        let rule = if service {
            "1-63 lower-case letters, digits or '-'"
        } else {
            "1-253 lower-case letters, digits, '-' or '.'"
        };
        return Err(Invalid::new(
            &format!("{prefix}.{kind}"),
            format!("not a valid {kind} name: {rule}"),
        ));
    }
    Ok(PodRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// An address of `family`; `mismatch` is the message when it is of the other one.
fn ip_of(field: &str, s: &str, family: Family, mismatch: &str) -> Result<IpAddr, Invalid> {
    let ip = (s.len() <= MAX_IP_LEN)
        .then(|| s.parse::<IpAddr>().ok())
        .flatten()
        .ok_or_else(|| Invalid::new(field, "not a valid IP address"))?;
    if ip.is_ipv6() != family.is_v6() {
        let hint = if family.is_v6() {
            ""
        } else {
            "; set packet.ipv6Header for IPv6"
        };
        return Err(Invalid::new(
            field,
            format!("{mismatch} ({}{hint})", family.name()),
        ));
    }
    Ok(ip)
}

fn byte(field: &str, v: i32, max: u8) -> Result<u8, Invalid> {
    u8::try_from(v)
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| Invalid::new(field, format!("must be between 0 and {max}, got {v}")))
}

fn u16_of(field: &str, v: i32) -> Result<u16, Invalid> {
    u16::try_from(v)
        .map_err(|_| Invalid::new(field, format!("must be between 0 and 65535, got {v}")))
}

/// A port, 0 meaning not set.
fn port(field: &str, v: i32) -> Result<u16, Invalid> {
    u16::try_from(v)
        .map_err(|_| Invalid::new(field, format!("port must be between 1 and 65535, got {v}")))
}

#[cfg(test)]
mod tests;
