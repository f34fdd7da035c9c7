//! OpenFlow 1.5 messages: one enum, one `decode` and one `encode` per variant.
//!
//! Contract: `Message::decode` is handed exactly one frame (header + body) and fails unless
//! the variant's layout accounts for every byte; `encode` writes one whole frame and patches
//! the header length. Message types we do not model decode into [`Message::Unknown`].

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::action::{Action, Instruction, decode_actions, decode_instructions, encode_actions};
use super::frame::{HEADER_LEN, Header, OFP15_VERSION};
use super::oxm::Match;
use super::wire::{DecodeError, Reader, pad8, patch_len, put_zeros};

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
            Self::CtFlush(_) => kind::EXPERIMENTER,
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
            kind::HELLO => decode_hello(&mut r)?,
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
            kind::MULTIPART_REQUEST if multipart_type(body) == Some(OFPMP_METER_STATS) => {
                r.skip(MULTIPART_HEADER_LEN)?;
                let meter_id = r.u32()?;
                r.skip(4)?;
                Self::MeterStatsRequest { meter_id }
            }
            kind::MULTIPART_REPLY if multipart_type(body) == Some(OFPMP_METER_STATS) => {
                r.skip(MULTIPART_HEADER_LEN)?;
                let mut meters = Vec::new();
                while r.remaining() > 0 {
                    meters.push(MeterStats::decode(&mut r)?);
                }
                Self::MeterStatsReply(meters)
            }
            kind::BARRIER_REQUEST => Self::BarrierRequest,
            kind::BARRIER_REPLY => Self::BarrierReply,
            kind::BUNDLE_CONTROL => Self::BundleControl(BundleControl::decode(&mut r)?),
            kind::BUNDLE_ADD_MESSAGE => Self::BundleAdd(BundleAdd::decode(&mut r)?),
            kind::EXPERIMENTER if CtFlush::is_ct_flush(body) => {
                r.skip(8)?;
                Self::CtFlush(CtFlush::decode(&mut r)?)
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
            Self::Hello { versions } => {
                if let Some(bitmaps) = versions {
                    // OFPHET_VERSIONBITMAP element, padded to 8.
                    let len = 4 + 4 * bitmaps.len();
                    buf.put_u16(1);
                    buf.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
                    for b in bitmaps {
                        buf.put_u32(*b);
                    }
                    put_zeros(buf, pad8(len));
                }
            }
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
            Self::MeterStatsRequest { meter_id } => {
                put_multipart_header(buf);
                buf.put_u32(*meter_id);
                put_zeros(buf, 4);
            }
            Self::MeterStatsReply(meters) => {
                put_multipart_header(buf);
                for m in meters {
                    m.encode(buf);
                }
            }
            Self::BundleControl(b) => b.encode(buf),
            Self::BundleAdd(b) => b.encode(xid, buf),
            Self::CtFlush(c) => c.encode(buf),
            Self::Unknown { body, .. } => buf.put_slice(body),
        }
        let len = buf.len() - start;
        patch_len(buf, start + 2, len);
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let mut versions = None;
    while r.remaining() >= 4 {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(DecodeError::new("hello", format!("element length {len}")));
        }
        let body = r.bytes(len - 4)?;
        // The last element's padding may be omitted by some peers.
        r.skip(pad8(len).min(r.remaining()))?;
        if ty == 1 {
            let mut br = Reader::new(body, "hello bitmap");
            let mut v = Vec::new();
            while br.remaining() >= 4 {
                v.push(br.u32()?);
            }
            br.finish()?;
            versions = Some(v);
        }
    }
    // Old peers may send trailing bytes shorter than an element; ignore them.
    r.rest();
    Ok(Message::Hello { versions })
}

/// Whether a peer's hello allows OpenFlow 1.5.
pub fn hello_allows_of15(header_version: u8, versions: Option<&[u32]>) -> bool {
    match versions {
        Some(bitmaps) => bitmaps
            .first()
            .is_some_and(|b| b & (1 << OFP15_VERSION) != 0),
        None => header_version >= OFP15_VERSION,
    }
}

/// `ofp_error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    HelloFailed,
    BadRequest,
    BadAction,
    BadInstruction,
    BadMatch,
    FlowModFailed,
    GroupModFailed,
    PortModFailed,
    TableModFailed,
    SwitchConfigFailed,
    BadProperty,
    MeterModFailed,
    BundleFailed,
    Experimenter,
    Other(u16),
}

impl ErrorType {
    pub fn from_u16(t: u16) -> Self {
        match t {
            0 => Self::HelloFailed,
            1 => Self::BadRequest,
            2 => Self::BadAction,
            3 => Self::BadInstruction,
            4 => Self::BadMatch,
            5 => Self::FlowModFailed,
            6 => Self::GroupModFailed,
            7 => Self::PortModFailed,
            8 => Self::TableModFailed,
            10 => Self::SwitchConfigFailed,
            12 => Self::MeterModFailed,
            14 => Self::BadProperty,
            17 => Self::BundleFailed,
            0xffff => Self::Experimenter,
            o => Self::Other(o),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            Self::HelloFailed => 0,
            Self::BadRequest => 1,
            Self::BadAction => 2,
            Self::BadInstruction => 3,
            Self::BadMatch => 4,
            Self::FlowModFailed => 5,
            Self::GroupModFailed => 6,
            Self::PortModFailed => 7,
            Self::TableModFailed => 8,
            Self::SwitchConfigFailed => 10,
            Self::MeterModFailed => 12,
            Self::BadProperty => 14,
            Self::BundleFailed => 17,
            Self::Experimenter => 0xffff,
            Self::Other(o) => o,
        }
    }
}

/// `OFPT_ERROR`: the switch refused a request; `data` starts with the offending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub kind: ErrorType,
    pub code: u16,
    pub data: Vec<u8>,
}

impl ErrorMsg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = ErrorType::from_u16(r.u16()?);
        let code = r.u16()?;
        Ok(Self {
            kind,
            code,
            data: r.rest().to_vec(),
        })
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.kind.as_u16());
        buf.put_u16(self.code);
        buf.put_slice(&self.data);
    }

    /// The `ofp_type` of the request that failed, if the error echoes it.
    pub fn failed_request_kind(&self) -> Option<u8> {
        Header::peek(&self.data).map(|h| h.kind)
    }
}

impl fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = match (self.kind, self.code) {
            (ErrorType::BadAction, 9) => " (OFPBAC_BAD_OUT_GROUP)",
            (ErrorType::BadAction, 4) => " (OFPBAC_BAD_OUT_PORT)",
            (ErrorType::BadMatch, 3) => " (OFPBMC_BAD_FIELD)",
            (ErrorType::BadMatch, 9) => " (OFPBMC_BAD_PREREQ)",
            (ErrorType::FlowModFailed, 2) => " (OFPFMFC_BAD_TABLE_ID)",
            (ErrorType::GroupModFailed, 0) => " (OFPGMFC_GROUP_EXISTS)",
            (ErrorType::BadRequest, 1) => " (OFPBRC_BAD_TYPE)",
            _ => "",
        };
        let req = self
            .failed_request_kind()
            .map(|k| format!(", request type {k}"))
            .unwrap_or_default();
        write!(
            f,
            "switch error {:?} code {}{code}{req}",
            self.kind, self.code
        )
    }
}

/// `OFPT_FEATURES_REPLY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    pub auxiliary_id: u8,
    pub capabilities: u32,
}

impl Features {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let datapath_id = r.u64()?;
        let n_buffers = r.u32()?;
        let n_tables = r.u8()?;
        let auxiliary_id = r.u8()?;
        r.skip(2)?;
        let capabilities = r.u32()?;
        r.skip(4)?;
        Ok(Self {
            datapath_id,
            n_buffers,
            n_tables,
            auxiliary_id,
            capabilities,
        })
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64(self.datapath_id);
        buf.put_u32(self.n_buffers);
        buf.put_u8(self.n_tables);
        buf.put_u8(self.auxiliary_id);
        put_zeros(buf, 2);
        buf.put_u32(self.capabilities);
        put_zeros(buf, 4);
    }
}

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
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    fn encode(&self, buf: &mut BytesMut) {
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
            fields: Match::new().with(super::oxm::Oxm::in_port(in_port)),
            actions,
            data,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    fn encode(&self, buf: &mut BytesMut) {
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

/// `ofp_flow_mod_command`.
pub mod flow_cmd {
    pub const ADD: u8 = 0;
    pub const MODIFY: u8 = 1;
    pub const MODIFY_STRICT: u8 = 2;
    pub const DELETE: u8 = 3;
    pub const DELETE_STRICT: u8 = 4;
}

/// OF1.5 `OFPT_FLOW_MOD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: u8,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    pub importance: u16,
    pub fields: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    /// An `OFPFC_ADD` of one flow.
    pub fn add(
        table_id: u8,
        priority: u16,
        cookie: u64,
        fields: Match,
        instructions: Vec<Instruction>,
    ) -> Self {
        Self {
            cookie,
            cookie_mask: 0,
            table_id,
            command: flow_cmd::ADD,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: NO_BUFFER_ID,
            out_port: super::action::port::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            importance: 0,
            fields,
            instructions,
        }
    }

    /// `OFPFC_DELETE` of every flow in `table_id` ([`TABLE_ALL`] for all tables) whose cookie
    /// matches `cookie` under `cookie_mask`.
    pub fn delete_by_cookie(table_id: u8, cookie: u64, cookie_mask: u64) -> Self {
        Self {
            cookie,
            cookie_mask,
            table_id,
            command: flow_cmd::DELETE,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: 0x8000,
            buffer_id: NO_BUFFER_ID,
            out_port: super::action::port::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            importance: 0,
            fields: Match::new(),
            instructions: Vec::new(),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = r.u8()?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        let importance = r.u16()?;
        let fields = Match::decode(r)?;
        let instructions = decode_instructions(r.rest())?;
        Ok(Self {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            importance,
            fields,
            instructions,
        })
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64(self.cookie);
        buf.put_u64(self.cookie_mask);
        buf.put_u8(self.table_id);
        buf.put_u8(self.command);
        buf.put_u16(self.idle_timeout);
        buf.put_u16(self.hard_timeout);
        buf.put_u16(self.priority);
        buf.put_u32(self.buffer_id);
        buf.put_u32(self.out_port);
        buf.put_u32(self.out_group);
        buf.put_u16(self.flags);
        buf.put_u16(self.importance);
        self.fields.encode(buf);
        for i in &self.instructions {
            i.encode(buf);
        }
    }
}

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
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    fn encode(&self, buf: &mut BytesMut) {
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
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    fn encode(&self, buf: &mut BytesMut) {
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
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    fn encode(&self, buf: &mut BytesMut) {
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

/// `ofp_bundle_ctrl_type`.
pub mod bundle_ctrl {
    pub const OPEN_REQUEST: u16 = 0;
    pub const OPEN_REPLY: u16 = 1;
    pub const CLOSE_REQUEST: u16 = 2;
    pub const CLOSE_REPLY: u16 = 3;
    pub const COMMIT_REQUEST: u16 = 4;
    pub const COMMIT_REPLY: u16 = 5;
    pub const DISCARD_REQUEST: u16 = 6;
    pub const DISCARD_REPLY: u16 = 7;
}

/// Bundle flags: all-or-nothing, in order.
pub const BUNDLE_ATOMIC: u16 = 1;
pub const BUNDLE_ORDERED: u16 = 2;

/// `OFPT_BUNDLE_CONTROL` (properties ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleControl {
    pub bundle_id: u32,
    pub kind: u16,
    pub flags: u16,
}

impl BundleControl {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bundle_id = r.u32()?;
        let kind = r.u16()?;
        let flags = r.u16()?;
        r.rest();
        Ok(Self {
            bundle_id,
            kind,
            flags,
        })
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.bundle_id);
        buf.put_u16(self.kind);
        buf.put_u16(self.flags);
    }
}

/// `OFPT_BUNDLE_ADD_MESSAGE`; the inner message is encoded with the outer xid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleAdd {
    pub bundle_id: u32,
    pub flags: u16,
    pub message: Box<Message>,
}

impl BundleAdd {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bundle_id = r.u32()?;
        r.skip(2)?;
        let flags = r.u16()?;
        let rest = r.rest();
        let inner =
            Header::peek(rest).ok_or_else(|| DecodeError::new("bundle_add", "no inner message"))?;
        let len = usize::from(inner.length);
        let frame = rest
            .get(..len)
            .ok_or_else(|| DecodeError::new("bundle_add", "inner message truncated"))?;
        let (_, message) = Message::decode(frame)?;
        Ok(Self {
            bundle_id,
            flags,
            message: Box::new(message),
        })
    }

    fn encode(&self, xid: u32, buf: &mut BytesMut) {
        buf.put_u32(self.bundle_id);
        put_zeros(buf, 2);
        buf.put_u16(self.flags);
        self.message.encode(xid, buf);
    }
}

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
    fn is_ct_flush(body: &[u8]) -> bool {
        body.len() >= 8
            && body[0..4] == NX_VENDOR_ID.to_be_bytes()
            && body[4..8] == NXT_CT_FLUSH.to_be_bytes()
    }

    fn encode(&self, buf: &mut BytesMut) {
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

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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
