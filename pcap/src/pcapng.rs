//! pcapng files (draft-ietf-opsawg-pcapng): a Section Header Block, Interface Description
//! Blocks, then packet blocks, each `type, total length, body, total length`.
//!
//! The reader understands the Section Header (both byte orders, several sections per file),
//! Interface Description (with `if_tsresol` and `if_tsoffset`), Enhanced Packet, Simple Packet
//! and the obsolete Packet Block, and skips every other block type. The writer produces one
//! section whose interfaces declare `if_tsresol = 9`, so timestamps are stored in nanoseconds.

use std::io::{Read, Write};
use std::ops::Range;
use std::time::Duration;

use crate::bytes::{Bytes, Endian};
use crate::error::CaptureError;
use crate::stream::{read_body, read_full, skip};
use crate::{LinkType, Record, MAX_PACKET_LEN};

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 0x0000_0001;
const OBSOLETE_PACKET: u32 = 0x0000_0002;
const SIMPLE_PACKET: u32 = 0x0000_0003;
const ENHANCED_PACKET: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
/// opt_comment (any block): UTF-8 text Wireshark shows as the packet's comment.
const OPT_COMMENT: u16 = 1;
/// `if_name` (pcapng §4.2): the interface's name, UTF-8.
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

/// Largest block this reader accepts. Packet data is capped separately by
/// [`MAX_PACKET_LEN`](crate::MAX_PACKET_LEN); this leaves room for options and for blocks we
/// skip (name resolution, decryption secrets).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;

/// Timestamp resolution of an interface (`if_tsresol`, pcapng §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsResolution {
    /// Units of 10^-n seconds. The default is `Decimal(6)`, microseconds.
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    /// Timestamp units per second; `None` beyond what a 64-bit timestamp can use (10^19, 2^64).
    fn units_per_second(self) -> Option<u128> {
        match self {
            TsResolution::Decimal(n) if n <= 19 => Some(10u128.pow(n.into())),
            TsResolution::Binary(n) if n <= 64 => Some(1u128 << n),
            _ => None,
        }
    }

    fn from_option(byte: u8) -> Self {
        if byte & 0x80 == 0 {
            TsResolution::Decimal(byte)
        } else {
            TsResolution::Binary(byte & 0x7F)
        }
    }
}

/// What an Interface Description Block declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Link type of every packet on this interface.
    pub linktype: LinkType,
    /// Snapshot length; 0 means unlimited.
    pub snaplen: u32,
    /// Timestamp units.
    pub resolution: TsResolution,
    /// Seconds to add to every timestamp (`if_tsoffset`).
    pub offset_seconds: i64,
    /// `if_name`, when the writer gave one (UTF-8, lossily decoded).
    pub name: Option<String>,
}

impl Interface {
    /// Converts a raw 64-bit timestamp to time since the Unix epoch.
    fn timestamp(&self, units: u64) -> Result<Duration, CaptureError> {
        let per_second = self
            .resolution
            .units_per_second()
            .ok_or(CaptureError::Unsupported {
                what: "if_tsresol",
                value: match self.resolution {
                    TsResolution::Decimal(n) => n.into(),
                    TsResolution::Binary(n) => u64::from(n) | 0x80,
                },
            })?;
        let units = u128::from(units);
        // per_second ≤ 2^64 and the remainder is below it, so the product stays under 2^94.
        let nanos = (units % per_second) * 1_000_000_000 / per_second;
        let seconds = i128::try_from(units / per_second).unwrap_or(i128::MAX)
            + i128::from(self.offset_seconds);
        let seconds = u64::try_from(seconds).map_err(|_| CaptureError::Malformed {
            what: "packet timestamp",
            reason: "before 1970 or beyond 2^64 s after if_tsoffset",
        })?;
        // nanos < 10^9 by construction, so this cannot carry into (and overflow) the seconds.
        Ok(Duration::new(seconds, nanos as u32))
    }
}

/// Where the current packet lives in the buffer, found before the record borrows it.
struct PacketLocation {
    data: Range<usize>,
    interface: u32,
    timestamp: Duration,
    original_len: u32,
    /// The first opt_comment of an enhanced packet block.
    comment: Option<Range<usize>>,
}

/// Streams records out of a pcapng file.
///
/// Records borrow the reader's buffer, so each must be dropped before the next read. After an
/// error the stream position is unspecified: drop the reader.
#[derive(Debug)]
pub struct PcapNgReader<R> {
    reader: R,
    endian: Endian,
    interfaces: Vec<Interface>,
    buf: Vec<u8>,
    last_timestamp: Duration,
}

impl<R: Read> PcapNgReader<R> {
    /// Reads and checks the first Section Header Block.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut word = [0u8; 4];
        if !read_full(&mut reader, &mut word, "pcapng section header")? {
            return Err(CaptureError::Truncated {
                what: "pcapng section header",
            });
        }
        Self::after_first_word(reader, word)
    }

    /// Continues once the block type of the first block has been consumed (format sniffing).
    pub(crate) fn after_first_word(reader: R, word: [u8; 4]) -> Result<Self, CaptureError> {
        if u32::from_be_bytes(word) != SECTION_HEADER {
            return Err(CaptureError::UnknownFormat {
                magic: u32::from_be_bytes(word),
            });
        }
        let mut this = PcapNgReader {
            reader,
            endian: Endian::Little,
            interfaces: Vec::new(),
            buf: Vec::new(),
            last_timestamp: Duration::ZERO,
        };
        this.read_section_header()?;
        Ok(this)
    }

    /// The interfaces declared so far in the current section, indexed by interface id.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The next packet record, or `None` at a clean end of file.
    ///
    /// A Simple Packet Block carries no timestamp; its record gets the timestamp of the packet
    /// before it in the section (zero if none), so replay order stays monotonic.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let Some(at) = self.next_packet()? else {
            return Ok(None);
        };
        let linktype = self
            .interfaces
            .get(at.interface as usize)
            .map(|i| i.linktype)
            .ok_or(CaptureError::UnknownInterface(at.interface))?;
        // The range was cut from this very buffer by next_packet; get() keeps that unchecked
        // assumption from ever becoming a panic.
        let data = self.buf.get(at.data).ok_or(CaptureError::Malformed {
            what: "pcapng packet block",
            reason: "packet data outside block",
        })?;
        let comment = at.comment.and_then(|r| self.buf.get(r)).and_then(|c| std::str::from_utf8(c).ok());
        Ok(Some(Record {
            timestamp: at.timestamp,
            linktype,
            interface: at.interface,
            original_len: at.original_len,
            data,
            comment,
        }))
    }

    /// Reads blocks until a packet block, handling section and interface blocks on the way.
    fn next_packet(&mut self) -> Result<Option<PacketLocation>, CaptureError> {
        loop {
            let mut word = [0u8; 4];
            if !read_full(&mut self.reader, &mut word, "pcapng block header")? {
                return Ok(None);
            }
            // The section header type reads the same in both byte orders.
            let block_type = self.endian.u32(word);
            if block_type == SECTION_HEADER {
                self.read_section_header()?;
                continue;
            }
            let mut word = [0u8; 4];
            if !read_full(&mut self.reader, &mut word, "pcapng block header")? {
                return Err(CaptureError::Truncated {
                    what: "pcapng block header",
                });
            }
            let total = self.endian.u32(word);
            check_block_length(total, 12)?;
            // Body plus the trailing copy of the length.
            let rest = total as usize - 8;
            match block_type {
                INTERFACE_DESCRIPTION | ENHANCED_PACKET | SIMPLE_PACKET | OBSOLETE_PACKET => {
                    read_body(&mut self.reader, &mut self.buf, rest, "pcapng block")?;
                    self.check_trailer(total)?;
                }
                _ => {
                    // Unknown or uninteresting block: skip it without buffering.
                    skip(&mut self.reader, rest as u64, "pcapng block")?;
                    continue;
                }
            }
            let body_len = rest - 4;
            match block_type {
                INTERFACE_DESCRIPTION => {
                    let interface = parse_interface(self.buf.get(..body_len), self.endian)?;
                    self.interfaces.push(interface);
                }
                ENHANCED_PACKET => return self.enhanced_packet(body_len).map(Some),
                SIMPLE_PACKET => return self.simple_packet(body_len).map(Some),
                _ => return self.obsolete_packet(body_len).map(Some),
            }
        }
    }

    /// Parses a Section Header Block after its type word: it fixes the byte order and starts a
    /// new section, which forgets the previous section's interfaces.
    fn read_section_header(&mut self) -> Result<(), CaptureError> {
        const WHAT: &str = "pcapng section header";
        let mut head = [0u8; 8];
        if !read_full(&mut self.reader, &mut head, WHAT)? {
            return Err(CaptureError::Truncated { what: WHAT });
        }
        let [l0, l1, l2, l3, m0, m1, m2, m3] = head;
        let magic = [m0, m1, m2, m3];
        self.endian = if u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC {
            Endian::Big
        } else if u32::from_le_bytes(magic) == BYTE_ORDER_MAGIC {
            Endian::Little
        } else {
            return Err(CaptureError::Malformed {
                what: WHAT,
                reason: "bad byte-order magic",
            });
        };
        let total = self.endian.u32([l0, l1, l2, l3]);
        // type, length, magic, version, section length, trailing length.
        check_block_length(total, 28)?;
        let rest = total as usize - 12;
        read_body(&mut self.reader, &mut self.buf, rest, WHAT)?;
        self.check_trailer(total)?;
        let mut b = Bytes::new(&self.buf);
        let major = b.u16(self.endian).unwrap_or(0);
        if major != 1 {
            return Err(CaptureError::Unsupported {
                what: "pcapng major version",
                value: major.into(),
            });
        }
        // Minor version, section length and options carry nothing we need.
        self.interfaces.clear();
        self.last_timestamp = Duration::ZERO;
        Ok(())
    }

    /// Checks that the block ends with a copy of its total length (pcapng §3.1).
    fn check_trailer(&self, total: u32) -> Result<(), CaptureError> {
        let tail = self
            .buf
            .len()
            .checked_sub(4)
            .and_then(|at| self.buf.get(at..));
        let mut word = [0u8; 4];
        match tail {
            Some(t) if t.len() == 4 => word.copy_from_slice(t),
            _ => {
                return Err(CaptureError::Truncated {
                    what: "pcapng block",
                })
            }
        }
        if self.endian.u32(word) != total {
            return Err(CaptureError::Malformed {
                what: "pcapng block",
                reason: "trailing length differs from leading length",
            });
        }
        Ok(())
    }

    fn interface(&self, id: u32) -> Result<&Interface, CaptureError> {
        self.interfaces
            .get(id as usize)
            .ok_or(CaptureError::UnknownInterface(id))
    }

    /// Enhanced Packet Block (§4.3): interface, 64-bit timestamp, lengths, data, options.
    fn enhanced_packet(&mut self, body_len: usize) -> Result<PacketLocation, CaptureError> {
        const WHAT: &str = "pcapng enhanced packet block";
        let e = self.endian;
        let mut b = Bytes::new(self.buf.get(..body_len).unwrap_or_default());
        let fields = (b.u32(e), b.u32(e), b.u32(e), b.u32(e), b.u32(e));
        let (Some(interface), Some(high), Some(low), Some(captured), Some(original)) = fields
        else {
            return Err(CaptureError::Malformed {
                what: WHAT,
                reason: "shorter than its header",
            });
        };
        let start = body_len - b.remaining();
        let data = packet_range(start, captured, b.remaining(), WHAT)?;
        let units = (u64::from(high) << 32) | u64::from(low);
        let timestamp = self.interface(interface)?.timestamp(units)?;
        self.last_timestamp = timestamp;
        let options = data.end.next_multiple_of(4);
        let comment = self.buf.get(options..body_len).and_then(|o| find_option(o, e, OPT_COMMENT)).map(|r| r.start + options..r.end + options);
        Ok(PacketLocation {
            data,
            interface,
            timestamp,
            original_len: original,
            comment,
        })
    }

    /// Simple Packet Block (§4.4): original length and data, on interface 0, no timestamp.
    fn simple_packet(&mut self, body_len: usize) -> Result<PacketLocation, CaptureError> {
        const WHAT: &str = "pcapng simple packet block";
        let mut b = Bytes::new(self.buf.get(..body_len).unwrap_or_default());
        let original = b.u32(self.endian).ok_or(CaptureError::Malformed {
            what: WHAT,
            reason: "shorter than its header",
        })?;
        let snaplen = self.interface(0)?.snaplen;
        // The captured length is implied: the original length, cut at the snapshot length.
        let mut captured = original;
        if snaplen != 0 {
            captured = captured.min(snaplen);
        }
        let data = packet_range(4, captured, b.remaining(), WHAT)?;
        Ok(PacketLocation {
            data,
            interface: 0,
            timestamp: self.last_timestamp,
            original_len: original,
            comment: None,
        })
    }

    /// The obsolete Packet Block (type 2): like the enhanced one with 16-bit interface ids.
    fn obsolete_packet(&mut self, body_len: usize) -> Result<PacketLocation, CaptureError> {
        const WHAT: &str = "pcapng packet block";
        let e = self.endian;
        let mut b = Bytes::new(self.buf.get(..body_len).unwrap_or_default());
        let fields = (b.u16(e), b.u16(e), b.u32(e), b.u32(e), b.u32(e), b.u32(e));
        let (Some(interface), Some(_drops), Some(high), Some(low), Some(captured), Some(original)) =
            fields
        else {
            return Err(CaptureError::Malformed {
                what: WHAT,
                reason: "shorter than its header",
            });
        };
        let interface = u32::from(interface);
        let start = body_len - b.remaining();
        let data = packet_range(start, captured, b.remaining(), WHAT)?;
        let units = (u64::from(high) << 32) | u64::from(low);
        let timestamp = self.interface(interface)?.timestamp(units)?;
        self.last_timestamp = timestamp;
        Ok(PacketLocation {
            data,
            interface,
            timestamp,
            original_len: original,
            comment: None,
        })
    }
}

/// The value range (within `options`) of the first option `code` in a pcapng option list
/// (§3.5: code, length, value padded to 32 bits); `None` when absent or the list is cut.
fn find_option(options: &[u8], e: Endian, code: u16) -> Option<Range<usize>> {
    let mut at = 0;
    while let Some(head) = options.get(at..at + 4) {
        let c = e.u16([head[0], head[1]]);
        let len = usize::from(e.u16([head[2], head[3]]));
        if c == OPT_END {
            return None;
        }
        let value = at + 4..at + 4 + len;
        options.get(value.clone())?;
        if c == code {
            return Some(value);
        }
        at = value.start + len.next_multiple_of(4);
    }
    None
}

/// Block lengths are multiples of 4 (§3.1), cover at least the fixed part, and stay under our
/// cap.
fn check_block_length(total: u32, minimum: u32) -> Result<(), CaptureError> {
    if total > MAX_BLOCK_LEN {
        return Err(CaptureError::TooLarge {
            what: "pcapng block",
            len: total.into(),
            max: MAX_BLOCK_LEN.into(),
        });
    }
    if total < minimum || total & 3 != 0 {
        return Err(CaptureError::Malformed {
            what: "pcapng block",
            reason: "total length too short or not a multiple of 4",
        });
    }
    Ok(())
}

/// The packet data range of a block body, checking the captured length against what remains.
fn packet_range(
    start: usize,
    captured: u32,
    remaining: usize,
    what: &'static str,
) -> Result<Range<usize>, CaptureError> {
    if captured > MAX_PACKET_LEN {
        return Err(CaptureError::TooLarge {
            what,
            len: captured.into(),
            max: MAX_PACKET_LEN.into(),
        });
    }
    let captured = captured as usize;
    if captured > remaining {
        return Err(CaptureError::Malformed {
            what,
            reason: "captured length exceeds the block",
        });
    }
    Ok(start..start + captured)
}

/// Interface Description Block (§4.2): link type, snapshot length, options.
fn parse_interface(body: Option<&[u8]>, e: Endian) -> Result<Interface, CaptureError> {
    const WHAT: &str = "pcapng interface description block";
    let mut b = Bytes::new(body.unwrap_or_default());
    let (Some(linktype), Some(_reserved), Some(snaplen)) = (b.u16(e), b.u16(e), b.u32(e)) else {
        return Err(CaptureError::Malformed {
            what: WHAT,
            reason: "shorter than its header",
        });
    };
    let mut interface = Interface {
        linktype: LinkType(linktype),
        snaplen,
        resolution: TsResolution::Decimal(6),
        offset_seconds: 0,
        name: None,
    };
    // Options (§3.5): code, length, value padded to 32 bits; opt_endofopt or the body's end
    // closes the list.
    while b.remaining() >= 4 {
        let (Some(code), Some(len)) = (b.u16(e), b.u16(e)) else {
            break;
        };
        if code == OPT_END {
            break;
        }
        let padded = (usize::from(len) + 3) & !3;
        let Some(value) = b.take(padded).and_then(|v| v.get(..usize::from(len))) else {
            return Err(CaptureError::Malformed {
                what: WHAT,
                reason: "option overruns block",
            });
        };
        match (code, value) {
            (OPT_IF_TSRESOL, [byte]) => interface.resolution = TsResolution::from_option(*byte),
            (OPT_IF_NAME, v) => interface.name = Some(String::from_utf8_lossy(v).trim_end_matches('\0').to_owned()),
            (OPT_IF_TSOFFSET, v) => {
                if let Ok(v) = <[u8; 8]>::try_from(v) {
                    interface.offset_seconds = e.u64(v) as i64;
                }
            }
            _ => {}
        }
    }
    Ok(interface)
}

/// Writes a pcapng file: one section, little-endian, nanosecond timestamps.
///
/// Wrap the sink in a `BufWriter`: each packet is a few small writes.
#[derive(Debug)]
pub struct PcapNgWriter<W: Write> {
    writer: W,
    interfaces: u32,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the Section Header Block and the Interface Description Block of interface 0.
    pub fn new(writer: W, linktype: LinkType) -> Result<Self, CaptureError> {
        Self::with_interface(writer, linktype, None)
    }

    /// As [`Self::new`], naming interface 0 (`if_name`, what Wireshark shows as the interface).
    pub fn new_named(writer: W, linktype: LinkType, name: &str) -> Result<Self, CaptureError> {
        Self::with_interface(writer, linktype, Some(name))
    }

    fn with_interface(mut writer: W, linktype: LinkType, name: Option<&str>) -> Result<Self, CaptureError> {
        let mut shb = Vec::with_capacity(28);
        shb.extend(SECTION_HEADER.to_le_bytes());
        shb.extend(28u32.to_le_bytes());
        shb.extend(BYTE_ORDER_MAGIC.to_le_bytes());
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        // Section length -1: not given.
        shb.extend(u64::MAX.to_le_bytes());
        shb.extend(28u32.to_le_bytes());
        writer.write_all(&shb)?;
        let mut this = PcapNgWriter {
            writer,
            interfaces: 0,
        };
        this.write_interface(linktype, name)?;
        Ok(this)
    }

    /// Declares one more interface (ids count up from 0) with nanosecond timestamps.
    pub fn add_interface(&mut self, linktype: LinkType) -> Result<u32, CaptureError> {
        self.write_interface(linktype, None)
    }

    /// As [`Self::add_interface`], with an `if_name` (at most 255 bytes are kept).
    pub fn add_named_interface(&mut self, linktype: LinkType, name: &str) -> Result<u32, CaptureError> {
        self.write_interface(linktype, Some(name))
    }

    fn write_interface(&mut self, linktype: LinkType, name: Option<&str>) -> Result<u32, CaptureError> {
        let name = name.map(|n| &n.as_bytes()[..n.len().min(255)]).unwrap_or_default();
        let name_opt = if name.is_empty() { 0 } else { 4 + name.len().next_multiple_of(4) };
        let len = (32 + name_opt) as u32;
        let mut idb = Vec::with_capacity(len as usize);
        idb.extend(INTERFACE_DESCRIPTION.to_le_bytes());
        idb.extend(len.to_le_bytes());
        idb.extend(linktype.0.to_le_bytes());
        idb.extend(0u16.to_le_bytes());
        idb.extend(MAX_PACKET_LEN.to_le_bytes());
        if !name.is_empty() {
            idb.extend(OPT_IF_NAME.to_le_bytes());
            idb.extend((name.len() as u16).to_le_bytes());
            idb.extend(name);
            idb.resize(idb.len() + (name.len().next_multiple_of(4) - name.len()), 0);
        }
        // if_tsresol = 9: 10^-9 s units. One value byte, padded to 4.
        idb.extend(OPT_IF_TSRESOL.to_le_bytes());
        idb.extend(1u16.to_le_bytes());
        idb.extend([9, 0, 0, 0]);
        idb.extend(OPT_END.to_le_bytes());
        idb.extend(0u16.to_le_bytes());
        idb.extend(len.to_le_bytes());
        self.writer.write_all(&idb)?;
        let id = self.interfaces;
        self.interfaces += 1;
        Ok(id)
    }

    /// Appends an Enhanced Packet Block on interface 0. See [`Self::write_packet_on`].
    pub fn write_packet(&mut self, timestamp: Duration, data: &[u8]) -> Result<(), CaptureError> {
        self.write_packet_on(0, timestamp, data)
    }

    /// Appends an Enhanced Packet Block on `interface`. `timestamp` is since the Unix epoch.
    /// Data beyond the snapshot length (256 KiB) is cut, and the full length recorded.
    pub fn write_packet_on(
        &mut self,
        interface: u32,
        timestamp: Duration,
        data: &[u8],
    ) -> Result<(), CaptureError> {
        self.write_enhanced(interface, timestamp, data, None)
    }

    /// As [`Self::write_packet_on`], with an `opt_comment` on the packet (Wireshark shows it
    /// in the packet details and as a "Comment" expert item; tshark as `frame.comment`). At
    /// most 65 535 bytes of the comment are kept.
    pub fn write_commented_packet_on(
        &mut self,
        interface: u32,
        timestamp: Duration,
        data: &[u8],
        comment: &str,
    ) -> Result<(), CaptureError> {
        self.write_enhanced(interface, timestamp, data, Some(comment))
    }

    fn write_enhanced(
        &mut self,
        interface: u32,
        timestamp: Duration,
        data: &[u8],
        comment: Option<&str>,
    ) -> Result<(), CaptureError> {
        if interface >= self.interfaces {
            return Err(CaptureError::UnknownInterface(interface));
        }
        let units = u64::try_from(timestamp.as_nanos())
            .map_err(|_| CaptureError::TimestampOutOfRange(timestamp))?;
        let original = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let captured = original.min(MAX_PACKET_LEN);
        let padding = captured.wrapping_neg() & 3;
        let comment = comment.map(|c| &c.as_bytes()[..c.len().min(usize::from(u16::MAX))]).filter(|c| !c.is_empty());
        // opt_comment (4 + text padded to 4) and opt_endofopt (4).
        let options = comment.map_or(0, |c| 8 + c.len().next_multiple_of(4) as u32);
        // Header (8) + fixed fields (20) + data + padding + options + trailer (4).
        let total = 32 + captured + padding + options;
        let mut head = [0u8; 28];
        let fields = [
            ENHANCED_PACKET,
            total,
            interface,
            (units >> 32) as u32,
            units as u32,
            captured,
            original,
        ];
        for (chunk, field) in head.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        self.writer.write_all(&head)?;
        self.writer
            .write_all(data.get(..captured as usize).unwrap_or(data))?;
        self.writer.write_all(&[0u8; 3][..padding as usize])?;
        if let Some(c) = comment {
            self.writer.write_all(&OPT_COMMENT.to_le_bytes())?;
            self.writer.write_all(&(c.len() as u16).to_le_bytes())?;
            self.writer.write_all(c)?;
            self.writer.write_all(&[0u8; 3][..c.len().next_multiple_of(4) - c.len()])?;
            self.writer.write_all(&[0u8; 4])?; // opt_endofopt
        }
        self.writer.write_all(&total.to_le_bytes())?;
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

    /// Builds pcapng blocks in either byte order, for hand-made test files.
    struct Blocks {
        e: Endian,
        out: Vec<u8>,
    }

    impl Blocks {
        fn new(e: Endian) -> Self {
            Blocks { e, out: Vec::new() }
        }
        fn u16(&self, v: u16) -> [u8; 2] {
            match self.e {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            }
        }
        fn u32(&self, v: u32) -> [u8; 4] {
            match self.e {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            }
        }
        fn block(&mut self, kind: u32, body: &[u8]) -> &mut Self {
            let mut body = body.to_vec();
            while body.len() & 3 != 0 {
                body.push(0);
            }
            let total = body.len() as u32 + 12;
            let (k, t) = (self.u32(kind), self.u32(total));
            self.out.extend(k);
            self.out.extend(t);
            self.out.extend(body);
            self.out.extend(t);
            self
        }
        fn shb(&mut self) -> &mut Self {
            let mut body = self.u32(BYTE_ORDER_MAGIC).to_vec();
            body.extend(self.u16(1));
            body.extend(self.u16(0));
            body.extend([0xFF; 8]);
            self.block(SECTION_HEADER, &body)
        }
        fn idb(&mut self, linktype: u16, snaplen: u32, options: &[(u16, &[u8])]) -> &mut Self {
            let mut body = self.u16(linktype).to_vec();
            body.extend(self.u16(0));
            body.extend(self.u32(snaplen));
            for (code, value) in options {
                body.extend(self.u16(*code));
                body.extend(self.u16(value.len() as u16));
                body.extend(*value);
                while body.len() & 3 != 0 {
                    body.push(0);
                }
            }
            self.block(INTERFACE_DESCRIPTION, &body)
        }
        fn epb(&mut self, interface: u32, units: u64, data: &[u8]) -> &mut Self {
            let mut body = self.u32(interface).to_vec();
            body.extend(self.u32((units >> 32) as u32));
            body.extend(self.u32(units as u32));
            body.extend(self.u32(data.len() as u32));
            body.extend(self.u32(data.len() as u32 + 100));
            body.extend(data);
            self.block(ENHANCED_PACKET, &body)
        }
        fn spb(&mut self, original: u32, data: &[u8]) -> &mut Self {
            let mut body = self.u32(original).to_vec();
            body.extend(data);
            self.block(SIMPLE_PACKET, &body)
        }
    }

    #[test]
    fn round_trip_two_interfaces_nanoseconds() {
        let mut w = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
        assert_eq!(w.add_interface(LinkType::ETHERNET).unwrap(), 1);
        let t0 = Duration::new(1_700_000_000, 123_456_789);
        w.write_packet(t0, b"abc").unwrap();
        w.write_packet_on(1, t0 + Duration::from_nanos(1), b"defgh")
            .unwrap();
        w.write_packet(t0, b"").unwrap();
        assert!(matches!(
            w.write_packet_on(2, t0, b""),
            Err(CaptureError::UnknownInterface(2))
        ));
        let bytes = w.into_inner();
        assert_eq!(bytes.len() & 3, 0);

        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.timestamp, rec.data, rec.linktype, rec.interface),
            (t0, &b"abc"[..], LinkType::RAW, 0)
        );
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.timestamp, t0 + Duration::from_nanos(1));
        assert_eq!(
            (rec.data, rec.linktype, rec.interface, rec.original_len),
            (&b"defgh"[..], LinkType::ETHERNET, 1, 5)
        );
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.data, b"");
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.interfaces()[0].resolution, TsResolution::Decimal(9));
    }

    #[test]
    fn big_endian_default_microseconds_simple_packets_and_unknown_blocks() {
        let mut f = Blocks::new(Endian::Big);
        f.shb()
            .idb(1, 4, &[(2, b"eth0"), (OPT_END, b"")])
            .block(0x0000_0BAD, b"custom block to skip")
            // 1.5 s in the default microsecond units.
            .epb(0, 1_500_000, b"\x01\x02\x03")
            // Original length 10, cut at the snapshot length 4.
            .spb(10, b"\x09\x08\x07\x06");
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.timestamp, Duration::from_millis(1500));
        assert_eq!((rec.data, rec.original_len), (&[1, 2, 3][..], 103));
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.data, rec.original_len), (&[9, 8, 7, 6][..], 10));
        // No timestamp in a simple packet block: the previous packet's.
        assert_eq!(rec.timestamp, Duration::from_millis(1500));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn tsresol_binary_and_offset_and_new_sections() {
        let mut f = Blocks::new(Endian::Little);
        // 2^-10 s units, +100 s offset.
        f.shb().idb(
            101,
            0,
            &[
                (OPT_IF_TSRESOL, &[0x80 | 10]),
                (OPT_IF_TSOFFSET, &100u64.to_le_bytes()),
            ],
        );
        f.epb(0, 3 * 1024 + 512, b"x");
        // A second section, big-endian, forgets interface 0's settings.
        let mut g = Blocks::new(Endian::Big);
        g.shb()
            .idb(1, 0, &[(OPT_IF_TSRESOL, &[3])])
            .epb(0, 2_001, b"y");
        f.out.extend(g.out);
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.timestamp, rec.linktype),
            (Duration::from_millis(103_500), LinkType::RAW)
        );
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.timestamp, rec.linktype),
            (Duration::from_millis(2_001), LinkType::ETHERNET)
        );
        assert_eq!(r.interfaces().len(), 1);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        // Packet before any interface.
        let mut f = Blocks::new(Endian::Little);
        f.shb().epb(0, 0, b"x");
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::UnknownInterface(0))
        ));

        // Captured length larger than the block.
        let mut f = Blocks::new(Endian::Little);
        f.shb().idb(1, 0, &[]);
        let mut body = [0u32, 0, 0, 1000, 1000].map(u32::to_le_bytes).concat();
        body.extend([0; 4]);
        f.block(ENHANCED_PACKET, &body);
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::Malformed { .. })
        ));

        // Trailing length mismatch.
        let mut f = Blocks::new(Endian::Little);
        f.shb().idb(1, 0, &[]);
        let last = f.out.len() - 4;
        f.out[last] ^= 4;
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        assert!(r.next_record().is_err());

        // Unsupported timestamp resolution.
        let mut f = Blocks::new(Endian::Little);
        f.shb().idb(1, 0, &[(OPT_IF_TSRESOL, &[60])]).epb(0, 5, b"");
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::Unsupported {
                what: "if_tsresol",
                ..
            })
        ));

        // Not pcapng at all, and a huge block length.
        assert!(matches!(
            PcapNgReader::new(&[1, 2, 3, 4, 5][..]),
            Err(CaptureError::UnknownFormat { .. })
        ));
        let mut f = Blocks::new(Endian::Little);
        f.shb();
        f.out.extend(1u32.to_le_bytes());
        f.out.extend(u32::MAX.to_le_bytes());
        let mut r = PcapNgReader::new(&f.out[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::TooLarge { .. })
        ));
    }

    #[test]
    fn writer_layout_matches_the_spec() {
        let mut w = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
        w.write_packet(Duration::from_nanos(0x1_0000_0002), b"hello")
            .unwrap();
        let b = w.into_inner();
        // SHB: 28 bytes, type 0x0A0D0D0A, byte-order magic, version 1.0.
        assert_eq!(b[0..4], [0x0A, 0x0D, 0x0D, 0x0A]);
        assert_eq!(b[8..12], [0x4D, 0x3C, 0x2B, 0x1A]);
        // IDB at 28: linktype 101, then if_tsresol (code 9, length 1, value 9).
        assert_eq!(b[28..32], [1, 0, 0, 0]);
        assert_eq!(b[36..38], [101, 0]);
        assert_eq!(b[44..49], [9, 0, 1, 0, 9]);
        // EPB at 60: timestamp high word 1, low word 2, lengths 5, data padded to 8.
        let epb = &b[60..];
        assert_eq!(epb[0..4], [6, 0, 0, 0]);
        assert_eq!(epb[4..8], 40u32.to_le_bytes());
        assert_eq!(epb[12..16], 1u32.to_le_bytes());
        assert_eq!(epb[16..20], 2u32.to_le_bytes());
        assert_eq!(epb[28..36], *b"hello\0\0\0");
        assert_eq!(epb[36..40], 40u32.to_le_bytes());
        assert_eq!(epb.len(), 40);
    }
}
