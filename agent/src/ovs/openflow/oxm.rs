//! OXM TLVs and the OpenFlow 1.5 `ofp_match` (type OXM) that carries them.
//!
//! A field is kept as `(class, field, hasmask, payload)` so that anything OVS sends, including
//! classes we never emit, decodes into a value and re-encodes byte for byte. Typed
//! constructors cover the fields the pipeline uses; typed accessors on [`Match`] read what
//! packet-ins carry (in_port, registers, tunnel destination, conntrack tuple).
//!
//! Registers: we *emit* Nicira `NXM_NX_REGn` (class 0x0001, field n, 4 bytes), as `ovs-ofctl`
//! does; OVS *reports* registers in OF1.5 packet-ins as `OXM_OF_PKT_REGn` (class 0x8001, field
//! n, 8 bytes: xreg n = reg(2n) << 32 | reg(2n+1)), so [`Match::reg`] reads both.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::wire::{DecodeError, Reader, pad8, patch_len, put_zeros};

/// OXM class of the OpenFlow basic fields.
pub const CLASS_BASIC: u16 = 0x8000;
/// OXM class of Nicira's NXM_NX_* fields (registers, tunnel, conntrack).
pub const CLASS_NXM1: u16 = 0x0001;
/// OXM class of OF1.5 packet registers (64-bit xregs).
pub const CLASS_PKT_REGS: u16 = 0x8001;
/// OXM class of experimenter fields (payload starts with a 4-byte experimenter id).
pub const CLASS_EXPERIMENTER: u16 = 0xffff;

/// OpenFlow basic field numbers (openflow-1.5.h `oxm_ofb_match_fields`).
pub mod basic {
    pub const IN_PORT: u8 = 0;
    pub const METADATA: u8 = 2;
    pub const ETH_DST: u8 = 3;
    pub const ETH_SRC: u8 = 4;
    pub const ETH_TYPE: u8 = 5;
    pub const IP_DSCP: u8 = 8;
    pub const IP_ECN: u8 = 9;
    pub const IP_PROTO: u8 = 10;
    pub const IPV4_SRC: u8 = 11;
    pub const IPV4_DST: u8 = 12;
    pub const TCP_SRC: u8 = 13;
    pub const TCP_DST: u8 = 14;
    pub const UDP_SRC: u8 = 15;
    pub const UDP_DST: u8 = 16;
    pub const SCTP_SRC: u8 = 17;
    pub const SCTP_DST: u8 = 18;
    pub const ICMPV4_TYPE: u8 = 19;
    pub const ICMPV4_CODE: u8 = 20;
    pub const ARP_OP: u8 = 21;
    pub const ARP_SPA: u8 = 22;
    pub const ARP_TPA: u8 = 23;
    pub const ARP_SHA: u8 = 24;
    pub const ARP_THA: u8 = 25;
    pub const IPV6_SRC: u8 = 26;
    pub const IPV6_DST: u8 = 27;
    pub const IPV6_FLABEL: u8 = 28;
    pub const ICMPV6_TYPE: u8 = 29;
    pub const ICMPV6_CODE: u8 = 30;
    pub const TUNNEL_ID: u8 = 38;
}

/// `ct_state` bits.
pub mod ct_state {
    pub const NEW: u32 = 0x01;
    pub const EST: u32 = 0x02;
    pub const REL: u32 = 0x04;
    pub const RPL: u32 = 0x08;
    pub const INV: u32 = 0x10;
    pub const TRK: u32 = 0x20;
}

/// Nicira NXM_NX_* field numbers (nicira-ext.h / meta-flow.h) in class 0x0001.
pub mod nxm {
    /// NXM_NX_REG0..REG15 are fields 0..15.
    pub const REG0: u8 = 0;
    pub const TUN_IPV4_SRC: u8 = 31;
    pub const TUN_IPV4_DST: u8 = 32;
    /// `tun_metadata0` (variable length; the Geneve option table says which option).
    pub const TUN_METADATA0: u8 = 40;
    pub const PKT_MARK: u8 = 33;
    pub const CT_STATE: u8 = 105;
    pub const CT_ZONE: u8 = 106;
    pub const CT_MARK: u8 = 107;
    pub const TUN_IPV6_SRC: u8 = 109;
    pub const TUN_IPV6_DST: u8 = 110;
    pub const CT_NW_SRC: u8 = 120;
    pub const CT_NW_DST: u8 = 121;
    pub const CT_IPV6_SRC: u8 = 122;
    pub const CT_IPV6_DST: u8 = 123;
    pub const CT_TP_SRC: u8 = 124;
    pub const CT_TP_DST: u8 = 125;
}

/// One OXM TLV. `payload` is value followed by mask when `has_mask` (for the experimenter
/// class it starts with the experimenter id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Oxm {
    pub class: u16,
    pub field: u8,
    pub has_mask: bool,
    pub payload: Vec<u8>,
}

impl Oxm {
    /// An exact-match field.
    pub fn exact(class: u16, field: u8, value: &[u8]) -> Self {
        Self {
            class,
            field,
            has_mask: false,
            payload: value.to_vec(),
        }
    }

    /// A masked field; `value` and `mask` must have the same length.
    pub fn masked(class: u16, field: u8, value: &[u8], mask: &[u8]) -> Self {
        let mut payload = value.to_vec();
        payload.extend_from_slice(mask);
        Self {
            class,
            field,
            has_mask: true,
            payload,
        }
    }

    pub fn in_port(port: u32) -> Self {
        Self::exact(CLASS_BASIC, basic::IN_PORT, &port.to_be_bytes())
    }
    pub fn eth_type(t: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::ETH_TYPE, &t.to_be_bytes())
    }
    pub fn eth_src(mac: [u8; 6]) -> Self {
        Self::exact(CLASS_BASIC, basic::ETH_SRC, &mac)
    }
    pub fn eth_dst(mac: [u8; 6]) -> Self {
        Self::exact(CLASS_BASIC, basic::ETH_DST, &mac)
    }
    pub fn ipv4_src(ip: Ipv4Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::IPV4_SRC, &ip.octets())
    }
    pub fn ipv4_dst(ip: Ipv4Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::IPV4_DST, &ip.octets())
    }
    pub fn ipv6_src(ip: Ipv6Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::IPV6_SRC, &ip.octets())
    }
    pub fn ipv6_dst(ip: Ipv6Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::IPV6_DST, &ip.octets())
    }
    pub fn ip_proto(p: u8) -> Self {
        Self::exact(CLASS_BASIC, basic::IP_PROTO, &[p])
    }
    /// DSCP, the upper six bits of the TOS / traffic class byte (0..=63).
    pub fn ip_dscp(dscp: u8) -> Self {
        Self::exact(CLASS_BASIC, basic::IP_DSCP, &[dscp & 0x3f])
    }
    pub fn tcp_src(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::TCP_SRC, &p.to_be_bytes())
    }
    pub fn tcp_dst(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::TCP_DST, &p.to_be_bytes())
    }
    pub fn udp_src(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::UDP_SRC, &p.to_be_bytes())
    }
    pub fn udp_dst(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::UDP_DST, &p.to_be_bytes())
    }
    pub fn sctp_src(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::SCTP_SRC, &p.to_be_bytes())
    }
    pub fn sctp_dst(p: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::SCTP_DST, &p.to_be_bytes())
    }
    pub fn arp_op(op: u16) -> Self {
        Self::exact(CLASS_BASIC, basic::ARP_OP, &op.to_be_bytes())
    }
    pub fn arp_spa(ip: Ipv4Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::ARP_SPA, &ip.octets())
    }
    pub fn arp_tpa(ip: Ipv4Addr) -> Self {
        Self::exact(CLASS_BASIC, basic::ARP_TPA, &ip.octets())
    }
    pub fn arp_sha(mac: [u8; 6]) -> Self {
        Self::exact(CLASS_BASIC, basic::ARP_SHA, &mac)
    }
    pub fn arp_tha(mac: [u8; 6]) -> Self {
        Self::exact(CLASS_BASIC, basic::ARP_THA, &mac)
    }
    pub fn icmpv6_type(t: u8) -> Self {
        Self::exact(CLASS_BASIC, basic::ICMPV6_TYPE, &[t])
    }
    /// Nicira register `NXM_NX_REGn` (n in 0..16), exact.
    pub fn reg(n: u8, value: u32) -> Self {
        Self::exact(CLASS_NXM1, nxm::REG0 + (n & 0x0f), &value.to_be_bytes())
    }
    /// Nicira register `NXM_NX_REGn` with a mask: matches `reg & mask == value & mask`.
    pub fn reg_masked(n: u8, value: u32, mask: u32) -> Self {
        Self::masked(
            CLASS_NXM1,
            nxm::REG0 + (n & 0x0f),
            &value.to_be_bytes(),
            &mask.to_be_bytes(),
        )
    }
    /// `ct_state` under `mask` (bits: new 0x01, est 0x02, rel 0x04, rpl 0x08, inv 0x10,
    /// trk 0x20).
    pub fn ct_state(value: u32, mask: u32) -> Self {
        Self::masked(
            CLASS_NXM1,
            nxm::CT_STATE,
            &value.to_be_bytes(),
            &mask.to_be_bytes(),
        )
    }
    /// `ct_mark=value/mask` (Nicira): a match, or with `SetField` inside `ct(exec(...))` the
    /// bits a commit writes.
    pub fn ct_mark_masked(value: u32, mask: u32) -> Self {
        Self::masked(
            CLASS_NXM1,
            nxm::CT_MARK,
            &value.to_be_bytes(),
            &mask.to_be_bytes(),
        )
    }
    pub fn tun_ipv4_dst(ip: Ipv4Addr) -> Self {
        Self::exact(CLASS_NXM1, nxm::TUN_IPV4_DST, &ip.octets())
    }

    /// The value half of the payload (after the experimenter id for class 0xffff).
    pub fn value(&self) -> &[u8] {
        let body = if self.class == CLASS_EXPERIMENTER && self.payload.len() >= 4 {
            &self.payload[4..]
        } else {
            &self.payload[..]
        };
        if self.has_mask {
            &body[..body.len() / 2]
        } else {
            body
        }
    }

    /// The mask half, if any.
    pub fn mask(&self) -> Option<&[u8]> {
        if !self.has_mask {
            return None;
        }
        let body = if self.class == CLASS_EXPERIMENTER && self.payload.len() >= 4 {
            &self.payload[4..]
        } else {
            &self.payload[..]
        };
        Some(&body[body.len() / 2..])
    }

    /// Encoded length: 4-byte header plus payload.
    pub fn wire_len(&self) -> usize {
        4 + self.payload.len()
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class);
        buf.put_u8((self.field << 1) | u8::from(self.has_mask));
        // Payloads are at most 2 x 16 bytes (+4), so this never truncates.
        buf.put_u8(u8::try_from(self.payload.len()).unwrap_or(u8::MAX));
        buf.put_slice(&self.payload);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let class = r.u16()?;
        let fh = r.u8()?;
        let len = usize::from(r.u8()?);
        let payload = r.bytes(len)?.to_vec();
        let has_mask = fh & 1 == 1;
        let oxm = Self {
            class,
            field: fh >> 1,
            has_mask,
            payload,
        };
        let body = if class == CLASS_EXPERIMENTER {
            len.checked_sub(4)
        } else {
            Some(len)
        };
        if has_mask && body.is_none_or(|b| b % 2 != 0) {
            return Err(DecodeError::new(
                "oxm",
                format!("masked field with odd length {len}"),
            ));
        }
        Ok(oxm)
    }
}

/// An OpenFlow 1.5 `ofp_match` of type OXM: a list of fields, all of which must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    pub fields: Vec<Oxm>,
}

/// `OFPMT_OXM`.
const MATCH_TYPE_OXM: u16 = 1;

impl Match {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style append.
    #[must_use]
    pub fn with(mut self, oxm: Oxm) -> Self {
        self.fields.push(oxm);
        self
    }

    /// Encoded length including the padding to 8 bytes.
    pub fn wire_len(&self) -> usize {
        let len = 4 + self.fields.iter().map(Oxm::wire_len).sum::<usize>();
        len + pad8(len)
    }

    /// Encodes `ofp_match` (type, length without padding, fields) and pads to 8 bytes.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_u16(MATCH_TYPE_OXM);
        buf.put_u16(0);
        for f in &self.fields {
            f.encode(buf);
        }
        let len = buf.len() - start;
        patch_len(buf, start + 2, len);
        put_zeros(buf, pad8(len));
    }

    /// Decodes `ofp_match` and its padding.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if ty != MATCH_TYPE_OXM {
            return Err(DecodeError::new(
                "match",
                format!("unsupported match type {ty}"),
            ));
        }
        if len < 4 {
            return Err(DecodeError::new(
                "match",
                format!("length {len} below header size"),
            ));
        }
        let body = r.bytes(len - 4)?;
        r.skip(pad8(len))?;
        let mut fr = Reader::new(body, "oxm");
        let mut fields = Vec::new();
        while fr.remaining() > 0 {
            fields.push(Oxm::decode(&mut fr)?);
        }
        fr.finish()?;
        Ok(Self { fields })
    }

    /// The first field that appears twice, as (class, field). OVS refuses such a match
    /// (OFPBMC_DUP_FIELD), and inside a bundle that refusal takes the whole pipeline with it.
    pub fn repeated_field(&self) -> Option<(u16, u8)> {
        self.fields.iter().enumerate().find_map(|(i, f)| {
            self.fields[..i]
                .iter()
                .any(|g| g.class == f.class && g.field == f.field)
                .then_some((f.class, f.field))
        })
    }

    fn find(&self, class: u16, field: u8) -> Option<&Oxm> {
        self.fields
            .iter()
            .find(|f| f.class == class && f.field == field)
    }

    fn u32_of(&self, class: u16, field: u8) -> Option<u32> {
        let v = self.find(class, field)?.value();
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// `in_port`, if present.
    pub fn in_port(&self) -> Option<u32> {
        self.u32_of(CLASS_BASIC, basic::IN_PORT)
    }

    /// Register `n` (0..16), from `NXM_NX_REGn` or from the OF1.5 packet register that holds
    /// it; bits outside a reported mask read as 0. `None` when the match does not carry it.
    pub fn reg(&self, n: u8) -> Option<u32> {
        if let Some(f) = self.find(CLASS_NXM1, nxm::REG0 + n) {
            let v = u32::from_be_bytes(f.value().try_into().ok()?);
            let m = f
                .mask()
                .and_then(|m| m.try_into().ok())
                .map_or(u32::MAX, u32::from_be_bytes);
            return Some(v & m);
        }
        let f = self.find(CLASS_PKT_REGS, n / 2)?;
        let v = u64::from_be_bytes(f.value().try_into().ok()?);
        let m = f
            .mask()
            .and_then(|m| m.try_into().ok())
            .map_or(u64::MAX, u64::from_be_bytes);
        let x = v & m;
        // xreg n holds reg(2n) in its upper half and reg(2n+1) in its lower half.
        let half = if n.is_multiple_of(2) {
            x >> 32
        } else {
            x & 0xffff_ffff
        };
        u32::try_from(half).ok()
    }

    /// `tun_ipv4_dst` (Nicira), if present.
    pub fn tun_ipv4_dst(&self) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self
            .find(CLASS_NXM1, nxm::TUN_IPV4_DST)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv4Addr::from(v))
    }

    /// `tun_ipv6_dst` (Nicira), if present.
    pub fn tun_ipv6_dst(&self) -> Option<Ipv6Addr> {
        let v: [u8; 16] = self
            .find(CLASS_NXM1, nxm::TUN_IPV6_DST)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv6Addr::from(v))
    }

    /// `ct_state` (Nicira), if present: the packet's conntrack state bits ([`ct_state`]).
    pub fn ct_state(&self) -> Option<u32> {
        self.u32_of(CLASS_NXM1, nxm::CT_STATE)
    }

    /// `ct_mark` (Nicira), if present.
    pub fn ct_mark(&self) -> Option<u32> {
        self.u32_of(CLASS_NXM1, nxm::CT_MARK)
    }

    /// `pkt_mark` (Nicira), if present.
    pub fn pkt_mark(&self) -> Option<u32> {
        self.u32_of(CLASS_NXM1, nxm::PKT_MARK)
    }

    /// The conntrack zone of the packet's last `ct` (`ct_zone`), if present.
    pub fn ct_zone(&self) -> Option<u16> {
        self.u16_of(nxm::CT_ZONE)
    }

    /// Original-direction conntrack source port (`ct_tp_src`), if present.
    pub fn ct_tp_src(&self) -> Option<u16> {
        self.u16_of(nxm::CT_TP_SRC)
    }

    /// Original-direction conntrack destination port (`ct_tp_dst`), if present.
    pub fn ct_tp_dst(&self) -> Option<u16> {
        self.u16_of(nxm::CT_TP_DST)
    }

    fn u16_of(&self, field: u8) -> Option<u16> {
        let v: [u8; 2] = self.find(CLASS_NXM1, field)?.value().try_into().ok()?;
        Some(u16::from_be_bytes(v))
    }

    /// Original-direction conntrack source/destination (`ct_nw_src`/`ct_nw_dst`).
    pub fn ct_nw_src(&self) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self
            .find(CLASS_NXM1, nxm::CT_NW_SRC)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv4Addr::from(v))
    }

    pub fn ct_nw_dst(&self) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self
            .find(CLASS_NXM1, nxm::CT_NW_DST)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv4Addr::from(v))
    }

    pub fn ct_ipv6_src(&self) -> Option<Ipv6Addr> {
        let v: [u8; 16] = self
            .find(CLASS_NXM1, nxm::CT_IPV6_SRC)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv6Addr::from(v))
    }

    pub fn ct_ipv6_dst(&self) -> Option<Ipv6Addr> {
        let v: [u8; 16] = self
            .find(CLASS_NXM1, nxm::CT_IPV6_DST)?
            .value()
            .try_into()
            .ok()?;
        Some(Ipv6Addr::from(v))
    }
}
