//! `OFPT_GROUP_MOD`: groups and their buckets (Service load balancing).

use bytes::{BufMut, BytesMut};

use super::super::action::{Action, decode_actions, encode_actions};
use super::super::wire::{DecodeError, Reader, pad8, patch_len, put_zeros};

/// `ofp_group_mod_command`.
pub mod group_cmd {
    pub const ADD: u16 = 0;
    pub const MODIFY: u16 = 1;
    pub const DELETE: u16 = 2;
}

/// `ofp_group_type`.
pub mod group_type {
    pub const ALL: u8 = 0;
    pub const SELECT: u8 = 1;
    pub const INDIRECT: u8 = 2;
}

/// One bucket of a group; `weight` is the OF1.5 weight property (select groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub bucket_id: u32,
    pub actions: Vec<Action>,
    pub weight: Option<u16>,
}

/// OF1.5 `OFPT_GROUP_MOD` (no group properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMod {
    pub command: u16,
    pub group_type: u8,
    pub group_id: u32,
    /// `OFPG_BUCKET_ALL` (0xffffffff) unless inserting/removing single buckets.
    pub command_bucket_id: u32,
    pub buckets: Vec<Bucket>,
}

const OFPGBPT_WEIGHT: u16 = 0;

impl GroupMod {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let command = r.u16()?;
        let group_type = r.u8()?;
        r.skip(1)?;
        let group_id = r.u32()?;
        let bucket_array_len = usize::from(r.u16()?);
        r.skip(2)?;
        let command_bucket_id = r.u32()?;
        let mut br = Reader::new(r.bytes(bucket_array_len)?, "bucket");
        let mut buckets = Vec::new();
        while br.remaining() > 0 {
            let len = usize::from(br.u16()?);
            let action_len = usize::from(br.u16()?);
            let bucket_id = br.u32()?;
            if len < 8 + action_len {
                return Err(DecodeError::new(
                    "bucket",
                    format!("length {len} < actions"),
                ));
            }
            let actions = decode_actions(br.bytes(action_len)?)?;
            let mut pr = Reader::new(br.bytes(len - 8 - action_len)?, "bucket property");
            let mut weight = None;
            while pr.remaining() > 0 {
                let ty = pr.u16()?;
                let plen = usize::from(pr.u16()?);
                if plen < 4 {
                    return Err(DecodeError::new(
                        "bucket property",
                        format!("length {plen}"),
                    ));
                }
                let body = pr.bytes(plen - 4)?;
                pr.skip(pad8(plen))?;
                if ty == OFPGBPT_WEIGHT && body.len() >= 2 {
                    weight = Some(u16::from_be_bytes([body[0], body[1]]));
                }
            }
            buckets.push(Bucket {
                bucket_id,
                actions,
                weight,
            });
        }
        // Group properties, if any, are not modelled.
        r.rest();
        Ok(Self {
            command,
            group_type,
            group_id,
            command_bucket_id,
            buckets,
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.command);
        buf.put_u8(self.group_type);
        buf.put_u8(0);
        buf.put_u32(self.group_id);
        let len_at = buf.len();
        buf.put_u16(0);
        put_zeros(buf, 2);
        buf.put_u32(self.command_bucket_id);
        let start = buf.len();
        for b in &self.buckets {
            let bstart = buf.len();
            buf.put_u16(0);
            buf.put_u16(0);
            buf.put_u32(b.bucket_id);
            let astart = buf.len();
            encode_actions(&b.actions, buf);
            let alen = buf.len() - astart;
            if let Some(w) = b.weight {
                buf.put_u16(OFPGBPT_WEIGHT);
                buf.put_u16(8);
                buf.put_u16(w);
                put_zeros(buf, 2);
            }
            let blen = buf.len() - bstart;
            patch_len(buf, bstart, blen);
            patch_len(buf, bstart + 2, alen);
        }
        let total = buf.len() - start;
        patch_len(buf, len_at, total);
    }
}
