//! Classic libpcap files: the 24-byte global header followed by records of a 16-byte header
//! and the captured bytes (the format of `pcap-savefile(5)` and draft-ietf-opsawg-pcap).
//!
//! The reader accepts microsecond (`0xA1B2C3D4`) and nanosecond (`0xA1B23C4D`) magic numbers
//! in either byte order. The writer always produces little-endian, nanosecond-resolution files,
//! so no precision is lost between Estuary's `Duration` timestamps and disk.

use std::io::{Read, Write};
use std::time::Duration;

use crate::bytes::{Bytes, Endian};
use crate::error::CaptureError;
use crate::stream::{read_body, read_full};
use crate::{LinkType, Record, MAX_PACKET_LEN};

const MAGIC_MICROS: u32 = 0xA1B2_C3D4;
const MAGIC_NANOS: u32 = 0xA1B2_3C4D;

/// Streams records out of a classic pcap file.
///
/// Records borrow the reader's buffer, so each must be dropped before the next read. After an
/// error the stream position is unspecified: drop the reader.
#[derive(Debug)]
pub struct PcapReader<R> {
    reader: R,
    endian: Endian,
    nanosecond: bool,
    linktype: LinkType,
    snaplen: u32,
    buf: Vec<u8>,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the global header.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        if !read_full(&mut reader, &mut magic, "pcap header")? {
            return Err(CaptureError::Truncated {
                what: "pcap header",
            });
        }
        Self::after_magic(reader, magic)
    }

    /// Continues with the header once the first four bytes have been consumed (format sniffing).
    pub(crate) fn after_magic(mut reader: R, magic: [u8; 4]) -> Result<Self, CaptureError> {
        let (endian, nanosecond) = if u32::from_le_bytes(magic) == MAGIC_MICROS {
            (Endian::Little, false)
        } else if u32::from_le_bytes(magic) == MAGIC_NANOS {
            (Endian::Little, true)
        } else if u32::from_be_bytes(magic) == MAGIC_MICROS {
            (Endian::Big, false)
        } else if u32::from_be_bytes(magic) == MAGIC_NANOS {
            (Endian::Big, true)
        } else {
            return Err(CaptureError::UnknownFormat {
                magic: u32::from_be_bytes(magic),
            });
        };
        let mut header = [0u8; 20];
        if !read_full(&mut reader, &mut header, "pcap header")? {
            return Err(CaptureError::Truncated {
                what: "pcap header",
            });
        }
        let mut b = Bytes::new(&header);
        let truncated = CaptureError::Truncated {
            what: "pcap header",
        };
        let major = b.u16(endian).ok_or(truncated)?;
        let _minor = b.u16(endian);
        // thiszone and sigfigs: always 0 in practice; timestamps are taken as UTC.
        let _ = b.skip(8);
        let snaplen = b.u32(endian).unwrap_or(0);
        let network = b.u32(endian).unwrap_or(0);
        if major != 2 {
            return Err(CaptureError::Unsupported {
                what: "pcap major version",
                value: major.into(),
            });
        }
        // The upper bits of the link-type word carry FCS length flags, not the link type.
        let linktype = LinkType((network & 0xFFFF) as u16);
        Ok(PcapReader {
            reader,
            endian,
            nanosecond,
            linktype,
            snaplen,
            buf: Vec::new(),
        })
    }

    /// The link type of every record in the file.
    pub fn linktype(&self) -> LinkType {
        self.linktype
    }

    /// The snapshot length the capture was taken with.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Whether timestamps have nanosecond (rather than microsecond) resolution.
    pub fn is_nanosecond(&self) -> bool {
        self.nanosecond
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let mut header = [0u8; 16];
        if !read_full(&mut self.reader, &mut header, "pcap record header")? {
            return Ok(None);
        }
        let e = self.endian;
        let word = |i: usize| {
            let mut w = [0u8; 4];
            if let Some(src) = header.get(i * 4..i * 4 + 4) {
                w.copy_from_slice(src);
            }
            e.u32(w)
        };
        let (seconds, fraction, captured, original) = (word(0), word(1), word(2), word(3));
        if captured > MAX_PACKET_LEN {
            return Err(CaptureError::TooLarge {
                what: "pcap record",
                len: captured.into(),
                max: MAX_PACKET_LEN.into(),
            });
        }
        read_body(
            &mut self.reader,
            &mut self.buf,
            captured as usize,
            "pcap record",
        )?;
        // Out-of-range fractions (≥ 1 s) are carried into the seconds rather than rejected, as
        // libpcap does; the sum cannot overflow a Duration (at most 2^32 s + 4295 s).
        let nanos = if self.nanosecond {
            u64::from(fraction)
        } else {
            u64::from(fraction) * 1000
        };
        let timestamp = Duration::from_secs(seconds.into()) + Duration::from_nanos(nanos);
        Ok(Some(Record {
            timestamp,
            linktype: self.linktype,
            interface: 0,
            original_len: original,
            data: &self.buf,
            comment: None,
        }))
    }
}

/// Writes a little-endian, nanosecond-resolution classic pcap file.
///
/// Wrap the sink in a `BufWriter`: each record is two small writes.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    writer: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header for `linktype`: [`LinkType::RAW`] for packets from
    /// [`build_udp`](crate::build_udp) and [`build_tcp`](crate::build_tcp),
    /// [`LinkType::ETHERNET`] after [`wrap_ethernet`](crate::wrap_ethernet).
    pub fn new(mut writer: W, linktype: LinkType) -> Result<Self, CaptureError> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone = 0, sigfigs = 0 (bytes 8..16 stay zero).
        header[16..20].copy_from_slice(&MAX_PACKET_LEN.to_le_bytes());
        header[20..24].copy_from_slice(&u32::from(linktype.0).to_le_bytes());
        writer.write_all(&header)?;
        Ok(PcapWriter { writer })
    }

    /// Appends one record. `timestamp` is since the Unix epoch and must be below 2^32 s.
    /// Data beyond the snapshot length (256 KiB) is cut, and the full length recorded.
    pub fn write_packet(&mut self, timestamp: Duration, data: &[u8]) -> Result<(), CaptureError> {
        let seconds = u32::try_from(timestamp.as_secs())
            .map_err(|_| CaptureError::TimestampOutOfRange(timestamp))?;
        let original = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let captured = original.min(MAX_PACKET_LEN);
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&seconds.to_le_bytes());
        header[4..8].copy_from_slice(&timestamp.subsec_nanos().to_le_bytes());
        header[8..12].copy_from_slice(&captured.to_le_bytes());
        header[12..16].copy_from_slice(&original.to_le_bytes());
        self.writer.write_all(&header)?;
        self.writer
            .write_all(data.get(..captured as usize).unwrap_or(data))?;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        Ok(self.writer.flush()?)
    }

    /// Returns the underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: u64, n: u32) -> Duration {
        Duration::new(s, n)
    }

    #[test]
    fn round_trip_keeps_nanoseconds() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
        w.write_packet(ts(1_700_000_000, 123_456_789), b"first")
            .unwrap();
        w.write_packet(ts(1_700_000_001, 999_999_999), b"").unwrap();
        w.write_packet(ts(0, 1), &[0xAB; 1500]).unwrap();
        let bytes = w.into_inner();

        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.linktype(), LinkType::RAW);
        assert!(r.is_nanosecond());
        assert_eq!(r.snaplen(), MAX_PACKET_LEN);
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.timestamp, rec.data, rec.original_len),
            (ts(1_700_000_000, 123_456_789), &b"first"[..], 5)
        );
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.timestamp, rec.data.len()),
            (ts(1_700_000_001, 999_999_999), 0)
        );
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.timestamp, rec.data), (ts(0, 1), &[0xAB; 1500][..]));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn writer_rejects_timestamps_past_2106() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
        let late = Duration::from_secs(u64::from(u32::MAX) + 1);
        assert!(matches!(
            w.write_packet(late, b"x"),
            Err(CaptureError::TimestampOutOfRange(_))
        ));
    }

    #[test]
    fn big_endian_microsecond_file() {
        // Global header as a big-endian machine writes it, linktype 113 (Linux SLL).
        let mut f = vec![0xA1, 0xB2, 0xC3, 0xD4, 0, 2, 0, 4];
        f.extend([0; 8]); // thiszone, sigfigs
        f.extend(65535u32.to_be_bytes());
        f.extend(113u32.to_be_bytes());
        // One record: 10 s + 250000 µs, 3 of 60 bytes captured.
        f.extend(10u32.to_be_bytes());
        f.extend(250_000u32.to_be_bytes());
        f.extend(3u32.to_be_bytes());
        f.extend(60u32.to_be_bytes());
        f.extend([1, 2, 3]);
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert_eq!(r.linktype(), LinkType::LINUX_SLL);
        assert!(!r.is_nanosecond());
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.timestamp, Duration::from_millis(10_250));
        assert_eq!((rec.data, rec.original_len), (&[1, 2, 3][..], 60));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn truncation_is_an_error_not_an_end() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
        w.write_packet(ts(1, 0), b"payload").unwrap();
        let bytes = w.into_inner();
        for cut in [bytes.len() - 1, 24 + 8] {
            let mut r = PcapReader::new(&bytes[..cut]).unwrap();
            assert!(
                matches!(r.next_record(), Err(CaptureError::Truncated { .. })),
                "cut {cut}"
            );
        }
        assert!(matches!(
            PcapReader::new(&bytes[..10]),
            Err(CaptureError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_oversized_records_and_unknown_magic() {
        let mut f = PcapWriter::new(Vec::new(), LinkType::RAW)
            .unwrap()
            .into_inner();
        f.extend([0; 8]);
        f.extend(u32::MAX.to_le_bytes());
        f.extend(u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::TooLarge { .. })
        ));
        assert!(matches!(
            PcapReader::new(&b"GIF89a.................."[..]),
            Err(CaptureError::UnknownFormat { magic: 0x4749_4638 })
        ));
    }
}
