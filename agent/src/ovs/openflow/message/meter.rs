//! Meters: `OFPT_METER_MOD` and the `OFPMP_METER_STATS` multipart request and reply.

use bytes::{BufMut, BytesMut};

use super::super::wire::{DecodeError, Reader, put_zeros};

/// `ofp_meter_mod_command`.
pub mod meter_cmd {
    pub const ADD: u16 = 0;
    pub const MODIFY: u16 = 1;
    pub const DELETE: u16 = 2;
}

/// Meter flags: rate in packets per second, with a burst size.
pub const METER_PKTPS: u16 = 2;
pub const METER_BURST: u16 = 4;
/// `OFPMMFC_METER_EXISTS`.
pub const METER_EXISTS: u16 = 1;
const OFPMBT_DROP: u16 = 1;

/// `OFPMP_METER_STATS`, the multipart type of meter counters.
const OFPMP_METER_STATS: u16 = 9;
/// `ofp_multipart_request` / `_reply` after the OpenFlow header: type, flags, 4 pad bytes.
const MULTIPART_HEADER_LEN: usize = 8;

/// The multipart type of a multipart message's body, if it has one.
fn multipart_type(body: &[u8]) -> Option<u16> {
    body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// A meter-stats multipart header: one message, no "more" flag.
fn put_multipart_header(buf: &mut BytesMut) {
    buf.put_u16(OFPMP_METER_STATS);
    buf.put_u16(0);
    put_zeros(buf, 4);
}

/// One meter's counters (`ofp_meter_stats`): what passed it, and per band (in the meter's
/// band order) how many packets the band handled, i.e. dropped for a drop band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterStats {
    pub meter_id: u32,
    pub packet_in_count: u64,
    pub band_packet_counts: Vec<u64>,
}

/// `ofp_meter_stats` before its bands; each band's counters are 16 bytes.
const METER_STATS_LEN: usize = 40;
const METER_BAND_STATS_LEN: usize = 16;

impl MeterStats {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let meter_id = r.u32()?;
        let len = usize::from(r.u16()?);
        if len < METER_STATS_LEN || !(len - METER_STATS_LEN).is_multiple_of(METER_BAND_STATS_LEN) {
            return Err(DecodeError::new("meter_stats", format!("length {len}")));
        }
        r.skip(6)?;
        r.skip(4)?; // ref_count
        let packet_in_count = r.u64()?;
        r.skip(8 + 4 + 4)?; // byte_in_count, duration_sec, duration_nsec
        let band_packet_counts = (0..(len - METER_STATS_LEN) / METER_BAND_STATS_LEN)
            .map(|_| {
                let packets = r.u64()?;
                r.skip(8)?; // byte_band_count
                Ok(packets)
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self {
            meter_id,
            packet_in_count,
            band_packet_counts,
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.meter_id);
        let len = METER_STATS_LEN + METER_BAND_STATS_LEN * self.band_packet_counts.len();
        buf.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
        put_zeros(buf, 6 + 4);
        buf.put_u64(self.packet_in_count);
        put_zeros(buf, 8 + 4 + 4);
        for packets in &self.band_packet_counts {
            buf.put_u64(*packets);
            put_zeros(buf, 8);
        }
    }
}

/// `OFPT_METER_MOD` with drop bands only (all the agent uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterMod {
    pub command: u16,
    pub flags: u16,
    pub meter_id: u32,
    /// `(rate, burst_size)` of each drop band.
    pub drop_bands: Vec<(u32, u32)>,
}

impl MeterMod {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let command = r.u16()?;
        let flags = r.u16()?;
        let meter_id = r.u32()?;
        let mut drop_bands = Vec::new();
        while r.remaining() > 0 {
            let ty = r.u16()?;
            let len = usize::from(r.u16()?);
            if ty != OFPMBT_DROP || len != 16 {
                return Err(DecodeError::new(
                    "meter_mod",
                    format!("band type {ty} length {len}"),
                ));
            }
            let rate = r.u32()?;
            let burst = r.u32()?;
            r.skip(4)?;
            drop_bands.push((rate, burst));
        }
        Ok(Self {
            command,
            flags,
            meter_id,
            drop_bands,
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.command);
        buf.put_u16(self.flags);
        buf.put_u32(self.meter_id);
        for (rate, burst) in &self.drop_bands {
            buf.put_u16(OFPMBT_DROP);
            buf.put_u16(16);
            buf.put_u32(*rate);
            buf.put_u32(*burst);
            put_zeros(buf, 4);
        }
    }
}

/// Whether a multipart request or reply's body is of type `OFPMP_METER_STATS`.
pub(super) fn is_meter_stats(body: &[u8]) -> bool {
    multipart_type(body) == Some(OFPMP_METER_STATS)
}

/// Decodes a meter-stats request's body (multipart header included): the meter asked for.
pub(super) fn decode_stats_request(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    r.skip(MULTIPART_HEADER_LEN)?;
    let meter_id = r.u32()?;
    r.skip(4)?;
    Ok(meter_id)
}

/// Decodes a meter-stats reply's body (multipart header included): each meter's counters.
pub(super) fn decode_stats_reply(r: &mut Reader<'_>) -> Result<Vec<MeterStats>, DecodeError> {
    r.skip(MULTIPART_HEADER_LEN)?;
    let mut meters = Vec::new();
    while r.remaining() > 0 {
        meters.push(MeterStats::decode(r)?);
    }
    Ok(meters)
}

/// Writes a meter-stats request's body for `meter_id`.
pub(super) fn encode_stats_request(meter_id: u32, buf: &mut BytesMut) {
    put_multipart_header(buf);
    buf.put_u32(meter_id);
    put_zeros(buf, 4);
}

/// Writes a meter-stats reply's body.
pub(super) fn encode_stats_reply(meters: &[MeterStats], buf: &mut BytesMut) {
    put_multipart_header(buf);
    for m in meters {
        m.encode(buf);
    }
}
