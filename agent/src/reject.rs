//! Answers for Antrea-native Reject rules (reference §4, IngressMetric / EgressMetric) and
//! for Service ports without endpoints (ServiceLB): the pipeline sends the packet to the agent, which packs a TCP RST (TCP) or an ICMP
//! "administratively prohibited" (type 3 code 10; ICMPv6 type 1 code 1) for everything else
//! and sends it back out of the port the packet came in on (over the tunnel: to its source
//! Node). Pure packet building here; [`reply_for`] decides from a packet-in.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::icmpv6::DestUnreachableCode;
use etherparse::{
    EtherType, Icmpv4Type, Icmpv6Type, IpHeaders, Ipv4Header, Ipv6Header, LaxNetSlice,
    LaxSlicedPacket, LinkSlice, PacketBuilder, TcpHeader, TcpSlice,
};

use crate::ovs::openflow::action::port;
use crate::ovs::openflow::oxm::{CLASS_NXM1, nxm};
use crate::ovs::openflow::{Action, Oxm, PacketIn, PacketOut};
use crate::pipeline::regs;
use crate::pipeline::tables::Table;
use crate::trace::packet::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, ipv6_first_fragment};

/// The packet-out answering a Reject packet-in, or `None` when the packet-in is not a Reject
/// (not ServiceLB, or a metric table without the APDeny mark of a rule `is_reject` names by
/// its conjunction id) or must not be answered (a RST, an ICMP error, unparseable).
///
/// Drop and Reject rules set the same APDeny mark, and a live trace's copy of a denied
/// packet arrives here for both: only the rule's own action tells them apart, so a Drop stays
/// a silent drop while a live trace watches it.
pub fn reply_for(pin: &PacketIn, is_reject: impl Fn(u32) -> bool) -> Option<PacketOut> {
    let reg0 = pin.fields.reg(0).unwrap_or(0);
    let denied = reg0 & regs::AP_DENY_MARK != 0
        && pin.fields.reg(regs::AP_CONJ_ID_REG).is_some_and(&is_reject);
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
    // Back to the sender: MACs and addresses swapped, fresh IP header (TTL 64, DF).
    let ip = match (dst, src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpHeaders::Ipv4(
            Ipv4Header {
                dont_fragment: true,
                time_to_live: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
        _ => return None,
    };
    let src_mac: [u8; 6] = frame.get(0..6)?.try_into().ok()?;
    let dst_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let step = PacketBuilder::ethernet2(src_mac, dst_mac).ip(ip);
    let mut out = Vec::with_capacity(14 + 40 + 20);
    let written = if proto == PROTO_TCP {
        step.tcp_header(tcp_rst(l4)?).write(&mut out, &[])
    } else {
        // Never answer an ICMP error (or ICMPv6 error) with another.
        if proto == PROTO_ICMP && !matches!(l4.first(), Some(0 | 8 | 13 | 15 | 17)) {
            return None;
        }
        if proto == PROTO_ICMPV6 && l4.first().is_some_and(|t| *t < 128) {
            return None;
        }
        if src.is_ipv6() {
            // Type 1 code 1; as much of the packet as fits in 1280 bytes.
            let quote = &ip_header[..ip_header.len().min(1280 - 48)];
            step.icmpv6(Icmpv6Type::DestinationUnreachable(
                DestUnreachableCode::Prohibited,
            ))
            .write(&mut out, quote)
        } else {
            // Type 3 code 10; the original IP header + 8 bytes.
            let ihl = usize::from(ip_header.first()? & 0x0f) * 4;
            let quote = &ip_header[..ip_header.len().min(ihl + 8)];
            step.icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::HostProhibited,
            ))
            .write(&mut out, quote)
        }
    };
    written.ok()?;
    Some(out)
}

/// The TCP header of a RST answering `tcp` (RFC 9293 §3.10.7.1); the builder fills in the
/// checksum.
fn tcp_rst(tcp: &[u8]) -> Option<TcpHeader> {
    let t = TcpSlice::from_slice(tcp).ok()?;
    if t.rst() {
        return None;
    }
    let payload = u32::try_from(t.payload().len()).ok()?;
    let mut h = TcpHeader::new(t.destination_port(), t.source_port(), 0, 0);
    h.rst = true;
    if t.ack() {
        h.sequence_number = t.acknowledgment_number();
    } else {
        let syn_fin = u32::from(t.syn()) + u32::from(t.fin());
        h.ack = true;
        h.acknowledgment_number = t
            .sequence_number()
            .wrapping_add(payload)
            .wrapping_add(syn_fin);
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Mac;
    use crate::trace::packet::{TracePacket, Transport, parse};

    const TCP_SYN: u8 = 0x02;
    const TCP_RST: u8 = 0x04;
    const TCP_ACK: u8 = 0x10;

    use crate::trace::packet::inet_checksum as checksum;

    fn pkt(dst: &str, transport: Transport) -> Vec<u8> {
        let dst: IpAddr = dst.parse().unwrap();
        let src: IpAddr = if dst.is_ipv6() {
            "fd00:1::2".parse().unwrap()
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
            secret: 0,
        }
        .build()
        .unwrap()
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
        let p = parse(&r).unwrap();
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
        let p = parse(&r).unwrap();
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
