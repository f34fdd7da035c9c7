//! OpenFlow 1.5 actions (incl. the Nicira extensions we use) and instructions.
//!
//! Unknown action / instruction types decode into `Unknown` values that re-encode byte for
//! byte, so a flow dump or an error's echoed request never fails to decode.

use bytes::{BufMut, BytesMut};

use super::oxm::{CLASS_NXM1, Oxm, nxm};
use super::wire::{DecodeError, Reader, pad8, patch_len, put_zeros};

/// Reserved port numbers (openflow-1.5.h `ofp_port_no`).
pub mod port {
    /// Send the packet back out of its input port.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// Submit the packet to the first flow table (packet-out only).
    pub const TABLE: u32 = 0xffff_fff9;
    pub const NORMAL: u32 = 0xffff_fffa;
    pub const FLOOD: u32 = 0xffff_fffb;
    pub const ALL: u32 = 0xffff_fffc;
    pub const CONTROLLER: u32 = 0xffff_fffd;
    pub const LOCAL: u32 = 0xffff_fffe;
    /// "No port" / wildcard.
    pub const ANY: u32 = 0xffff_ffff;
}

/// `OFPCML_NO_BUFFER`: send the whole packet to the controller, never a buffer id.
pub const NO_BUFFER: u16 = 0xffff;
/// Nicira's experimenter id.
pub const NX_VENDOR_ID: u32 = 0x0000_2320;

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_GROUP: u16 = 22;
const OFPAT_DEC_NW_TTL: u16 = 24;
const OFPAT_METER: u16 = 29;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_EXPERIMENTER: u16 = 0xffff;
const NXAST_OUTPUT_REG: u16 = 15;
const NXAST_CONTROLLER: u16 = 20;
const NXAST_CT: u16 = 35;
/// `NX_CT_F_COMMIT`.
const NX_CT_F_COMMIT: u16 = 1;
/// `NX_CT_RECIRC_NONE`: do not recirculate after `ct`.
const NX_CT_RECIRC_NONE: u8 = 0xff;
/// The bare `nat` action (`NXAST_NAT`, subtype 36) nested in `ct`: no ranges, apply existing
/// NAT bindings.
const BARE_NAT: [u8; 16] = [0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 36, 0, 0, 0, 0, 0, 0];

/// One action of an action list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `OFPAT_OUTPUT`; `max_len` only matters for [`port::CONTROLLER`].
    Output { port: u32, max_len: u16 },
    /// `OFPAT_GROUP`.
    Group(u32),
    /// `OFPAT_SET_FIELD`; a masked OXM writes only the masked bits (OVS extension, OF1.5).
    SetField(Oxm),
    /// `NXAST_OUTPUT_REG`: output to the port number held in register `reg` (all 32 bits).
    OutputReg { reg: u8, max_len: u16 },
    /// `NXAST_CONTROLLER`: packet-in with an explicit reason, whole packet when `max_len` is
    /// [`NO_BUFFER`].
    Controller {
        max_len: u16,
        controller_id: u16,
        reason: u8,
    },
    /// `NXAST_CT`: send the packet through conntrack in `zone`, optionally committing it,
    /// applying existing NAT bindings (`nat`), and recirculating to `table`.
    Ct {
        commit: bool,
        zone: u16,
        table: Option<u8>,
        nat: bool,
    },
    /// `OFPAT_METER` (OF1.5): pass the packet through meter `id`; over the rate it stops here.
    Meter(u32),
    /// `OFPAT_DEC_NW_TTL`: decrement the IPv4 TTL / IPv6 hop limit (routed packets).
    DecNwTtl,
    /// Any other action, kept as its raw bytes (type and length included).
    Unknown { kind: u16, raw: Vec<u8> },
}

impl Action {
    /// Output to a port.
    pub fn output(port: u32) -> Self {
        Self::Output { port, max_len: 0 }
    }

    /// Packet-in carrying the whole packet (`output:CONTROLLER`, max_len 0xffff), the form
    /// `ovs-ofctl` uses for `controller(max_len=65535)`.
    pub fn to_controller() -> Self {
        Self::Output {
            port: port::CONTROLLER,
            max_len: NO_BUFFER,
        }
    }

    /// Writes `value` into register `n`, only the bits set in `mask`.
    pub fn set_reg(n: u8, value: u32, mask: u32) -> Self {
        if mask == u32::MAX {
            Self::SetField(Oxm::reg(n, value))
        } else {
            Self::SetField(Oxm::reg_masked(n, value, mask))
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        match self {
            Self::Output { port, max_len } => {
                buf.put_u16(OFPAT_OUTPUT);
                buf.put_u16(16);
                buf.put_u32(*port);
                buf.put_u16(*max_len);
                put_zeros(buf, 6);
            }
            Self::Group(id) => {
                buf.put_u16(OFPAT_GROUP);
                buf.put_u16(8);
                buf.put_u32(*id);
            }
            Self::Ct {
                commit,
                zone,
                table,
                nat,
            } => {
                buf.put_u16(OFPAT_EXPERIMENTER);
                buf.put_u16(if *nat { 40 } else { 24 });
                buf.put_u32(NX_VENDOR_ID);
                buf.put_u16(NXAST_CT);
                buf.put_u16(if *commit { NX_CT_F_COMMIT } else { 0 });
                buf.put_u32(0); // zone_src: 0 = immediate zone
                buf.put_u16(*zone);
                buf.put_u8(table.unwrap_or(NX_CT_RECIRC_NONE));
                put_zeros(buf, 3);
                buf.put_u16(0); // alg
                if *nat {
                    buf.put_slice(&BARE_NAT);
                }
            }
            Self::Meter(id) => {
                buf.put_u16(OFPAT_METER);
                buf.put_u16(8);
                buf.put_u32(*id);
            }
            Self::DecNwTtl => {
                buf.put_u16(OFPAT_DEC_NW_TTL);
                buf.put_u16(8);
                put_zeros(buf, 4);
            }
            Self::SetField(oxm) => {
                buf.put_u16(OFPAT_SET_FIELD);
                buf.put_u16(0);
                oxm.encode(buf);
                let len = buf.len() - start;
                put_zeros(buf, pad8(len));
                patch_len(buf, start + 2, len + pad8(len));
            }
            Self::OutputReg { reg, max_len } => {
                buf.put_u16(OFPAT_EXPERIMENTER);
                buf.put_u16(24);
                buf.put_u32(NX_VENDOR_ID);
                buf.put_u16(NXAST_OUTPUT_REG);
                // ofs_nbits: offset 0, 32 bits => (0 << 6) | (32 - 1).
                buf.put_u16(0x001f);
                Oxm::reg(*reg, 0).encode_header_only(buf);
                buf.put_u16(*max_len);
                put_zeros(buf, 6);
            }
            Self::Controller {
                max_len,
                controller_id,
                reason,
            } => {
                buf.put_u16(OFPAT_EXPERIMENTER);
                buf.put_u16(16);
                buf.put_u32(NX_VENDOR_ID);
                buf.put_u16(NXAST_CONTROLLER);
                buf.put_u16(*max_len);
                buf.put_u16(*controller_id);
                buf.put_u8(*reason);
                buf.put_u8(0);
            }
            Self::Unknown { raw, .. } => buf.put_slice(raw),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len % 8 != 0 {
            return Err(DecodeError::new(
                "action",
                format!("type {kind} has length {len}"),
            ));
        }
        let body = r.bytes(len - 4)?;
        let mut b = Reader::new(body, "action");
        let action = match kind {
            OFPAT_OUTPUT if len == 16 => {
                let port = b.u32()?;
                let max_len = b.u16()?;
                b.skip(6)?;
                Self::Output { port, max_len }
            }
            OFPAT_GROUP if len == 8 => Self::Group(b.u32()?),
            OFPAT_METER if len == 8 => Self::Meter(b.u32()?),
            OFPAT_DEC_NW_TTL if len == 8 => {
                b.skip(4)?;
                Self::DecNwTtl
            }
            OFPAT_SET_FIELD => {
                let oxm = Oxm::decode(&mut b)?;
                // The rest is padding to 8 bytes.
                b.rest();
                Self::SetField(oxm)
            }
            OFPAT_EXPERIMENTER if len >= 16 => {
                let vendor = b.u32()?;
                let sub = b.u16()?;
                match (vendor, sub, len) {
                    (NX_VENDOR_ID, NXAST_OUTPUT_REG, 24) => {
                        let ofs_nbits = b.u16()?;
                        let class = b.u16()?;
                        let fh = b.u8()?;
                        let _flen = b.u8()?;
                        let max_len = b.u16()?;
                        b.skip(6)?;
                        if class != CLASS_NXM1 || fh >> 1 > 15 || ofs_nbits != 0x001f {
                            return Ok(Self::unknown(kind, &r_slice(r, start, len)?));
                        }
                        Self::OutputReg {
                            reg: (fh >> 1) - nxm::REG0,
                            max_len,
                        }
                    }
                    (NX_VENDOR_ID, NXAST_CT, 24 | 40) => {
                        let flags = b.u16()?;
                        let zone_src = b.u32()?;
                        let zone = b.u16()?;
                        let recirc = b.u8()?;
                        b.skip(3)?;
                        let alg = b.u16()?;
                        let nested = b.rest();
                        let nat = nested == BARE_NAT;
                        if zone_src != 0
                            || alg != 0
                            || flags & !NX_CT_F_COMMIT != 0
                            || !(nested.is_empty() || nat)
                        {
                            return Ok(Self::unknown(kind, &r_slice(r, start, len)?));
                        }
                        Self::Ct {
                            commit: flags & NX_CT_F_COMMIT != 0,
                            zone,
                            table: (recirc != NX_CT_RECIRC_NONE).then_some(recirc),
                            nat,
                        }
                    }
                    (NX_VENDOR_ID, NXAST_CONTROLLER, 16) => {
                        let max_len = b.u16()?;
                        let controller_id = b.u16()?;
                        let reason = b.u8()?;
                        b.skip(1)?;
                        Self::Controller {
                            max_len,
                            controller_id,
                            reason,
                        }
                    }
                    _ => return Ok(Self::unknown(kind, &r_slice(r, start, len)?)),
                }
            }
            _ => return Ok(Self::unknown(kind, &r_slice(r, start, len)?)),
        };
        b.finish()?;
        Ok(action)
    }

    fn unknown(kind: u16, raw: &[u8]) -> Self {
        Self::Unknown {
            kind,
            raw: raw.to_vec(),
        }
    }
}

/// Re-reads the `len` bytes of a structure that started at `start` (already consumed).
fn r_slice(r: &Reader<'_>, start: usize, len: usize) -> Result<Vec<u8>, DecodeError> {
    r.consumed_since(start, len)
}

impl Reader<'_> {
    fn consumed_since(&self, start: usize, len: usize) -> Result<Vec<u8>, DecodeError> {
        self.slice_at(start, len).map(<[u8]>::to_vec)
    }
}

impl Oxm {
    /// Writes only the 4-byte OXM header (used where a field is named, not valued).
    fn encode_header_only(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class);
        buf.put_u8(self.field << 1);
        buf.put_u8(u8::try_from(self.payload.len()).unwrap_or(u8::MAX));
    }
}

/// Encodes an action list.
pub fn encode_actions(actions: &[Action], buf: &mut BytesMut) {
    for a in actions {
        a.encode(buf);
    }
}

/// Decodes an action list that fills `bytes` exactly.
pub(crate) fn decode_actions(bytes: &[u8]) -> Result<Vec<Action>, DecodeError> {
    let mut r = Reader::new(bytes, "action list");
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.push(Action::decode(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_WRITE_METADATA: u16 = 2;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_CLEAR_ACTIONS: u16 = 5;

/// One instruction of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    GotoTable(u8),
    WriteMetadata {
        value: u64,
        mask: u64,
    },
    ApplyActions(Vec<Action>),
    ClearActions,
    /// Any other instruction, raw bytes including type and length.
    Unknown {
        kind: u16,
        raw: Vec<u8>,
    },
}

impl Instruction {
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        match self {
            Self::GotoTable(t) => {
                buf.put_u16(OFPIT_GOTO_TABLE);
                buf.put_u16(8);
                buf.put_u8(*t);
                put_zeros(buf, 3);
            }
            Self::WriteMetadata { value, mask } => {
                buf.put_u16(OFPIT_WRITE_METADATA);
                buf.put_u16(24);
                put_zeros(buf, 4);
                buf.put_u64(*value);
                buf.put_u64(*mask);
            }
            Self::ApplyActions(actions) => {
                buf.put_u16(OFPIT_APPLY_ACTIONS);
                buf.put_u16(0);
                put_zeros(buf, 4);
                encode_actions(actions, buf);
                let len = buf.len() - start;
                patch_len(buf, start + 2, len);
            }
            Self::ClearActions => {
                buf.put_u16(OFPIT_CLEAR_ACTIONS);
                buf.put_u16(8);
                put_zeros(buf, 4);
            }
            Self::Unknown { raw, .. } => buf.put_slice(raw),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 {
            return Err(DecodeError::new(
                "instruction",
                format!("type {kind} has length {len}"),
            ));
        }
        let body = r.bytes(len - 4)?;
        let mut b = Reader::new(body, "instruction");
        let ins = match kind {
            OFPIT_GOTO_TABLE if len == 8 => {
                let t = b.u8()?;
                b.skip(3)?;
                Self::GotoTable(t)
            }
            OFPIT_WRITE_METADATA if len == 24 => {
                b.skip(4)?;
                let value = b.u64()?;
                let mask = b.u64()?;
                Self::WriteMetadata { value, mask }
            }
            OFPIT_APPLY_ACTIONS => {
                b.skip(4)?;
                Self::ApplyActions(decode_actions(b.rest())?)
            }
            OFPIT_CLEAR_ACTIONS if len == 8 => {
                b.skip(4)?;
                Self::ClearActions
            }
            _ => {
                return Ok(Self::Unknown {
                    kind,
                    raw: r.consumed_since(start, len)?,
                });
            }
        };
        b.finish()?;
        Ok(ins)
    }
}

/// Decodes an instruction list that fills `bytes` exactly.
pub(crate) fn decode_instructions(bytes: &[u8]) -> Result<Vec<Instruction>, DecodeError> {
    let mut r = Reader::new(bytes, "instruction list");
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.push(Instruction::decode(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}
