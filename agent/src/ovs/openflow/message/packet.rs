//! `OFPT_PACKET_IN` (what the switch sends the controller) and `OFPT_PACKET_OUT` (a packet the
//! controller injects).

use bytes::{BufMut, BytesMut};

use super::super::action::{Action, decode_actions, encode_actions};
use super::super::oxm::{Match, Oxm};
use super::super::wire::{DecodeError, Reader, patch_len, put_zeros};
use super::NO_BUFFER_ID;

/// OF1.5 `OFPT_PACKET_IN`. The match carries pipeline metadata (in_port, registers, tunnel
/// fields, conntrack tuple) as it was when the packet was sent to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIn {
    pub buffer_id: u32,
    /// Length of the original packet; `data` may be shorter if truncated.
    pub total_len: u16,
    /// `ofp_packet_in_reason` (0 table miss, 1 apply-action, 5 packet-out, ...).
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    pub fields: Match,
    pub data: Vec<u8>,
    /// When the agent read it off the connection (µs since the Unix epoch; 0 until then).
    /// Not on the wire: the reader stamps it, so an observation's time is the packet's, not
    /// the time a busy agent got round to it.
    pub received_micros: i64,
}

impl PacketIn {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let buffer_id = r.u32()?;
        let total_len = r.u16()?;
        let reason = r.u8()?;
        let table_id = r.u8()?;
        let cookie = r.u64()?;
        let fields = Match::decode(r)?;
        r.skip(2)?;
        Ok(Self {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            fields,
            data: r.rest().to_vec(),
            received_micros: 0,
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.buffer_id);
        buf.put_u16(self.total_len);
        buf.put_u8(self.reason);
        buf.put_u8(self.table_id);
        buf.put_u64(self.cookie);
        self.fields.encode(buf);
        put_zeros(buf, 2);
        buf.put_slice(&self.data);
    }
}

/// OF1.5 `OFPT_PACKET_OUT`: `in_port` travels in the match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketOut {
    pub buffer_id: u32,
    pub fields: Match,
    pub actions: Vec<Action>,
    pub data: Vec<u8>,
}

impl PacketOut {
    /// An unbuffered packet-out of `data` as if received on `in_port`.
    pub fn new(in_port: u32, actions: Vec<Action>, data: Vec<u8>) -> Self {
        Self {
            buffer_id: NO_BUFFER_ID,
            fields: Match::new().with(Oxm::in_port(in_port)),
            actions,
            data,
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let buffer_id = r.u32()?;
        let actions_len = usize::from(r.u16()?);
        r.skip(2)?;
        let fields = Match::decode(r)?;
        let actions = decode_actions(r.bytes(actions_len)?)?;
        Ok(Self {
            buffer_id,
            fields,
            actions,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.buffer_id);
        let len_at = buf.len();
        buf.put_u16(0);
        put_zeros(buf, 2);
        self.fields.encode(buf);
        let start = buf.len();
        encode_actions(&self.actions, buf);
        let alen = buf.len() - start;
        patch_len(buf, len_at, alen);
        buf.put_slice(&self.data);
    }
}
