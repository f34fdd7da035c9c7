//! Nicira `NXT_CT_FLUSH` (an `OFPT_EXPERIMENTER` message, OVS 3.1+): removing conntrack entries
//! by zone and original tuple.

use bytes::{BufMut, BytesMut};

use super::super::wire::{DecodeError, Reader, pad8, put_zeros};

/// Nicira's experimenter id.
const NX_VENDOR_ID: u32 = 0x0000_2320;
/// `NXT_CT_FLUSH` subtype.
const NXT_CT_FLUSH: u32 = 32;

/// `nx_ct_flush_tlv_type`: outer properties, then the tuple's nested ones.
mod ct_tlv {
    pub const ORIG_TUPLE: u16 = 0;
    pub const ZONE_ID: u16 = 2;
    pub const SRC: u16 = 0;
    pub const DST: u16 = 1;
    pub const SRC_PORT: u16 = 2;
    pub const DST_PORT: u16 = 3;
    pub const ICMP_ID: u16 = 4;
    pub const ICMP_TYPE: u16 = 5;
    pub const ICMP_CODE: u16 = 6;
}

/// The original-direction tuple of the connections an [`CtFlush`] removes. Addresses travel as
/// IPv6 (IPv4-mapped for IPv4); a field left `None` matches any value, and OVS looks up a
/// complete 5-tuple directly instead of walking the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CtTuple {
    pub src: Option<std::net::IpAddr>,
    pub dst: Option<std::net::IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP / ICMPv6: (id, type, code); always sent for ICMP, as `ovs-ofctl ct-flush` does.
    pub icmp: Option<(u16, u8, u8)>,
}

/// `NXT_CT_FLUSH`: removes the conntrack entries of `zone` (every zone when `None`) whose
/// original direction matches `orig` and protocol `ip_proto`. Nothing to remove is not an
/// error (the switch answers nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtFlush {
    pub ip_proto: u8,
    pub zone: Option<u16>,
    pub orig: CtTuple,
}

/// One property: type, length (header + value), the value, zero padding to 8.
fn put_prop(buf: &mut BytesMut, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.put_u16(ty);
    buf.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
    buf.put_slice(value);
    put_zeros(buf, pad8(len));
}

fn mapped(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn unmapped(b: &[u8]) -> Result<std::net::IpAddr, DecodeError> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| DecodeError::new("ct_flush", "address is not 16 bytes"))?;
    let v6 = std::net::Ipv6Addr::from(a);
    Ok(match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    })
}

impl CtFlush {
    pub(super) fn is_ct_flush(body: &[u8]) -> bool {
        body.len() >= 8
            && body[0..4] == NX_VENDOR_ID.to_be_bytes()
            && body[4..8] == NXT_CT_FLUSH.to_be_bytes()
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(NX_VENDOR_ID);
        buf.put_u32(NXT_CT_FLUSH);
        // struct nx_ct_flush: ip_proto, 7 zero bytes.
        buf.put_u8(self.ip_proto);
        put_zeros(buf, 7);
        let mut nested = BytesMut::new();
        let t = &self.orig;
        if let Some(ip) = t.src {
            put_prop(&mut nested, ct_tlv::SRC, &mapped(ip));
        }
        if let Some(ip) = t.dst {
            put_prop(&mut nested, ct_tlv::DST, &mapped(ip));
        }
        if let Some((id, ty, code)) = t.icmp {
            put_prop(
                &mut nested,
                ct_tlv::ICMP_ID,
                &[id.to_be_bytes(), [0, 0]].concat(),
            );
            put_prop(&mut nested, ct_tlv::ICMP_TYPE, &[ty]);
            put_prop(&mut nested, ct_tlv::ICMP_CODE, &[code]);
        } else {
            if let Some(p) = t.src_port {
                put_prop(
                    &mut nested,
                    ct_tlv::SRC_PORT,
                    &[p.to_be_bytes(), [0, 0]].concat(),
                );
            }
            if let Some(p) = t.dst_port {
                put_prop(
                    &mut nested,
                    ct_tlv::DST_PORT,
                    &[p.to_be_bytes(), [0, 0]].concat(),
                );
            }
        }
        if !nested.is_empty() {
            // A nested property: 4 bytes of padding after its header, then the properties.
            let len = 8 + nested.len();
            buf.put_u16(ct_tlv::ORIG_TUPLE);
            buf.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
            put_zeros(buf, 4);
            buf.put_slice(&nested);
        }
        if let Some(zone) = self.zone {
            put_prop(buf, ct_tlv::ZONE_ID, &[zone.to_be_bytes(), [0, 0]].concat());
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ip_proto = r.u8()?;
        r.skip(7)?;
        let mut out = Self {
            ip_proto,
            zone: None,
            orig: CtTuple::default(),
        };
        while r.remaining() > 0 {
            let (ty, value) = pull_prop(r)?;
            match ty {
                ct_tlv::ORIG_TUPLE => out.orig = decode_tuple(value.get(4..).unwrap_or_default())?,
                ct_tlv::ZONE_ID => out.zone = Some(Reader::new(value, "ct_flush zone").u16()?),
                other => {
                    return Err(DecodeError::new(
                        "ct_flush",
                        format!("unsupported property {other}"),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A nested tuple property's contents (after its 4 bytes of padding).
fn decode_tuple(b: &[u8]) -> Result<CtTuple, DecodeError> {
    let mut r = Reader::new(b, "ct_flush tuple");
    let mut t = CtTuple::default();
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    while r.remaining() > 0 {
        let (ty, v) = pull_prop(&mut r)?;
        let mut v = Reader::new(v, "ct_flush tuple property");
        match ty {
            ct_tlv::SRC => t.src = Some(unmapped(v.bytes(16)?)?),
            ct_tlv::DST => t.dst = Some(unmapped(v.bytes(16)?)?),
            ct_tlv::SRC_PORT => t.src_port = Some(v.u16()?),
            ct_tlv::DST_PORT => t.dst_port = Some(v.u16()?),
            ct_tlv::ICMP_ID => icmp_id = Some(v.u16()?),
            ct_tlv::ICMP_TYPE => icmp_type = Some(v.u8()?),
            ct_tlv::ICMP_CODE => icmp_code = Some(v.u8()?),
            other => {
                return Err(DecodeError::new(
                    "ct_flush",
                    format!("unknown tuple property {other}"),
                ));
            }
        }
        // Values are padded to 4 bytes inside the property (`ofpprop_put_be16`).
        v.rest();
    }
    if icmp_id.is_some() || icmp_type.is_some() || icmp_code.is_some() {
        t.icmp = Some((
            icmp_id.unwrap_or(0),
            icmp_type.unwrap_or(0),
            icmp_code.unwrap_or(0),
        ));
    }
    Ok(t)
}

/// Reads one property (type, value without header or padding).
fn pull_prop<'a>(r: &mut Reader<'a>) -> Result<(u16, &'a [u8]), DecodeError> {
    let ty = r.u16()?;
    let len = usize::from(r.u16()?);
    if len < 4 {
        return Err(DecodeError::new(
            "ct_flush",
            format!("property length {len}"),
        ));
    }
    let value = r.bytes(len - 4)?;
    r.skip(pad8(len).min(r.remaining()))?;
    Ok((ty, value))
}
