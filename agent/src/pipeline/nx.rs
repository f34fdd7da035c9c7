//! Nicira actions the OpenFlow codec does not model yet, encoded here as raw bytes
//! ([`Action::Unknown`]) with the layouts of OVS's `nx_action_*` structs (include/openvswitch
//! `ofp-actions.c`): `resubmit(,TABLE)`, and `ct(commit, zone, table, nat(...), exec(...))`.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use crate::ovs::openflow::Action;

const OFPAT_EXPERIMENTER: u16 = 0xffff;
const NX_VENDOR_ID: u32 = 0x0000_2320;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;
const NX_CT_F_COMMIT: u16 = 1;
const NX_CT_RECIRC_NONE: u8 = 0xff;
/// 16-bit `OFPP_IN_PORT`, what `resubmit(,T)` carries as its port.
const OFPP_IN_PORT_16: u16 = 0xfff8;

const NX_NAT_F_SRC: u16 = 1;
const NX_NAT_F_DST: u16 = 2;
const NX_NAT_RANGE_IPV4_MIN: u16 = 1;
const NX_NAT_RANGE_IPV6_MIN: u16 = 4;
const NX_NAT_RANGE_PROTO_MIN: u16 = 16;

fn raw(buf: BytesMut) -> Action {
    Action::Unknown {
        kind: OFPAT_EXPERIMENTER,
        raw: buf.to_vec(),
    }
}

fn pad8(buf: &mut BytesMut) {
    while !buf.len().is_multiple_of(8) {
        buf.put_u8(0);
    }
}

/// `resubmit(,table)`.
pub fn resubmit(table: u8) -> Action {
    let mut b = BytesMut::with_capacity(16);
    b.put_u16(OFPAT_EXPERIMENTER);
    b.put_u16(16);
    b.put_u32(NX_VENDOR_ID);
    b.put_u16(NXAST_RESUBMIT_TABLE);
    b.put_u16(OFPP_IN_PORT_16);
    b.put_u8(table);
    b.put_slice(&[0; 3]);
    raw(b)
}

/// Which address a `nat(...)` rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `nat(dst=ip[:port])`.
    Dst(IpAddr, Option<u16>),
    /// `nat(src=ip)`.
    Src(IpAddr),
}

fn nat_bytes(nat: Nat) -> BytesMut {
    let (flags, ip, port) = match nat {
        Nat::Dst(ip, port) => (NX_NAT_F_DST, ip, port),
        Nat::Src(ip) => (NX_NAT_F_SRC, ip, None),
    };
    let mut range = match ip {
        IpAddr::V4(_) => NX_NAT_RANGE_IPV4_MIN,
        IpAddr::V6(_) => NX_NAT_RANGE_IPV6_MIN,
    };
    if port.is_some() {
        range |= NX_NAT_RANGE_PROTO_MIN;
    }
    let mut b = BytesMut::with_capacity(40);
    b.put_u16(OFPAT_EXPERIMENTER);
    b.put_u16(0);
    b.put_u32(NX_VENDOR_ID);
    b.put_u16(NXAST_NAT);
    b.put_u16(0); // pad
    b.put_u16(flags);
    b.put_u16(range);
    match ip {
        IpAddr::V4(v4) => b.put_slice(&v4.octets()),
        IpAddr::V6(v6) => b.put_slice(&v6.octets()),
    }
    if let Some(p) = port {
        b.put_u16(p);
    }
    pad8(&mut b);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// `ct(commit?, zone=zone, table=table?, nat(...)?, exec(actions))`.
pub fn ct(commit: bool, zone: u16, table: Option<u8>, nat: Option<Nat>, exec: &[Action]) -> Action {
    let mut b = BytesMut::with_capacity(64);
    b.put_u16(OFPAT_EXPERIMENTER);
    b.put_u16(0);
    b.put_u32(NX_VENDOR_ID);
    b.put_u16(NXAST_CT);
    b.put_u16(if commit { NX_CT_F_COMMIT } else { 0 });
    b.put_u32(0); // zone_src: immediate
    b.put_u16(zone);
    b.put_u8(table.unwrap_or(NX_CT_RECIRC_NONE));
    b.put_slice(&[0; 3]);
    b.put_u16(0); // alg
    if let Some(n) = nat {
        b.put_slice(&nat_bytes(n));
    }
    for a in exec {
        a.encode(&mut b);
    }
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    raw(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(a: &Action) -> Vec<u8> {
        let mut b = BytesMut::new();
        a.encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn resubmit_layout() {
        assert_eq!(
            bytes(&resubmit(11)),
            [
                0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 14, 0xff, 0xf8, 11, 0, 0, 0
            ]
        );
    }

    #[test]
    fn ct_with_dnat_is_padded_and_sized() {
        let a = ct(
            true,
            65520,
            Some(12),
            Some(Nat::Dst([10, 1, 0, 3].into(), Some(8080))),
            &[],
        );
        let b = bytes(&a);
        assert_eq!(b.len(), 24 + 24);
        assert_eq!(&b[2..4], &48u16.to_be_bytes());
        // nat: flags dst, range ipv4_min | proto_min, 10.1.0.3, 8080.
        assert_eq!(&b[24 + 2..24 + 4], &24u16.to_be_bytes());
        assert_eq!(
            &b[24 + 12..24 + 22],
            &[0, 2, 0, 17, 10, 1, 0, 3, 0x1f, 0x90]
        );
    }
}
