//! Nicira's Geneve option table (`NXT_TLV_TABLE_MOD` / `_REQUEST` / `_REPLY`, OVS 2.5+):
//! which Geneve option a `tun_metadata<N>` field stands for. The switch keeps one table for
//! every bridge of the datapath; a flow may match or set `tun_metadata<N>` only once it is
//! mapped.

use bytes::{BufMut, BytesMut};

use super::super::wire::{DecodeError, Reader, put_zeros};

/// Nicira's experimenter id.
const NX_VENDOR_ID: u32 = 0x0000_2320;
const NXT_TLV_TABLE_MOD: u32 = 24;
const NXT_TLV_TABLE_REQUEST: u32 = 25;
const NXT_TLV_TABLE_REPLY: u32 = 26;

/// `NXTTMC_*`: what a table mod does.
pub mod tlv_cmd {
    pub const ADD: u16 = 0;
    pub const DELETE: u16 = 1;
    pub const CLEAR: u16 = 2;
}

/// One Geneve option ↔ `tun_metadata<index>` mapping (`struct nx_tlv_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvMap {
    pub option_class: u16,
    pub option_type: u8,
    /// Option data length in bytes (a multiple of 4, at most 124).
    pub option_len: u8,
    /// N of `tun_metadata<N>`.
    pub index: u16,
}

impl TlvMap {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.option_class);
        buf.put_u8(self.option_type);
        buf.put_u8(self.option_len);
        buf.put_u16(self.index);
        put_zeros(buf, 2);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let m = Self {
            option_class: r.u16()?,
            option_type: r.u8()?,
            option_len: r.u8()?,
            index: r.u16()?,
        };
        r.skip(2)?;
        Ok(m)
    }

    fn decode_all(r: &mut Reader<'_>) -> Result<Vec<Self>, DecodeError> {
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(Self::decode(r)?);
        }
        Ok(out)
    }
}

/// `NXT_TLV_TABLE_MOD`: add, delete or clear mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvTableMod {
    pub command: u16,
    pub mappings: Vec<TlvMap>,
}

/// `NXT_TLV_TABLE_REPLY`: the table as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvTableReply {
    pub max_option_space: u32,
    pub max_fields: u16,
    pub mappings: Vec<TlvMap>,
}

/// Which Nicira TLV-table message an experimenter body is, if any.
pub(super) fn subtype(body: &[u8]) -> Option<u32> {
    let vendor = body.get(0..4)?;
    let sub = body.get(4..8)?;
    let sub = u32::from_be_bytes(sub.try_into().ok()?);
    (vendor == NX_VENDOR_ID.to_be_bytes()
        && matches!(
            sub,
            NXT_TLV_TABLE_MOD | NXT_TLV_TABLE_REQUEST | NXT_TLV_TABLE_REPLY
        ))
    .then_some(sub)
}

pub(super) const MOD: u32 = NXT_TLV_TABLE_MOD;
pub(super) const REQUEST: u32 = NXT_TLV_TABLE_REQUEST;
pub(super) const REPLY: u32 = NXT_TLV_TABLE_REPLY;

fn put_header(buf: &mut BytesMut, subtype: u32) {
    buf.put_u32(NX_VENDOR_ID);
    buf.put_u32(subtype);
}

impl TlvTableMod {
    pub(super) fn encode(&self, buf: &mut BytesMut) {
        put_header(buf, NXT_TLV_TABLE_MOD);
        buf.put_u16(self.command);
        put_zeros(buf, 6);
        for m in &self.mappings {
            m.encode(buf);
        }
    }

    /// After the experimenter header.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let command = r.u16()?;
        r.skip(6)?;
        Ok(Self {
            command,
            mappings: TlvMap::decode_all(r)?,
        })
    }
}

pub(super) fn encode_request(buf: &mut BytesMut) {
    put_header(buf, NXT_TLV_TABLE_REQUEST);
}

impl TlvTableReply {
    pub(super) fn encode(&self, buf: &mut BytesMut) {
        put_header(buf, NXT_TLV_TABLE_REPLY);
        buf.put_u32(self.max_option_space);
        buf.put_u16(self.max_fields);
        put_zeros(buf, 10);
        for m in &self.mappings {
            m.encode(buf);
        }
    }

    /// After the experimenter header.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let max_option_space = r.u32()?;
        let max_fields = r.u16()?;
        r.skip(10)?;
        Ok(Self {
            max_option_space,
            max_fields,
            mappings: TlvMap::decode_all(r)?,
        })
    }
}
