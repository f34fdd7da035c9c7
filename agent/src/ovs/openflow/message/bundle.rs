//! Bundles: `OFPT_BUNDLE_CONTROL` and `OFPT_BUNDLE_ADD_MESSAGE` (all-or-nothing flow updates).

use bytes::{BufMut, BytesMut};

use super::super::frame::Header;
use super::super::wire::{DecodeError, Reader, put_zeros};
use super::Message;

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
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    pub(super) fn encode(&self, buf: &mut BytesMut) {
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
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    pub(super) fn encode(&self, xid: u32, buf: &mut BytesMut) {
        buf.put_u32(self.bundle_id);
        put_zeros(buf, 2);
        buf.put_u16(self.flags);
        self.message.encode(xid, buf);
    }
}
