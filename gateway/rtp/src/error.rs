//! Typed errors. Two classes, as STYLE.md R5 asks: [`ParseError`] is the peer's fault (malformed
//! bytes), [`WriteError`] is the caller's (a buffer too small or a list too long for the wire).

/// Bytes that are not a valid packet of the kind asked for.
///
/// Media has no error response: the one answer to every variant is "drop the datagram and count
/// it". The variants exist so the count can say why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer ends before a field or a length the packet declares.
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which structure was being read.
        what: &'static str,
        /// Bytes the structure needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The version field is not 2 (RFC 3550 §5.1, §6.4.1).
    #[error("version {0}, expected 2")]
    Version(u8),
    /// The padding count is zero or larger than the space it claims to pad (RFC 3550 §5.1).
    #[error("invalid padding count {0}")]
    Padding(u8),
    /// A field has a value the format does not allow.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// A writer could not encode what it was asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The output buffer cannot hold the packet.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A list or string is longer than its wire field can count (e.g. 31 report blocks, a
    /// 255-byte SDES item).
    #[error("too many {what}: {len}, at most {max}")]
    TooLong {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most the field allows.
        max: usize,
    },
}

/// `Err(Truncated)` unless `buf` holds at least `need` bytes.
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<(), ParseError> {
    if buf.len() < need {
        Err(ParseError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// `Err(BufferTooSmall)` unless `buf` holds at least `need` bytes.
pub(crate) fn room(buf: &[u8], need: usize) -> Result<(), WriteError> {
    if buf.len() < need {
        Err(WriteError::BufferTooSmall {
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// `Err(TooLong)` if `len > max`.
pub(crate) fn at_most(what: &'static str, len: usize, max: usize) -> Result<(), WriteError> {
    if len > max {
        Err(WriteError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}
