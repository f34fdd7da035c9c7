//! Byte-level helpers shared by every message codec: a bounds-checked big-endian reader and
//! padding arithmetic. Every read past the end is a [`DecodeError`], never a panic.

use bytes::{BufMut, BytesMut};

/// A message, match, action or instruction that does not decode.
///
/// Always a protocol error: the frame was complete (the header length said so), but its
/// contents disagree with the OpenFlow 1.5 layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    /// The structure being decoded ("flow_mod", "oxm", ...).
    pub what: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            what,
            detail: detail.into(),
        }
    }
}

/// A cursor over a byte slice that only ever fails with [`DecodeError`].
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::new(
                self.what,
                format!(
                    "needs {n} more bytes at offset {}, has {}",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// The `len` bytes starting at absolute offset `start` (for re-reading a structure raw).
    pub(crate) fn slice_at(&self, start: usize, len: usize) -> Result<&'a [u8], DecodeError> {
        self.buf.get(start..start + len).ok_or_else(|| {
            DecodeError::new(
                self.what,
                format!("{len} bytes at offset {start} out of range"),
            )
        })
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails unless every byte was consumed: each structure must account for its whole length.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::new(
                self.what,
                format!(
                    "{} trailing bytes after offset {}",
                    self.remaining(),
                    self.pos
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes of padding that round `len` up to a multiple of 8.
pub(crate) fn pad8(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Writes a big-endian u16 length at `at`, checking it fits.
pub(crate) fn patch_len(buf: &mut BytesMut, at: usize, len: usize) {
    // Every structure we build is far below 64 KiB (packet data is bounded by the MTU);
    // saturate rather than panic if a caller ever feeds more.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_zeros(buf: &mut BytesMut, n: usize) {
    buf.put_bytes(0, n);
}
