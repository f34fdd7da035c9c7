//! OpenFlow 1.5 actions (incl. the Nicira extensions we use) and instructions.
//!
//! Unknown action / instruction types decode into `Unknown` values that re-encode byte for
//! byte, so a flow dump or an error's echoed request never fails to decode.

use std::net::IpAddr;

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
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_OUTPUT_REG: u16 = 15;
const NXAST_CONTROLLER: u16 = 20;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;
/// `NX_CT_F_COMMIT`.
const NX_CT_F_COMMIT: u16 = 1;
/// `NX_CT_RECIRC_NONE`: do not recirculate after `ct`.
const NX_CT_RECIRC_NONE: u8 = 0xff;
/// 16-bit `OFPP_IN_PORT`: the port `resubmit(,TABLE)` carries ("the packet's own").
const OFPP_IN_PORT_16: u16 = 0xfff8;
/// `struct nx_action_ct` before its nested actions.
const NX_CT_LEN: usize = 24;
/// `struct nx_action_nat` before its range.
const NX_NAT_LEN: usize = 16;
/// `nx_nat_flags`: which address a `nat(...)` rewrites.
const NX_NAT_F_SRC: u16 = 1;
const NX_NAT_F_DST: u16 = 2;
/// `nx_nat_range`: which range fields follow `struct nx_action_nat`, in this order.
const NX_NAT_RANGE_IPV4_MIN: u16 = 1 << 0;
const NX_NAT_RANGE_IPV6_MIN: u16 = 1 << 2;
const NX_NAT_RANGE_PROTO_MIN: u16 = 1 << 4;

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
    /// `NXAST_CT`: `ct(commit?, zone=zone, table=table?, nat(...)?, exec(exec))`: send the
    /// packet through conntrack in `zone`, optionally committing it, applying `nat`, and
    /// recirculating to `table`. `exec` runs on the connection when it is committed (OVS takes
    /// only `set_field` of `ct_mark` / `ct_label` there). On the wire the NAT comes first among
    /// the nested actions, then `exec`, as `ovs-ofctl` writes them.
    Ct {
        commit: bool,
        zone: u16,
        table: Option<u8>,
        nat: Option<Nat>,
        exec: Vec<Action>,
    },
    /// `NXAST_RESUBMIT_TABLE`: `resubmit(,table)`: run the packet through `table` and come
    /// back (its in_port unchanged).
    Resubmit { table: u8 },
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
                exec,
            } => {
                buf.put_u16(OFPAT_EXPERIMENTER);
                buf.put_u16(0);
                buf.put_u32(NX_VENDOR_ID);
                buf.put_u16(NXAST_CT);
                buf.put_u16(if *commit { NX_CT_F_COMMIT } else { 0 });
                buf.put_u32(0); // zone_src: 0 = immediate zone
                buf.put_u16(*zone);
                buf.put_u8(table.unwrap_or(NX_CT_RECIRC_NONE));
                put_zeros(buf, 3);
                buf.put_u16(0); // alg
                if let Some(nat) = nat {
                    nat.encode(buf);
                }
                encode_actions(exec, buf);
                // Nested actions are whole multiples of 8, so the total is too.
                let len = buf.len() - start;
                patch_len(buf, start + 2, len);
            }
            Self::Resubmit { table } => {
                buf.put_u16(OFPAT_EXPERIMENTER);
                buf.put_u16(16);
                buf.put_u32(NX_VENDOR_ID);
                buf.put_u16(NXAST_RESUBMIT_TABLE);
                buf.put_u16(OFPP_IN_PORT_16);
                buf.put_u8(*table);
                put_zeros(buf, 3);
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
                    (NX_VENDOR_ID, NXAST_RESUBMIT_TABLE, 16) => {
                        let in_port = b.u16()?;
                        let table = b.u8()?;
                        let pad = b.bytes(3)?;
                        // `resubmit(PORT,TABLE)`, `resubmit(,255)` (that is `resubmit(PORT)`)
                        // and non-zero padding are not modelled: kept raw, byte for byte.
                        if in_port != OFPP_IN_PORT_16 || table == 0xff || pad != [0; 3] {
                            return Ok(Self::unknown(kind, &r_slice(r, start, len)?));
                        }
                        Self::Resubmit { table }
                    }
                    (NX_VENDOR_ID, NXAST_CT, _) if len >= NX_CT_LEN => {
                        let flags = b.u16()?;
                        let zone_src = b.u32()?;
                        let zone = b.u16()?;
                        let recirc = b.u8()?;
                        let pad = b.bytes(3)?;
                        let alg = b.u16()?;
                        // A zone from a field, an ALG, other flags or a NAT we do not model
                        // (ranges with a maximum, hash / persistent flags): kept raw.
                        if zone_src != 0
                            || alg != 0
                            || flags & !NX_CT_F_COMMIT != 0
                            || pad != [0; 3]
                        {
                            return Ok(Self::unknown(kind, &r_slice(r, start, len)?));
                        }
                        let Some(CtNested { nat, exec }) = Nat::split_leading(b.rest())? else {
                            return Ok(Self::unknown(kind, &r_slice(r, start, len)?));
                        };
                        Self::Ct {
                            commit: flags & NX_CT_F_COMMIT != 0,
                            zone,
                            table: (recirc != NX_CT_RECIRC_NONE).then_some(recirc),
                            nat,
                            exec: decode_actions(exec)?,
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

/// The NAT of a [`Action::Ct`] (`NXAST_NAT`, valid only nested in `ct`): which address it
/// rewrites and to what. Only single addresses and ports are modelled (no `min-max` ranges,
/// no `persistent` / `hash` / `random`); other forms decode as the `Ct`'s raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nat {
    /// Bare `nat`: apply the NAT the connection was committed with (un-NAT replies, NAT later
    /// packets of the connection).
    Existing,
    /// `nat(src=addr[:port])`: SNAT a new connection when committed.
    Src { addr: IpAddr, port: Option<u16> },
    /// `nat(dst=addr[:port])`: DNAT a new connection when committed.
    Dst { addr: IpAddr, port: Option<u16> },
}

impl Nat {
    /// `(flags, range)` as `struct nx_action_nat` carries them.
    fn parts(&self) -> (u16, Option<(IpAddr, Option<u16>)>) {
        match *self {
            Self::Existing => (0, None),
            Self::Src { addr, port } => (NX_NAT_F_SRC, Some((addr, port))),
            Self::Dst { addr, port } => (NX_NAT_F_DST, Some((addr, port))),
        }
    }

    /// `range_present` of a range: the minimum address of its family, and a port if any.
    fn range_present(addr: IpAddr, port: Option<u16>) -> u16 {
        let ip = match addr {
            IpAddr::V4(_) => NX_NAT_RANGE_IPV4_MIN,
            IpAddr::V6(_) => NX_NAT_RANGE_IPV6_MIN,
        };
        ip | if port.is_some() {
            NX_NAT_RANGE_PROTO_MIN
        } else {
            0
        }
    }

    /// Writes the whole `NXAST_NAT` action: header, flags, range, zero padding to 8.
    fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        let (flags, range) = self.parts();
        buf.put_u16(OFPAT_EXPERIMENTER);
        buf.put_u16(0);
        buf.put_u32(NX_VENDOR_ID);
        buf.put_u16(NXAST_NAT);
        put_zeros(buf, 2);
        buf.put_u16(flags);
        buf.put_u16(range.map_or(0, |(addr, port)| Self::range_present(addr, port)));
        if let Some((addr, port)) = range {
            match addr {
                IpAddr::V4(v4) => buf.put_slice(&v4.octets()),
                IpAddr::V6(v6) => buf.put_slice(&v6.octets()),
            }
            if let Some(p) = port {
                buf.put_u16(p);
            }
        }
        let len = buf.len() - start;
        put_zeros(buf, pad8(len));
        patch_len(buf, start + 2, len + pad8(len));
    }

    /// Splits the actions nested in a `ct` into its NAT (the first of them, if it is an
    /// `NXAST_NAT`) and the rest (`exec`). `None` when that NAT has a form we do not model,
    /// so the `ct` stays raw; a NAT whose length is not a whole action is a [`DecodeError`].
    fn split_leading(nested: &[u8]) -> Result<Option<CtNested<'_>>, DecodeError> {
        // type, len, vendor, subtype: the first 10 bytes of any Nicira action.
        let is_nat = |h: &[u8]| {
            h[0..2] == OFPAT_EXPERIMENTER.to_be_bytes()
                && h[4..8] == NX_VENDOR_ID.to_be_bytes()
                && h[8..10] == NXAST_NAT.to_be_bytes()
        };
        let Some(head) = nested.get(..10).filter(|h| is_nat(h)) else {
            return Ok(Some(CtNested {
                nat: None,
                exec: nested,
            }));
        };
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len < NX_NAT_LEN || len % 8 != 0 || len > nested.len() {
            return Err(DecodeError::new(
                "nat action",
                format!("length {len} in {} nested bytes", nested.len()),
            ));
        }
        let (nat, exec) = nested.split_at(len);
        Ok(Self::decode(nat)?.map(|nat| CtNested {
            nat: Some(nat),
            exec,
        }))
    }

    /// Decodes one whole `NXAST_NAT` action (`bytes` is exactly its length); `None` for a form
    /// we do not model, or one that would not re-encode to the same bytes.
    fn decode(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        let mut r = Reader::new(bytes, "nat action");
        r.skip(10)?; // type, len, vendor, subtype: checked by the caller
        let pad = r.u16()?;
        let flags = r.u16()?;
        let present = r.u16()?;
        if pad != 0 {
            return Ok(None);
        }
        let addr_len = match present & !NX_NAT_RANGE_PROTO_MIN {
            0 if flags == 0 && present == 0 => 0,
            NX_NAT_RANGE_IPV4_MIN if flags == NX_NAT_F_SRC || flags == NX_NAT_F_DST => 4,
            NX_NAT_RANGE_IPV6_MIN if flags == NX_NAT_F_SRC || flags == NX_NAT_F_DST => 16,
            _ => return Ok(None),
        };
        let port_len = if present & NX_NAT_RANGE_PROTO_MIN != 0 {
            2
        } else {
            0
        };
        let body = NX_NAT_LEN + addr_len + port_len;
        if bytes.len() != body + pad8(body) {
            return Ok(None);
        }
        let addr = match addr_len {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(r.bytes(4)?);
                Some(IpAddr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(r.bytes(16)?);
                Some(IpAddr::from(a))
            }
            _ => None,
        };
        let port = if port_len == 2 { Some(r.u16()?) } else { None };
        if r.bytes(pad8(body))?.iter().any(|b| *b != 0) {
            return Ok(None);
        }
        r.finish()?;
        Ok(Some(match (addr, flags) {
            (None, _) => Self::Existing,
            (Some(addr), NX_NAT_F_SRC) => Self::Src { addr, port },
            (Some(addr), _) => Self::Dst { addr, port },
        }))
    }
}

/// The actions nested in an `NXAST_CT`, split: its NAT, and the `exec` actions' bytes.
struct CtNested<'a> {
    nat: Option<Nat>,
    exec: &'a [u8],
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
