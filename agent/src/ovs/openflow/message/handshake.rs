//! The handshake: `OFPT_HELLO` (version negotiation) and `OFPT_FEATURES_REPLY`.

use bytes::{BufMut, BytesMut};

use super::super::frame::OFP15_VERSION;
use super::super::wire::{DecodeError, Reader, pad8, put_zeros};
use super::Message;

pub(super) fn decode_hello(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
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

/// Writes a hello's body: the version bitmap element, if any, padded to 8.
pub(super) fn encode_hello(versions: Option<&[u32]>, buf: &mut BytesMut) {
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
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64(self.datapath_id);
        buf.put_u32(self.n_buffers);
        buf.put_u8(self.n_tables);
        buf.put_u8(self.auxiliary_id);
        put_zeros(buf, 2);
        buf.put_u32(self.capabilities);
        put_zeros(buf, 4);
    }
}
