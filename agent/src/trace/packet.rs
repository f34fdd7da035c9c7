//! Building the injected trace packet (reference §3.2) and reading trace packets back.
//!
//! Trace identity: DSCP = [`TRACE_DSCP`], trace id in the IPv4 Identification (16 bits) or the
//! IPv6 flow label (20 bits). No table rewrites either field, so the id read from a packet-in
//! is the id that was injected. An id is not a proof (ids are few and any sender can write
//! one): the last [`SECRET_LEN`] bytes of the payload carry the trace's secret, which only the
//! adapter and the injecting agent know; every Node reports what it read there and the adapter
//! accepts only a report carrying the secret it gave.

use std::net::IpAddr;

use etherparse::{
    EtherType, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpDscp, IpHeaders, IpNumber,
    Ipv4Header, Ipv6ExtensionSlice, Ipv6ExtensionsSlice, Ipv6FlowLabel, Ipv6Header, LaxNetSlice,
    LaxSlicedPacket, LinkSlice, PacketBuilder, TcpHeader, TcpSlice, UdpSlice, checksum,
};

use crate::pipeline::TRACE_DSCP;
use crate::ports::Mac;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// The L4 part of a trace packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// ICMP / ICMPv6 echo request (type 8 / 128, code 0).
    Echo {
        id: u16,
        seq: u16,
    },
    /// ICMP / ICMPv6 echo reply (type 0 / 129): the reply leg of an echo trace.
    EchoReply {
        id: u16,
        seq: u16,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// SCTP common header + an INIT chunk (initiate tag [`SCTP_INIT_TAG`]).
    Sctp {
        src_port: u16,
        dst_port: u16,
    },
    /// SCTP common header + an INIT-ACK chunk: the reply leg of an SCTP trace. The common
    /// header's verification tag is the INIT's initiate tag (RFC 4960 §8.5.1).
    SctpInitAck {
        src_port: u16,
        dst_port: u16,
        verification_tag: u32,
    },
    /// A bare IP header with this protocol number.
    Bare(u8),
}

/// Everything needed to build a trace packet. `src` and `dst` are of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePacket {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4: 16 bits; IPv6: 20 bits (checked by the caller).
    pub trace_id: u32,
    pub ttl: u8,
    /// IPv4 flags (3 bits); ignored for IPv6.
    pub ip_flags: u8,
    pub transport: Transport,
    /// The trace's secret, written as the payload's last [`SECRET_LEN`] bytes (none when 0).
    pub secret: u64,
}

/// Bytes of the secret at the end of a trace packet's payload.
pub const SECRET_LEN: usize = 8;

impl TracePacket {
    /// The connection this packet starts, as conntrack keys it.
    pub fn conn_tuple(&self) -> super::conntrack::ConnTuple {
        let (src_port, dst_port) = match self.transport {
            Transport::Echo { id, .. } | Transport::EchoReply { id, .. } => (id, 0),
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port }
            | Transport::Sctp { src_port, dst_port }
            | Transport::SctpInitAck {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            Transport::Bare(_) => (0, 0),
        };
        super::conntrack::ConnTuple {
            protocol: self.protocol(),
            src: self.src,
            dst: self.dst,
            src_port,
            dst_port,
        }
    }

    /// Draws a new random source port (the range the adapter draws from); false for a
    /// transport without one.
    pub fn redraw_src_port(&mut self) -> bool {
        let port = rand::random_range(10000..=60999);
        match &mut self.transport {
            Transport::Tcp { src_port, .. }
            | Transport::Udp { src_port, .. }
            | Transport::Sctp { src_port, .. } => {
                *src_port = port;
                true
            }
            _ => false,
        }
    }

    /// The IP protocol / next-header number.
    pub fn protocol(&self) -> u8 {
        match (&self.transport, self.src.is_ipv6()) {
            (Transport::Echo { .. } | Transport::EchoReply { .. }, false) => PROTO_ICMP,
            (Transport::Echo { .. } | Transport::EchoReply { .. }, true) => PROTO_ICMPV6,
            (Transport::Tcp { .. }, _) => PROTO_TCP,
            (Transport::Udp { .. }, _) => PROTO_UDP,
            (Transport::Sctp { .. } | Transport::SctpInitAck { .. }, _) => PROTO_SCTP,
            (Transport::Bare(p), _) => *p,
        }
    }

    /// The Ethernet frame, checksums filled in (by `etherparse`'s builder). Fails only if `src`
    /// and `dst` differ in family.
    pub fn build(&self) -> Result<Vec<u8>, FamilyMismatch> {
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let h = Ipv4Header {
                    dscp: IpDscp::try_new(TRACE_DSCP).unwrap_or(IpDscp::ZERO),
                    // Trace identity: the id rides in the Identification field.
                    identification: (self.trace_id & 0xffff) as u16,
                    dont_fragment: self.ip_flags & 0b010 != 0,
                    more_fragments: self.ip_flags & 0b001 != 0,
                    time_to_live: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                    ..Default::default()
                };
                IpHeaders::Ipv4(h, Default::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: TRACE_DSCP << 2,
                    // Trace identity: the id rides in the flow label.
                    flow_label: Ipv6FlowLabel::try_new(self.trace_id & 0xf_ffff)
                        .unwrap_or(Ipv6FlowLabel::ZERO),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                    ..Default::default()
                },
                Default::default(),
            ),
            _ => return Err(FamilyMismatch),
        };
        let step = PacketBuilder::ethernet2(self.src_mac.0, self.dst_mac.0).ip(ip);
        let mut out = Vec::with_capacity(14 + 40 + 32 + SECRET_LEN);
        let secret = self.secret.to_be_bytes();
        let payload: &[u8] = if self.secret == 0 { &[] } else { &secret };
        // Writing into a Vec fails only for sizes no trace packet reaches (> 64 KiB).
        let written = match &self.transport {
            Transport::Echo { id, seq } => {
                if self.src.is_ipv6() {
                    step.icmpv6_echo_request(*id, *seq).write(&mut out, payload)
                } else {
                    step.icmpv4_echo_request(*id, *seq).write(&mut out, payload)
                }
            }
            Transport::EchoReply { id, seq } => {
                if self.src.is_ipv6() {
                    step.icmpv6_echo_reply(*id, *seq).write(&mut out, payload)
                } else {
                    step.icmpv4_echo_reply(*id, *seq).write(&mut out, payload)
                }
            }
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                // Sequence number: any value; 0 keeps the packet reproducible.
                let mut tcp = TcpHeader::new(*src_port, *dst_port, 0, 65535);
                tcp.fin = flags & 0x01 != 0;
                tcp.syn = flags & 0x02 != 0;
                tcp.rst = flags & 0x04 != 0;
                tcp.psh = flags & 0x08 != 0;
                tcp.ack = flags & 0x10 != 0;
                tcp.urg = flags & 0x20 != 0;
                tcp.ece = flags & 0x40 != 0;
                tcp.cwr = flags & 0x80 != 0;
                step.tcp_header(tcp).write(&mut out, payload)
            }
            Transport::Udp { src_port, dst_port } => {
                step.udp(*src_port, *dst_port).write(&mut out, payload)
            }
            // etherparse has no SCTP: the chunk is ours, the IP layer the builder's.
            Transport::Sctp { src_port, dst_port } => step.write(
                &mut out,
                IpNumber::SCTP,
                &sctp_init(*src_port, *dst_port, payload),
            ),
            Transport::SctpInitAck {
                src_port,
                dst_port,
                verification_tag,
            } => step.write(
                &mut out,
                IpNumber::SCTP,
                &sctp_init_ack(*src_port, *dst_port, *verification_tag, payload),
            ),
            Transport::Bare(p) => step.write(&mut out, IpNumber(*p), payload),
        };
        if written.is_err() {
            out.clear();
        }
        if self.ip_flags & 0b100 != 0 && !self.src.is_ipv6() {
            set_ipv4_reserved_flag(&mut out);
        }
        Ok(out)
    }
}

/// The initiate tag of every INIT we send ("trac"): the verification tag its INIT-ACK carries.
pub const SCTP_INIT_TAG: u32 = 0x7472_6163;
/// The INIT-ACK's own initiate tag ("repl").
const SCTP_INIT_ACK_TAG: u32 = 0x7265_706c;
/// SCTP chunk types (RFC 4960 §3.2).
pub const SCTP_CHUNK_INIT: u8 = 1;
pub const SCTP_CHUNK_INIT_ACK: u8 = 2;

/// An SCTP common header with an INIT chunk, then `trailer`, CRC32c filled in (RFC 4960 §3,
/// appendix B).
fn sctp_init(src_port: u16, dst_port: u16, trailer: &[u8]) -> Vec<u8> {
    // Verification tag 0: required for INIT.
    sctp_packet(
        src_port,
        dst_port,
        0,
        SCTP_CHUNK_INIT,
        SCTP_INIT_TAG,
        &[],
        trailer,
    )
}

/// An SCTP common header with the INIT-ACK answering our INIT: verification tag = the INIT's
/// initiate tag, and the mandatory State Cookie parameter (type 7; its 4 bytes are opaque to
/// everyone but the endpoint that made it).
fn sctp_init_ack(src_port: u16, dst_port: u16, verification_tag: u32, trailer: &[u8]) -> Vec<u8> {
    let cookie = [0u8, 7, 0, 8, b't', b'f', b'c', b'k'];
    sctp_packet(
        src_port,
        dst_port,
        verification_tag,
        SCTP_CHUNK_INIT_ACK,
        SCTP_INIT_ACK_TAG,
        &cookie,
        trailer,
    )
}

/// Common header + one INIT / INIT-ACK chunk (same fixed part, RFC 4960 §3.3.2-3) followed
/// by `params`, then `trailer` outside the chunk (the secret: a peer would skip it as the
/// start of a truncated chunk), CRC32c filled in over all of it.
fn sctp_packet(
    src_port: u16,
    dst_port: u16,
    verification_tag: u32,
    chunk_type: u8,
    initiate_tag: u32,
    params: &[u8],
    trailer: &[u8],
) -> Vec<u8> {
    let chunk_len = 20 + params.len();
    let mut b = vec![0u8; 12 + chunk_len + trailer.len()];
    b[0..2].copy_from_slice(&src_port.to_be_bytes());
    b[2..4].copy_from_slice(&dst_port.to_be_bytes());
    b[4..8].copy_from_slice(&verification_tag.to_be_bytes());
    // Checksum at 8..12, filled in last.
    let chunk = &mut b[12..];
    chunk[0] = chunk_type;
    chunk[2..4].copy_from_slice(&u16::try_from(chunk_len).unwrap_or(u16::MAX).to_be_bytes());
    chunk[4..8].copy_from_slice(&initiate_tag.to_be_bytes());
    chunk[8..12].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    chunk[12..14].copy_from_slice(&1u16.to_be_bytes()); // outbound streams
    chunk[14..16].copy_from_slice(&1u16.to_be_bytes()); // inbound streams
    chunk[16..20].copy_from_slice(&1u32.to_be_bytes()); // initial TSN
    chunk[20..20 + params.len()].copy_from_slice(params);
    chunk[chunk_len..].copy_from_slice(trailer);
    // CRC32c over the whole SCTP packet with the checksum field zero, stored little-endian
    // as on the wire.
    let c = crc32c(&b);
    b[8..12].copy_from_slice(&c.to_le_bytes());
    b
}

/// Sets the IPv4 header's reserved flag bit (Antrea's `flags` may carry it; etherparse's
/// header has no field for it) and recomputes the header checksum.
fn set_ipv4_reserved_flag(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    let Some(header) = ip.get_mut(..ihl) else {
        return;
    };
    if header.len() < 20 {
        return;
    }
    header[6] |= 0x80;
    header[10..12].fill(0);
    // etherparse sums native-endian words: `.to_be()` as its own header checksum does.
    let c = checksum::Sum16BitWords::new()
        .add_slice(header)
        .ones_complement()
        .to_be();
    header[10..12].copy_from_slice(&c.to_be_bytes());
}

/// CRC32c (Castagnoli), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82f6_3b78 & mask);
        }
    }
    !crc
}

/// `src` and `dst` of a [`TracePacket`] are not of the same IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("source and destination IP families differ")]
pub struct FamilyMismatch;

/// What a trace packet says about itself, read from packet-in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPacket {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dscp: u8,
    /// IPv4 Identification or IPv6 flow label.
    pub trace_id: u32,
    pub protocol: u8,
    pub ttl: u8,
    pub ip_flags: u8,
    /// Total IP length (header + payload).
    pub length: u16,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub tcp_flags: Option<u8>,
    pub icmp_echo: Option<(u16, u16)>,
    /// The last [`SECRET_LEN`] bytes of the payload after the transport header (0 when the
    /// packet has fewer): a trace packet's secret.
    pub secret: u64,
}

impl ParsedPacket {
    /// The packet as a live-traffic trace's `status.capturedPacket` (reference §3.6): addresses,
    /// IP length, the IP header of its family and the transport header it has.
    pub fn to_captured(&self) -> traceflow_proto::v1::Packet {
        use traceflow_proto::v1 as pb;
        let (ip_header, ipv6_header) = if self.src.is_ipv6() {
            let h = pb::IPv6Header {
                next_header: Some(i32::from(self.protocol)),
                hop_limit: i32::from(self.ttl),
            };
            (None, Some(h))
        } else {
            let h = pb::IpHeader {
                protocol: i32::from(self.protocol),
                ttl: i32::from(self.ttl),
                flags: i32::from(self.ip_flags),
            };
            (Some(h), None)
        };
        let ports = || {
            (
                i32::from(self.src_port.unwrap_or(0)),
                i32::from(self.dst_port.unwrap_or(0)),
            )
        };
        let transport = match self.protocol {
            6 => {
                let (src_port, dst_port) = ports();
                Some(pb::TransportHeader {
                    tcp: Some(pb::TcpHeader {
                        src_port,
                        dst_port,
                        flags: self.tcp_flags.map(i32::from),
                    }),
                    ..Default::default()
                })
            }
            17 => {
                let (src_port, dst_port) = ports();
                Some(pb::TransportHeader {
                    udp: Some(pb::UdpHeader { src_port, dst_port }),
                    ..Default::default()
                })
            }
            PROTO_SCTP => {
                let (src_port, dst_port) = ports();
                Some(pb::TransportHeader {
                    sctp: Some(pb::SctpHeader { src_port, dst_port }),
                    ..Default::default()
                })
            }
            _ => self.icmp_echo.map(|(id, seq)| pb::TransportHeader {
                icmp: Some(pb::IcmpEchoRequestHeader {
                    id: i32::from(id),
                    sequence: i32::from(seq),
                }),
                ..Default::default()
            }),
        };
        pb::Packet {
            src_ip: self.src.to_string(),
            dst_ip: self.dst.to_string(),
            length: i32::from(self.length),
            ip_header,
            ipv6_header,
            transport_header: transport,
        }
    }
}

/// Why packet bytes are not an IP packet we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a parseable IP packet: {0}")]
pub struct ParseError(pub &'static str);

/// Whether an IPv6 packet with these extension headers starts with its transport header: no
/// fragment header, or one with offset 0.
///
/// The lax slicer may hand back a truncated last extension header, and iterating such a slice
/// reads past it (etherparse 0.21 `Ipv6ExtensionsSlice::into_iter` trusts its lengths), so the
/// headers are re-sliced with the checked constructor first; a truncated chain has no
/// transport header to read.
pub(crate) fn ipv6_first_fragment(exts: &Ipv6ExtensionsSlice<'_>) -> bool {
    let Some(first) = exts.first_header() else {
        return true;
    };
    match Ipv6ExtensionsSlice::from_slice(first, exts.slice()) {
        Ok((checked, _, _)) => checked.into_iter().all(|e| match e {
            Ipv6ExtensionSlice::Fragment(f) => f.fragment_offset().value() == 0,
            _ => true,
        }),
        Err(_) => false,
    }
}

/// Parses Ethernet (with any VLAN tags) + IPv4 (with options) / IPv6 (with any extension
/// headers: hop-by-hop, routing, fragment, destination options, authentication) + the
/// transport fields we report, with `etherparse`'s lax slicer: a truncated transport header
/// leaves its fields `None` instead of failing. `protocol` is the upper-layer protocol (after
/// IPv6 extension headers); ports are read only from a first (or unfragmented) fragment. The
/// Ethernet type must name the IP version the header has.
pub fn parse(frame: &[u8]) -> Result<ParsedPacket, ParseError> {
    let sliced = LaxSlicedPacket::from_ethernet(frame).map_err(|_| ParseError("truncated"))?;
    let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
        return Err(ParseError("truncated"));
    };
    let (src_mac, dst_mac) = (Mac(eth.source()), Mac(eth.destination()));
    let ether_type = sliced.ether_payload().map(|p| p.ether_type);
    let (src, dst, dscp, trace_id, ttl, ip_flags, length, payload, first_fragment) =
        match &sliced.net {
            Some(LaxNetSlice::Ipv4(v4)) if ether_type == Some(EtherType::IPV4) => {
                let h = v4.header();
                let raw = h.slice();
                (
                    IpAddr::V4(h.source_addr()),
                    IpAddr::V4(h.destination_addr()),
                    raw[1] >> 2,
                    u32::from(h.identification()),
                    h.ttl(),
                    raw[6] >> 5,
                    h.total_len(),
                    v4.payload(),
                    h.fragments_offset().value() == 0,
                )
            }
            Some(LaxNetSlice::Ipv6(v6)) if ether_type == Some(EtherType::IPV6) => {
                let h = v6.header();
                let first_fragment = ipv6_first_fragment(v6.extensions());
                (
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                    h.traffic_class() >> 2,
                    h.flow_label().value(),
                    h.hop_limit(),
                    0,
                    h.payload_length().saturating_add(40),
                    v6.payload(),
                    first_fragment,
                )
            }
            Some(_) => return Err(ParseError("not IPv4 or IPv6")),
            None => {
                return Err(match sliced.stop_err {
                    Some(_) => ParseError("bad IP header"),
                    None => ParseError("not IPv4 or IPv6"),
                });
            }
        };
    let protocol = payload.ip_number.0;
    let (mut src_port, mut dst_port, mut tcp_flags, mut icmp_echo) = (None, None, None, None);
    // Only a first fragment (or a whole packet) starts with the transport header; the lax
    // slicer leaves any fragment unsliced, so slice a first fragment here.
    let l4 = if first_fragment { payload.payload } else { &[] };
    let mut l4_header = 0;
    match protocol {
        PROTO_TCP => {
            if let Ok(t) = TcpSlice::from_slice(l4) {
                (src_port, dst_port) = (Some(t.source_port()), Some(t.destination_port()));
                tcp_flags = t.slice().get(13).copied();
                l4_header = t.header_slice().len();
            }
        }
        PROTO_UDP => {
            if let Ok(u) = UdpSlice::from_slice_lax(l4) {
                (src_port, dst_port) = (Some(u.source_port()), Some(u.destination_port()));
                l4_header = 8;
            }
        }
        PROTO_ICMP => {
            if let Ok(i) = Icmpv4Slice::from_slice(l4)
                && let Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) = i.icmp_type()
            {
                icmp_echo = Some((e.id, e.seq));
                l4_header = 8;
            }
        }
        PROTO_ICMPV6 => {
            if let Ok(i) = Icmpv6Slice::from_slice(l4)
                && let Icmpv6Type::EchoRequest(e) | Icmpv6Type::EchoReply(e) = i.icmp_type()
            {
                icmp_echo = Some((e.id, e.seq));
                l4_header = 8;
            }
        }
        // etherparse has no SCTP: its ports are the common header's first four bytes.
        PROTO_SCTP => {
            let port = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            (src_port, dst_port) = (port(0), port(2));
            // Common header and the INIT / INIT-ACK chunk's fixed part.
            l4_header = 12 + 20;
        }
        _ => {}
    }
    let secret = l4
        .len()
        .checked_sub(SECRET_LEN)
        .filter(|at| *at >= l4_header && (l4_header > 0 || protocol_is_bare(protocol)))
        .and_then(|at| l4.get(at..))
        .and_then(|b| <[u8; SECRET_LEN]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    Ok(ParsedPacket {
        src_mac,
        dst_mac,
        src,
        dst,
        dscp,
        trace_id,
        protocol,
        ttl,
        ip_flags,
        length,
        src_port,
        dst_port,
        tcp_flags,
        icmp_echo,
        secret,
    })
}

/// A protocol whose trace packet is a bare IP header (plus the secret).
fn protocol_is_bare(protocol: u8) -> bool {
    !matches!(
        protocol,
        PROTO_ICMP | PROTO_ICMPV6 | PROTO_TCP | PROTO_UDP | PROTO_SCTP
    )
}

/// An independent RFC 1071 checksum over `parts` (each of even length but the last): the
/// oracle tests check the builder's checksums against (0 over data carrying a correct one).
#[cfg(test)]
pub(crate) fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests;
