//! A buffered OpenFlow byte stream: read whole frames, write whole messages.
//!
//! mini-redis's `Connection` with a binary header: bytes are read into a `BytesMut` until
//! [`frame::check`] finds a complete frame, which is then decoded and split off.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::OfError;
use super::frame::{self, FrameError, Header};
use super::message::Message;

/// The read half: yields `(header, message)` pairs.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames.
    ///
    /// Errors: I/O, a stream that ends inside a frame, a header that cannot be OpenFlow, or a
    /// complete frame whose body does not decode (the stream stays usable in that last case,
    /// but we treat the peer as broken).
    pub async fn read(&mut self) -> Result<Option<(Header, Message)>, OfError> {
        loop {
            match frame::check(&self.buf) {
                Ok(header) => {
                    let len = usize::from(header.length);
                    let frame = self.buf.split_to(len);
                    let (header, msg) = Message::decode(&frame)?;
                    return Ok(Some((header, msg)));
                }
                Err(FrameError::Incomplete) => {}
                Err(FrameError::Protocol(p)) => return Err(OfError::Protocol(p)),
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let n = self.buf.remaining();
                return Err(OfError::Protocol(format!(
                    "connection closed inside a frame ({n} bytes)"
                )));
            }
        }
    }
}

/// Encodes and writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    io: &mut W,
    xid: u32,
    msg: &Message,
) -> Result<(), OfError> {
    let mut buf = BytesMut::new();
    msg.encode(xid, &mut buf);
    io.write_all(&buf).await?;
    Ok(())
}
