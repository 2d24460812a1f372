//! Reading exact byte counts from a stream without trusting lengths found in the stream.

use std::io::{self, Read};

use crate::error::CaptureError;

/// Fills `buf` completely. Returns `Ok(false)` if the stream was already at its end (a clean
/// end between records), and `Truncated` if it ends part-way through `buf`.
pub(crate) fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<bool, CaptureError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(CaptureError::Truncated { what }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Replaces the contents of `buf` with exactly `len` bytes from the stream.
///
/// The buffer grows only as bytes actually arrive, so a hostile length field in a short file
/// cannot make us allocate what the file does not hold.
pub(crate) fn read_body<R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
    what: &'static str,
) -> Result<(), CaptureError> {
    buf.clear();
    let got = r.by_ref().take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(CaptureError::Truncated { what });
    }
    Ok(())
}

/// Discards exactly `len` bytes from the stream.
pub(crate) fn skip<R: Read>(r: &mut R, len: u64, what: &'static str) -> Result<(), CaptureError> {
    let got = io::copy(&mut r.by_ref().take(len), &mut io::sink())?;
    if got < len {
        return Err(CaptureError::Truncated { what });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_end_partial_end_and_exact_reads() {
        let mut buf = [0u8; 4];
        assert!(!read_full(&mut &[][..], &mut buf, "x").unwrap());
        assert!(matches!(
            read_full(&mut &[1, 2][..], &mut buf, "x"),
            Err(CaptureError::Truncated { .. })
        ));
        assert!(read_full(&mut &[1, 2, 3, 4, 5][..], &mut buf, "x").unwrap());
        assert_eq!(buf, [1, 2, 3, 4]);

        let mut v = vec![9; 100];
        read_body(&mut &[1, 2, 3][..], &mut v, 2, "x").unwrap();
        assert_eq!(v, [1, 2]);
        assert!(read_body(&mut &[1, 2, 3][..], &mut v, 1 << 40, "x").is_err());
        assert!(skip(&mut &[1, 2, 3][..], 3, "x").is_ok());
        assert!(skip(&mut &[1, 2, 3][..], 4, "x").is_err());
    }
}
