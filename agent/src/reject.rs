//! Answers for Antrea-native Reject rules (reference §4, IngressMetric / EgressMetric) and
//! for Service ports without endpoints (ServiceLB): the pipeline sends the packet to the agent, which packs a TCP RST (TCP) or an ICMP
//! "administratively prohibited" (type 3 code 10; ICMPv6 type 1 code 1) for everything else
//! and sends it back out of the port the packet came in on (over the tunnel: to its source
//! Node). Pure packet building here; [`reply_for`] decides from a packet-in.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, LinkSlice};

use crate::ovs::openflow::action::port;
use crate::ovs::openflow::oxm::{CLASS_NXM1, nxm};
use crate::ovs::openflow::{Action, Oxm, PacketIn, PacketOut};
use crate::pipeline::regs;
use crate::pipeline::tables::Table;
use crate::trace::packet::ipv6_first_fragment;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The packet-out answering a Reject packet-in, or `None` when the packet-in is not a Reject
/// (not ServiceLB, or a metric table without the APDeny mark) or must not be answered (a RST, an ICMP error, unparseable).
pub fn reply_for(pin: &PacketIn) -> Option<PacketOut> {
    let denied = pin.fields.reg(0).unwrap_or(0) & regs::AP_DENY_MARK != 0;
    match Table::from_id(pin.table_id)? {
        Table::IngressMetric | Table::EgressMetric if denied => {}
        // A Service port without endpoints.
        Table::ServiceLB => {}
        _ => return None,
    }
    let in_port = pin.fields.in_port()?;
    let frame = reject_frame(&pin.data)?;
    let mut actions = Vec::new();
    // Over the tunnel: back to the Node it came from.
    if let Some(src) = pin
        .fields
        .fields
        .iter()
        .find(|f| f.class == CLASS_NXM1 && f.field == nxm::TUN_IPV4_SRC)
        .and_then(|f| <[u8; 4]>::try_from(f.value()).ok())
        .filter(|v| *v != [0; 4])
    {
        actions.push(Action::SetField(Oxm::tun_ipv4_dst(Ipv4Addr::from(src))));
    }
    actions.push(Action::output(port::IN_PORT));
    Some(PacketOut::new(in_port, actions, frame))
}

/// The Ethernet frame answering `frame` (MACs and addresses swapped), per the module doc.
/// The denied packet is read with `etherparse` (IPv4 options and IPv6 extension headers
/// skipped: `proto` is the upper-layer protocol); a VLAN-tagged frame is not answered.
pub fn reject_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let sliced = LaxSlicedPacket::from_ethernet(frame).ok()?;
    if !sliced.link_exts.is_empty() || !matches!(sliced.link, Some(LinkSlice::Ethernet2(_))) {
        return None;
    }
    let ether = sliced.ether_payload()?;
    // The whole denied IP packet (the ICMP quote), bounded by its own length field.
    let (src, dst, ip_len, payload, first_fragment): (IpAddr, IpAddr, usize, _, bool) =
        match sliced.net.as_ref()? {
            LaxNetSlice::Ipv4(v4) if ether.ether_type == EtherType::IPV4 => {
                let h = v4.header();
                (
                    h.source_addr().into(),
                    h.destination_addr().into(),
                    usize::from(h.total_len()),
                    v4.payload(),
                    h.fragments_offset().value() == 0,
                )
            }
            LaxNetSlice::Ipv6(v6) if ether.ether_type == EtherType::IPV6 => {
                let h = v6.header();
                (
                    h.source_addr().into(),
                    h.destination_addr().into(),
                    40 + usize::from(h.payload_length()),
                    v6.payload(),
                    ipv6_first_fragment(v6.extensions()),
                )
            }
            _ => return None,
        };
    let ip_header = ether.payload.get(..ip_len.min(ether.payload.len()))?;
    let proto = payload.ip_number.0;
    // A later fragment does not start with the transport header.
    let l4: &[u8] = if first_fragment { payload.payload } else { &[] };
    let (reply_proto, l4_reply) = if proto == 6 {
        (6, tcp_rst(l4)?)
    } else {
        // Never answer an ICMP error (or ICMPv6 error) with another.
        if proto == 1 && !matches!(l4.first(), Some(0 | 8 | 13 | 15 | 17)) {
            return None;
        }
        if proto == 58 && l4.first().is_some_and(|t| *t < 128) {
            return None;
        }
        let (ty, code, p) = if src.is_ipv6() {
            (1u8, 1u8, 58u8)
        } else {
            (3, 10, 1)
        };
        // Original IP header + 8 bytes (v4); as much as fits in 1280 bytes (v6).
        let quote = if src.is_ipv6() {
            &ip_header[..ip_header.len().min(1280 - 48)]
        } else {
            let ihl = usize::from(ip_header[0] & 0x0f) * 4;
            &ip_header[..ip_header.len().min(ihl + 8)]
        };
        let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quote);
        (p, icmp)
    };
    let mut l4r = l4_reply;
    let mut out = Vec::with_capacity(14 + 40 + l4r.len());
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..14]);
    match (dst, src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let len = u16::try_from(20 + l4r.len()).ok()?;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, 64, reply_proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let sum_at = if reply_proto == 6 { 16 } else { 2 };
            let c = if reply_proto == 6 {
                let mut ph = Vec::with_capacity(12);
                ph.extend_from_slice(&s.octets());
                ph.extend_from_slice(&d.octets());
                ph.extend_from_slice(&[0, 6]);
                ph.extend_from_slice(&u16::try_from(l4r.len()).ok()?.to_be_bytes());
                checksum(&[&ph, &l4r])
            } else {
                checksum(&[&l4r])
            };
            l4r[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = u16::try_from(l4r.len()).ok()?;
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[reply_proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let mut ph = Vec::with_capacity(40);
            ph.extend_from_slice(&s.octets());
            ph.extend_from_slice(&d.octets());
            ph.extend_from_slice(&u32::from(len).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, reply_proto]);
            let sum_at = if reply_proto == 6 { 16 } else { 2 };
            let c = checksum(&[&ph, &l4r]);
            l4r[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        _ => return None,
    }
    out.extend_from_slice(&l4r);
    Some(out)
}

/// The Internet checksum (RFC 1071) over `parts`, each of even length but the last, as a
/// value whose `to_be_bytes` are the wire bytes.
fn checksum(parts: &[&[u8]]) -> u16 {
    parts
        .iter()
        .fold(etherparse::checksum::Sum16BitWords::new(), |sum, p| {
            sum.add_slice(p)
        })
        .ones_complement()
        // etherparse sums native-endian words (as its own headers do: `.to_be()` here).
        .to_be()
}

/// The TCP header of a RST answering `tcp` (RFC 9293 §3.10.7.1), checksum left 0.
fn tcp_rst(tcp: &[u8]) -> Option<Vec<u8>> {
    let sport = tcp.get(0..2)?;
    let dport = tcp.get(2..4)?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let ack = u32::from_be_bytes(tcp.get(8..12)?.try_into().ok()?);
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    if flags & TCP_RST != 0 {
        return None;
    }
    let payload = u32::try_from(tcp.len().saturating_sub(doff)).ok()?;
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(dport);
    h.extend_from_slice(sport);
    let (rseq, rack, rflags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let syn_fin = u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (
            0,
            seq.wrapping_add(payload).wrapping_add(syn_fin),
            TCP_RST | TCP_ACK,
        )
    };
    h.extend_from_slice(&rseq.to_be_bytes());
    h.extend_from_slice(&rack.to_be_bytes());
    h.extend_from_slice(&[0x50, rflags, 0, 0, 0, 0, 0, 0]);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Mac;
    use crate::trace::packet::{TracePacket, Transport, parse};

    fn pkt(dst: &str, transport: Transport) -> Vec<u8> {
        let dst: IpAddr = dst.parse().unwrap_or_else(|e| panic!("{e}"));
        let src: IpAddr = if dst.is_ipv6() {
            "fd00:1::2".parse().unwrap_or_else(|e| panic!("{e}"))
        } else {
            [10, 1, 0, 2].into()
        };
        TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src,
            dst,
            trace_id: 1,
            ttl: 64,
            ip_flags: 0,
            transport,
        }
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn syn_gets_rst_ack_with_the_next_sequence() {
        let syn = pkt(
            "10.1.0.3",
            Transport::Tcp {
                src_port: 40000,
                dst_port: 8080,
                flags: TCP_SYN,
            },
        );
        let seq = u32::from_be_bytes([syn[38], syn[39], syn[40], syn[41]]);
        let r = reject_frame(&syn).unwrap_or_else(|| panic!("no reply"));
        let p = parse(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.src, IpAddr::from([10, 1, 0, 3]));
        assert_eq!(p.dst, IpAddr::from([10, 1, 0, 2]));
        assert_eq!((p.src_port, p.dst_port), (Some(8080), Some(40000)));
        assert_eq!(p.tcp_flags, Some(TCP_RST | TCP_ACK));
        assert_eq!(p.src_mac, Mac([2, 0, 0, 0, 0, 2]));
        let ack = u32::from_be_bytes([r[42], r[43], r[44], r[45]]);
        assert_eq!(ack, seq.wrapping_add(1));
        // IP and TCP checksums verify (sum over the header / pseudo-header is 0).
        assert_eq!(checksum(&[&r[14..34]]), 0);
        let mut ph = r[26..34].to_vec();
        ph.extend_from_slice(&[0, 6, 0, 20]);
        assert_eq!(checksum(&[&ph, &r[34..]]), 0);
        // A RST is never answered.
        assert!(reject_frame(&r).is_none());
    }

    #[test]
    fn an_ipv6_syn_behind_extension_headers_gets_a_rst() {
        let syn = pkt(
            "fd00:1::3",
            Transport::Tcp {
                src_port: 40000,
                dst_port: 8080,
                flags: TCP_SYN,
            },
        );
        // A hop-by-hop header (PadN) between the IPv6 header and TCP.
        let mut with_hbh = syn[..54].to_vec();
        with_hbh[20] = 0;
        let plen = u16::from_be_bytes([with_hbh[18], with_hbh[19]]) + 8;
        with_hbh[18..20].copy_from_slice(&plen.to_be_bytes());
        with_hbh.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        with_hbh.extend_from_slice(&syn[54..]);
        let r = reject_frame(&with_hbh).unwrap_or_else(|| panic!("no reply"));
        let p = parse(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.protocol, p.src_port, p.dst_port),
            (6, Some(8080), Some(40000))
        );
        assert_eq!(p.tcp_flags, Some(TCP_RST | TCP_ACK));
        // A VLAN-tagged frame is not answered (the reply could not carry the tag).
        let mut tagged = syn[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&syn[12..]);
        assert!(reject_frame(&tagged).is_none());
    }

    #[test]
    fn other_protocols_get_admin_prohibited() {
        let r = reject_frame(&pkt(
            "10.1.0.3",
            Transport::Udp {
                src_port: 1,
                dst_port: 53,
            },
        ))
        .unwrap_or_else(|| panic!("no reply"));
        assert_eq!((r[23], r[34], r[35]), (1, 3, 10), "ICMP type 3 code 10");
        assert_eq!(checksum(&[&r[34..]]), 0);
        // ICMP errors are not answered.
        assert!(reject_frame(&r).is_none());
        let r6 = reject_frame(&pkt("fd00:1::3", Transport::Echo { id: 1, seq: 1 }))
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!((r6[20], r6[54], r6[55]), (58, 1, 1), "ICMPv6 type 1 code 1");
        assert!(reject_frame(&r6).is_none());
    }
}
