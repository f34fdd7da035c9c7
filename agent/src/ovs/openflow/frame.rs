//! Framing: the 8-byte `ofp_header` and the "is a whole message buffered?" check.
//!
//! As in mini-redis, finding a frame and decoding it are separate steps: [`check`] only looks at
//! the header and says [`FrameError::Incomplete`] (read more) or [`FrameError::Protocol`] (the
//! stream is unusable: close it); [`super::Message::decode`] then works on exactly one frame.

/// The OpenFlow version we speak: 1.5 (`OFP15_VERSION`).
pub const OFP15_VERSION: u8 = 0x06;
/// Size of `ofp_header`.
pub const HEADER_LEN: usize = 8;

/// `ofp_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    /// Total message length including this header.
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Reads a header from the first 8 bytes; `None` if fewer are available.
    pub fn peek(buf: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            version: b[0],
            kind: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// Why a buffer does not (yet) hold a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes buffered; read more and retry.
    #[error("incomplete frame")]
    Incomplete,
    /// The byte stream cannot be OpenFlow (e.g. a length below the header size).
    #[error("openflow protocol error: {0}")]
    Protocol(String),
}

/// Checks whether `buf` starts with a whole message; returns its header.
pub fn check(buf: &[u8]) -> Result<Header, FrameError> {
    let header = Header::peek(buf).ok_or(FrameError::Incomplete)?;
    let len = usize::from(header.length);
    if len < HEADER_LEN {
        return Err(FrameError::Protocol(format!(
            "message type {} claims length {len}, below the header size",
            header.kind
        )));
    }
    if buf.len() < len {
        return Err(FrameError::Incomplete);
    }
    Ok(header)
}
