//! `OFPT_ERROR`: why the switch refused a request, typed by `ofp_error_type`.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::super::frame::Header;
use super::super::wire::{DecodeError, Reader};

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
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = ErrorType::from_u16(r.u16()?);
        let code = r.u16()?;
        Ok(Self {
            kind,
            code,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
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
