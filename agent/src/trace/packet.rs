//! Building the injected trace packet (reference §3.2) and reading trace packets back.
//!
//! Trace identity (DESIGN.md "Trace identity"): DSCP = [`TRACE_DSCP`], trace id in the IPv4
//! Identification (16 bits) or the IPv6 flow label (20 bits). No table rewrites either field,
//! so the id read from a packet-in is the id that was injected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pipeline::TRACE_DSCP;
use crate::ports::Mac;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
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
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// SCTP common header + an INIT chunk.
    Sctp {
        src_port: u16,
        dst_port: u16,
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
}

impl TracePacket {
    /// The IP protocol / next-header number.
    pub fn protocol(&self) -> u8 {
        match (&self.transport, self.src.is_ipv6()) {
            (Transport::Echo { .. }, false) => PROTO_ICMP,
            (Transport::Echo { .. }, true) => PROTO_ICMPV6,
            (Transport::Tcp { .. }, _) => PROTO_TCP,
            (Transport::Udp { .. }, _) => PROTO_UDP,
            (Transport::Sctp { .. }, _) => PROTO_SCTP,
            (Transport::Bare(p), _) => *p,
        }
    }

    /// The Ethernet frame, checksums filled in. Fails only if `src` and `dst` differ in family.
    pub fn build(&self) -> Result<Vec<u8>, FamilyMismatch> {
        let proto = self.protocol();
        let mut l4 = self.l4_payload();
        let mut out = Vec::with_capacity(14 + 40 + l4.len());
        out.extend_from_slice(&self.dst_mac.0);
        out.extend_from_slice(&self.src_mac.0);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let pseudo = pseudo_v4(s, d, proto, l4.len());
                self.fill_l4_checksum(&mut l4, &pseudo);
                out.extend_from_slice(&ETH_IPV4.to_be_bytes());
                let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[1] = TRACE_DSCP << 2;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&((self.trace_id & 0xffff) as u16).to_be_bytes());
                ip[6] = (self.ip_flags & 0x7) << 5;
                ip[8] = self.ttl;
                ip[9] = proto;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let pseudo = pseudo_v6(s, d, proto, l4.len());
                self.fill_l4_checksum(&mut l4, &pseudo);
                out.extend_from_slice(&ETH_IPV6.to_be_bytes());
                let tc = u32::from(TRACE_DSCP << 2);
                let word = (6u32 << 28) | (tc << 20) | (self.trace_id & 0xf_ffff);
                out.extend_from_slice(&word.to_be_bytes());
                out.extend_from_slice(&u16::try_from(l4.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.push(proto);
                out.push(self.ttl);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            _ => return Err(FamilyMismatch),
        }
        out.extend_from_slice(&l4);
        Ok(out)
    }

    fn l4_payload(&self) -> Vec<u8> {
        match &self.transport {
            Transport::Echo { id, seq } => {
                let ty = if self.src.is_ipv6() { 128 } else { 8 };
                let mut b = vec![ty, 0, 0, 0];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b
            }
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&src_port.to_be_bytes());
                b[2..4].copy_from_slice(&dst_port.to_be_bytes());
                // Sequence number: any value; 0 keeps the packet reproducible.
                b[12] = 5 << 4;
                b[13] = *flags;
                b[14..16].copy_from_slice(&65535u16.to_be_bytes());
                b
            }
            Transport::Udp { src_port, dst_port } => {
                let mut b = vec![0u8; 8];
                b[0..2].copy_from_slice(&src_port.to_be_bytes());
                b[2..4].copy_from_slice(&dst_port.to_be_bytes());
                b[4..6].copy_from_slice(&8u16.to_be_bytes());
                b
            }
            Transport::Sctp { src_port, dst_port } => {
                let mut b = vec![0u8; 12 + 20];
                b[0..2].copy_from_slice(&src_port.to_be_bytes());
                b[2..4].copy_from_slice(&dst_port.to_be_bytes());
                // Verification tag 0 (required for INIT); checksum at 8..12.
                let init = &mut b[12..];
                init[0] = 1; // INIT
                init[2..4].copy_from_slice(&20u16.to_be_bytes());
                init[4..8].copy_from_slice(&0x7472_6163u32.to_be_bytes()); // initiate tag "trac"
                init[8..12].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
                init[12..14].copy_from_slice(&1u16.to_be_bytes()); // outbound streams
                init[14..16].copy_from_slice(&1u16.to_be_bytes()); // inbound streams
                init[16..20].copy_from_slice(&1u32.to_be_bytes()); // initial TSN
                b
            }
            Transport::Bare(_) => Vec::new(),
        }
    }

    fn fill_l4_checksum(&self, l4: &mut [u8], pseudo: &[u8]) {
        match &self.transport {
            Transport::Echo { .. } => {
                // ICMPv4 has no pseudo-header; ICMPv6 does.
                let c = if self.src.is_ipv6() {
                    checksum(&[pseudo, l4])
                } else {
                    checksum(&[l4])
                };
                l4[2..4].copy_from_slice(&c.to_be_bytes());
            }
            Transport::Tcp { .. } => {
                let c = checksum(&[pseudo, l4]);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            Transport::Udp { .. } => {
                let mut c = checksum(&[pseudo, l4]);
                if c == 0 {
                    c = 0xffff;
                }
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            Transport::Sctp { .. } => {
                // CRC32c over the whole SCTP packet with the checksum field zero, stored
                // little-endian as on the wire (RFC 4960 appendix B).
                let c = crc32c(l4);
                l4[8..12].copy_from_slice(&c.to_le_bytes());
            }
            Transport::Bare(_) => {}
        }
    }
}

fn pseudo_v4(s: Ipv4Addr, d: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    p
}

fn pseudo_v6(s: Ipv6Addr, d: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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

/// Parses Ethernet (optionally one 802.1Q tag) + IPv4/IPv6 + the L4 ports we care about.
pub fn parse(frame: &[u8]) -> Result<ParsedPacket, ParseError> {
    let get = |r: std::ops::Range<usize>| frame.get(r).ok_or(ParseError("truncated"));
    let mac = |at: usize| -> Result<Mac, ParseError> {
        let b: [u8; 6] = get(at..at + 6)?
            .try_into()
            .map_err(|_| ParseError("truncated"))?;
        Ok(Mac(b))
    };
    let dst_mac = mac(0)?;
    let src_mac = mac(6)?;
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([
        frame.get(12).copied().unwrap_or(0),
        frame.get(13).copied().unwrap_or(0),
    ]);
    if ethertype == 0x8100 {
        off += 4;
        let b = get(off..off + 2)?;
        ethertype = u16::from_be_bytes([b[0], b[1]]);
    }
    off += 2;
    let ip = frame.get(off..).ok_or(ParseError("truncated"))?;
    let (src, dst, dscp, trace_id, protocol, ttl, ip_flags, length, l4) = match ethertype {
        ETH_IPV4 => {
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return Err(ParseError("bad IPv4 header"));
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let l4 = ip.get(ihl..).ok_or(ParseError("bad IPv4 header length"))?;
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (
                IpAddr::V4(s),
                IpAddr::V4(d),
                ip[1] >> 2,
                u32::from(u16::from_be_bytes([ip[4], ip[5]])),
                ip[9],
                ip[8],
                ip[6] >> 5,
                u16::from_be_bytes([ip[2], ip[3]]),
                l4,
            )
        }
        ETH_IPV6 => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err(ParseError("bad IPv6 header"));
            }
            let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
            let tc = ((word >> 20) & 0xff) as u8;
            let mut s = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&ip[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                tc >> 2,
                word & 0xf_ffff,
                ip[6],
                ip[7],
                0,
                u16::from_be_bytes([ip[4], ip[5]]).saturating_add(40),
                &ip[40..],
            )
        }
        _ => return Err(ParseError("not IPv4 or IPv6")),
    };
    let port = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (src_port, dst_port) = match protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => (port(0), port(2)),
        _ => (None, None),
    };
    let tcp_flags = if protocol == PROTO_TCP {
        l4.get(13).copied()
    } else {
        None
    };
    let icmp_echo = match (protocol, l4.first()) {
        (PROTO_ICMP, Some(8 | 0)) | (PROTO_ICMPV6, Some(128 | 129)) => port(4).zip(port(6)),
        _ => None,
    };
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(transport: Transport) -> TracePacket {
        TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: "10.1.0.2"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            dst: "10.1.0.3"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            trace_id: 0xbeef,
            ttl: 64,
            ip_flags: 0b010,
            transport,
        }
    }

    fn v6(transport: Transport) -> TracePacket {
        TracePacket {
            src: "fd00:1::2"
                .parse()
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            dst: "fd00:1::3"
                .parse()
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            trace_id: 0xabcde,
            ..v4(transport)
        }
    }

    /// A checksum over data that includes a correct checksum field folds to 0.
    fn verifies(parts: &[&[u8]]) -> bool {
        checksum(parts) == 0
    }

    #[test]
    fn icmpv4_echo_has_trace_identity_and_valid_checksums() {
        let b = v4(Transport::Echo { id: 7, seq: 9 })
            .build()
            .unwrap_or_default();
        assert_eq!(b.len(), 14 + 20 + 8);
        assert_eq!(&b[12..14], &[0x08, 0x00]);
        let ip = &b[14..34];
        assert_eq!(ip[1], 0xfc, "DSCP 63, ECN 0");
        assert_eq!(&ip[4..6], &[0xbe, 0xef], "trace id in Identification");
        assert_eq!(ip[6], 0x40, "DF");
        assert_eq!(ip[8], 64);
        assert!(verifies(&[ip]), "IPv4 header checksum");
        let icmp = &b[34..];
        assert_eq!(icmp[0], 8);
        assert!(verifies(&[icmp]), "ICMP checksum");
        let p = parse(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.trace_id, p.dscp, p.protocol, p.icmp_echo),
            (0xbeef, 63, 1, Some((7, 9)))
        );
        assert_eq!(p.length, 28);
    }

    #[test]
    fn known_icmp_vector() {
        // The IPv4 header checksum of a classic example (RFC 1071 style check).
        let hdr = [
            0x45u8, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0,
            0xc7,
        ];
        assert_eq!(checksum(&[&hdr]), 0xb861);
    }

    #[test]
    fn icmpv6_checksum_covers_the_pseudo_header() {
        let pkt = v6(Transport::Echo { id: 1, seq: 2 });
        let b = pkt.build().unwrap_or_default();
        assert_eq!(&b[12..14], &[0x86, 0xdd]);
        let ip = &b[14..54];
        let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
        assert_eq!(word >> 28, 6);
        assert_eq!((word >> 20) & 0xff, 0xfc);
        assert_eq!(word & 0xfffff, 0xabcde, "trace id in the flow label");
        assert_eq!(ip[6], 58);
        let icmp = &b[54..];
        assert_eq!(icmp[0], 128);
        let (IpAddr::V6(s), IpAddr::V6(d)) = (pkt.src, pkt.dst) else {
            panic!("not v6")
        };
        assert!(verifies(&[&pseudo_v6(s, d, 58, icmp.len()), icmp]));
        assert!(
            !verifies(&[icmp]),
            "without the pseudo-header it must not verify"
        );
        let p = parse(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.trace_id, p.dscp, p.src, p.dst),
            (0xabcde, 63, pkt.src, pkt.dst)
        );
    }

    #[test]
    fn tcp_syn_and_udp_checksums() {
        let pkt = v4(Transport::Tcp {
            src_port: 40000,
            dst_port: 80,
            flags: 2,
        });
        let b = pkt.build().unwrap_or_default();
        let tcp = &b[34..];
        assert_eq!(tcp.len(), 20);
        assert_eq!(tcp[13], 2);
        let (IpAddr::V4(s), IpAddr::V4(d)) = (pkt.src, pkt.dst) else {
            panic!("not v4")
        };
        assert!(verifies(&[&pseudo_v4(s, d, 6, 20), tcp]));
        let p = parse(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.src_port, p.dst_port, p.tcp_flags),
            (Some(40000), Some(80), Some(2))
        );

        let pkt = v6(Transport::Udp {
            src_port: 5353,
            dst_port: 53,
        });
        let b = pkt.build().unwrap_or_default();
        let udp = &b[54..];
        let (IpAddr::V6(s), IpAddr::V6(d)) = (pkt.src, pkt.dst) else {
            panic!("not v6")
        };
        assert!(verifies(&[&pseudo_v6(s, d, 17, 8), udp]));
    }

    #[test]
    fn sctp_crc32c() {
        // RFC 3720 B.4 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let b = v4(Transport::Sctp {
            src_port: 1,
            dst_port: 2,
        })
        .build()
        .unwrap_or_default();
        let mut sctp = b[34..].to_vec();
        let stored = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
        sctp[8..12].fill(0);
        assert_eq!(crc32c(&sctp), stored);
    }

    #[test]
    fn bare_ip_with_another_protocol() {
        let b = v4(Transport::Bare(47)).build().unwrap_or_default();
        assert_eq!(b.len(), 34);
        assert_eq!(b[14 + 9], 47);
        assert_eq!(parse(&b).map(|p| p.protocol), Ok(47));
    }

    #[test]
    fn captured_packet_of_a_parsed_echo_and_tcp() {
        let b = v4(Transport::Echo { id: 7, seq: 9 })
            .build()
            .unwrap_or_default();
        let Ok(p) = parse(&b) else {
            panic!("unparseable");
        };
        let c = p.to_captured();
        assert_eq!(
            (c.src_ip.as_str(), c.dst_ip.as_str(), c.length),
            ("10.1.0.2", "10.1.0.3", 28)
        );
        assert_eq!(
            c.ip_header.as_ref().map(|h| (h.protocol, h.ttl)),
            Some((1, 64))
        );
        assert!(c.ipv6_header.is_none());
        let icmp = c.transport_header.and_then(|t| t.icmp);
        assert_eq!(icmp.map(|i| (i.id, i.sequence)), Some((7, 9)));

        let b = v6(Transport::Tcp {
            src_port: 40000,
            dst_port: 80,
            flags: 2,
        })
        .build()
        .unwrap_or_default();
        let Ok(p) = parse(&b) else {
            panic!("unparseable");
        };
        let c = p.to_captured();
        assert_eq!(c.ipv6_header.as_ref().and_then(|h| h.next_header), Some(6));
        let tcp = c.transport_header.and_then(|t| t.tcp);
        assert_eq!(
            tcp.map(|t| (t.src_port, t.dst_port, t.flags)),
            Some((40000, 80, Some(2)))
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse(&[0u8; 10]).is_err());
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(parse(&arp).is_err());
    }
}
