//! OpenFlow 1.5 messages: one enum, one `decode` and one `encode` per variant.
//!
//! Contract: `Message::decode` is handed exactly one frame (header + body) and fails unless
//! the variant's layout accounts for every byte; `encode` writes one whole frame and patches
//! the header length. Message types we do not model decode into [`Message::Unknown`].
//!
//! This file holds the enum and the header dispatch; each family's bodies live in a file of
//! their own (private modules, their types re-exported here, so the paths stay
//! `message::FlowMod`, `message::meter_cmd`, ...): `handshake.rs` (hello, features),
//! `error.rs`, `packet.rs` (packet-in, packet-out), `flow.rs` (flow mod), `group.rs`,
//! `meter.rs` (meter mod, meter stats), `bundle.rs`, `ct.rs` (Nicira ct flush), `tlv.rs`
//! (Nicira Geneve option table).

use bytes::{BufMut, BytesMut};

use super::frame::{HEADER_LEN, Header, OFP15_VERSION};
use super::wire::{DecodeError, Reader, patch_len};

mod bundle;
mod ct;
mod error;
mod flow;
mod group;
mod handshake;
mod meter;
mod packet;
mod tlv;

pub use bundle::{BUNDLE_ATOMIC, BUNDLE_ORDERED, BundleAdd, BundleControl, bundle_ctrl};
pub use ct::{CtFlush, CtTuple};
pub use error::{ErrorMsg, ErrorType};
pub use flow::{FlowMod, flow_cmd};
pub use group::{Bucket, GroupMod, group_cmd, group_type};
pub use handshake::{Features, hello_allows_of15};
pub use meter::{METER_BURST, METER_EXISTS, METER_PKTPS, MeterMod, MeterStats, meter_cmd};
pub use packet::{PacketIn, PacketOut};
pub use tlv::{TlvMap, TlvTableMod, TlvTableReply, tlv_cmd};

/// `ofp_type` numbers (OpenFlow 1.5).
pub mod kind {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const METER_MOD: u8 = 29;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const BUNDLE_CONTROL: u8 = 33;
    pub const BUNDLE_ADD_MESSAGE: u8 = 34;
}

/// `OFP_NO_BUFFER`.
pub const NO_BUFFER_ID: u32 = 0xffff_ffff;
/// `OFPTT_ALL`: every table (flow deletion).
pub const TABLE_ALL: u8 = 0xff;
/// `OFPG_ANY`.
pub const GROUP_ANY: u32 = 0xffff_ffff;
/// `OFPG_ALL`: every group (group deletion).
pub const GROUP_ALL: u32 = 0xffff_fffc;

/// One OpenFlow message (the xid travels beside it, in the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `OFPT_HELLO`; `versions` is the version bitmap element, if present.
    Hello {
        versions: Option<Vec<u32>>,
    },
    Error(ErrorMsg),
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply(Features),
    /// `OFPT_SET_CONFIG`: `miss_send_len` 0xffff = whole packets (`OFPCML_NO_BUFFER`).
    SetConfig {
        flags: u16,
        miss_send_len: u16,
    },
    PacketIn(PacketIn),
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    GroupMod(GroupMod),
    MeterMod(MeterMod),
    /// `OFPMP_METER_STATS` request (a multipart request) for one meter.
    MeterStatsRequest {
        meter_id: u32,
    },
    /// Its reply: each meter's counters.
    MeterStatsReply(Vec<MeterStats>),
    BarrierRequest,
    BarrierReply,
    BundleControl(BundleControl),
    BundleAdd(BundleAdd),
    /// Nicira `NXT_CT_FLUSH` (an `OFPT_EXPERIMENTER` message, OVS 3.1+).
    CtFlush(CtFlush),
    /// Nicira `NXT_TLV_TABLE_MOD`: map Geneve options to `tun_metadata<N>` fields.
    TlvTableMod(TlvTableMod),
    /// Nicira `NXT_TLV_TABLE_REQUEST`: what is mapped (answered by [`Self::TlvTableReply`]).
    TlvTableRequest,
    TlvTableReply(TlvTableReply),
    /// Any other type (port status, multipart, ...), body kept raw.
    Unknown {
        version: u8,
        kind: u8,
        body: Vec<u8>,
    },
}

impl Message {
    /// The `ofp_type` this message encodes as.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Hello { .. } => kind::HELLO,
            Self::Error(_) => kind::ERROR,
            Self::EchoRequest(_) => kind::ECHO_REQUEST,
            Self::EchoReply(_) => kind::ECHO_REPLY,
            Self::FeaturesRequest => kind::FEATURES_REQUEST,
            Self::FeaturesReply(_) => kind::FEATURES_REPLY,
            Self::SetConfig { .. } => kind::SET_CONFIG,
            Self::PacketIn(_) => kind::PACKET_IN,
            Self::PacketOut(_) => kind::PACKET_OUT,
            Self::FlowMod(_) => kind::FLOW_MOD,
            Self::GroupMod(_) => kind::GROUP_MOD,
            Self::MeterMod(_) => kind::METER_MOD,
            Self::MeterStatsRequest { .. } => kind::MULTIPART_REQUEST,
            Self::MeterStatsReply(_) => kind::MULTIPART_REPLY,
            Self::BarrierRequest => kind::BARRIER_REQUEST,
            Self::BarrierReply => kind::BARRIER_REPLY,
            Self::BundleControl(_) => kind::BUNDLE_CONTROL,
            Self::BundleAdd(_) => kind::BUNDLE_ADD_MESSAGE,
            Self::CtFlush(_)
            | Self::TlvTableMod(_)
            | Self::TlvTableRequest
            | Self::TlvTableReply(_) => kind::EXPERIMENTER,
            Self::Unknown { kind, .. } => *kind,
        }
    }

    /// Our hello: version 1.5 only, announced with a version bitmap.
    pub fn hello() -> Self {
        Self::Hello {
            versions: Some(vec![1 << OFP15_VERSION]),
        }
    }

    /// Decodes one whole frame (`frame.len()` equals the header's length).
    pub fn decode(frame: &[u8]) -> Result<(Header, Self), DecodeError> {
        let header =
            Header::peek(frame).ok_or_else(|| DecodeError::new("header", "fewer than 8 bytes"))?;
        if usize::from(header.length) != frame.len() {
            return Err(DecodeError::new(
                "header",
                format!(
                    "length {} but frame has {} bytes",
                    header.length,
                    frame.len()
                ),
            ));
        }
        let body = &frame[HEADER_LEN..];
        if header.kind != kind::HELLO && header.version != OFP15_VERSION {
            return Ok((
                header,
                Self::Unknown {
                    version: header.version,
                    kind: header.kind,
                    body: body.to_vec(),
                },
            ));
        }
        let mut r = Reader::new(body, "message");
        let msg = match header.kind {
            kind::HELLO => handshake::decode_hello(&mut r)?,
            kind::ERROR => Self::Error(ErrorMsg::decode(&mut r)?),
            kind::ECHO_REQUEST => Self::EchoRequest(r.rest().to_vec()),
            kind::ECHO_REPLY => Self::EchoReply(r.rest().to_vec()),
            kind::FEATURES_REQUEST => Self::FeaturesRequest,
            kind::FEATURES_REPLY => Self::FeaturesReply(Features::decode(&mut r)?),
            kind::SET_CONFIG => Self::SetConfig {
                flags: r.u16()?,
                miss_send_len: r.u16()?,
            },
            kind::PACKET_IN => Self::PacketIn(PacketIn::decode(&mut r)?),
            kind::PACKET_OUT => Self::PacketOut(PacketOut::decode(&mut r)?),
            kind::FLOW_MOD => Self::FlowMod(FlowMod::decode(&mut r)?),
            kind::GROUP_MOD => Self::GroupMod(GroupMod::decode(&mut r)?),
            kind::METER_MOD => Self::MeterMod(MeterMod::decode(&mut r)?),
            kind::MULTIPART_REQUEST if meter::is_meter_stats(body) => Self::MeterStatsRequest {
                meter_id: meter::decode_stats_request(&mut r)?,
            },
            kind::MULTIPART_REPLY if meter::is_meter_stats(body) => {
                Self::MeterStatsReply(meter::decode_stats_reply(&mut r)?)
            }
            kind::BARRIER_REQUEST => Self::BarrierRequest,
            kind::BARRIER_REPLY => Self::BarrierReply,
            kind::BUNDLE_CONTROL => Self::BundleControl(BundleControl::decode(&mut r)?),
            kind::BUNDLE_ADD_MESSAGE => Self::BundleAdd(BundleAdd::decode(&mut r)?),
            kind::EXPERIMENTER if CtFlush::is_ct_flush(body) => {
                r.skip(8)?;
                Self::CtFlush(CtFlush::decode(&mut r)?)
            }
            kind::EXPERIMENTER if tlv::subtype(body) == Some(tlv::MOD) => {
                r.skip(8)?;
                Self::TlvTableMod(TlvTableMod::decode(&mut r)?)
            }
            kind::EXPERIMENTER if tlv::subtype(body) == Some(tlv::REQUEST) => {
                r.skip(8)?;
                Self::TlvTableRequest
            }
            kind::EXPERIMENTER if tlv::subtype(body) == Some(tlv::REPLY) => {
                r.skip(8)?;
                Self::TlvTableReply(TlvTableReply::decode(&mut r)?)
            }
            other => Self::Unknown {
                version: header.version,
                kind: other,
                body: r.rest().to_vec(),
            },
        };
        r.finish()?;
        Ok((header, msg))
    }

    /// Appends this message as one frame with transaction id `xid`.
    pub fn encode(&self, xid: u32, buf: &mut BytesMut) {
        let start = buf.len();
        let version = match self {
            Self::Unknown { version, .. } => *version,
            _ => OFP15_VERSION,
        };
        buf.put_u8(version);
        buf.put_u8(self.kind());
        buf.put_u16(0);
        buf.put_u32(xid);
        match self {
            Self::Hello { versions } => handshake::encode_hello(versions.as_deref(), buf),
            Self::Error(e) => e.encode(buf),
            Self::EchoRequest(d) | Self::EchoReply(d) => buf.put_slice(d),
            Self::FeaturesRequest | Self::BarrierRequest | Self::BarrierReply => {}
            Self::FeaturesReply(f) => f.encode(buf),
            Self::SetConfig {
                flags,
                miss_send_len,
            } => {
                buf.put_u16(*flags);
                buf.put_u16(*miss_send_len);
            }
            Self::PacketIn(p) => p.encode(buf),
            Self::PacketOut(p) => p.encode(buf),
            Self::FlowMod(f) => f.encode(buf),
            Self::GroupMod(g) => g.encode(buf),
            Self::MeterMod(m) => m.encode(buf),
            Self::MeterStatsRequest { meter_id } => meter::encode_stats_request(*meter_id, buf),
            Self::MeterStatsReply(meters) => meter::encode_stats_reply(meters, buf),
            Self::BundleControl(b) => b.encode(buf),
            Self::BundleAdd(b) => b.encode(xid, buf),
            Self::CtFlush(c) => c.encode(buf),
            Self::TlvTableMod(t) => t.encode(buf),
            Self::TlvTableRequest => tlv::encode_request(buf),
            Self::TlvTableReply(t) => t.encode(buf),
            Self::Unknown { body, .. } => buf.put_slice(body),
        }
        let len = buf.len() - start;
        patch_len(buf, start + 2, len);
    }
}
