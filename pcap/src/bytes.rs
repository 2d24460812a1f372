//! A bounds-checked reader over a byte slice, and the byte orders captures come in.
//!
//! Every read returns `None` instead of indexing past the end, so parsers built on it cannot
//! panic on short input; callers turn `None` into the typed error of their layer.

/// Byte order of a capture section (pcap and pcapng files are written in the writer's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endian {
    Little,
    Big,
}

impl Endian {
    pub(crate) fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }

    pub(crate) fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }

    pub(crate) fn u64(self, b: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }
}

/// Cursor over a slice: reads advance, nothing reads past the end.
#[derive(Clone, Debug)]
pub(crate) struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Bytes { rest: buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The unread bytes, without consuming them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self, e: Endian) -> Option<u16> {
        self.array().map(|b| e.u16(b))
    }

    pub(crate) fn u32(&mut self, e: Endian) -> Option<u32> {
        self.array().map(|b| e.u32(b))
    }

    /// Network byte order shorthands for packet headers.
    pub(crate) fn be16(&mut self) -> Option<u16> {
        self.u16(Endian::Big)
    }

    pub(crate) fn be32(&mut self) -> Option<u32> {
        self.u32(Endian::Big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let mut b = Bytes::new(&[1, 2, 3, 4, 5]);
        assert_eq!(b.u16(Endian::Little), Some(0x0201));
        assert_eq!(b.be16(), Some(0x0304));
        assert_eq!(b.be32(), None);
        assert_eq!(b.remaining(), 1);
        assert_eq!(b.u8(), Some(5));
        assert_eq!(b.u8(), None);
        assert_eq!(b.take(0), Some(&[][..]));
    }

    #[test]
    fn endian_decodes_both_orders() {
        assert_eq!(Endian::Big.u32([0xA1, 0xB2, 0xC3, 0xD4]), 0xA1B2_C3D4);
        assert_eq!(Endian::Little.u32([0xD4, 0xC3, 0xB2, 0xA1]), 0xA1B2_C3D4);
        assert_eq!(Endian::Big.u64([0, 0, 0, 0, 0, 0, 1, 0]), 256);
    }
}
