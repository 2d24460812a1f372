//! Typed errors: one enum for capture files, one for packet decoding, one for packet building.
//!
//! Capture and packet bytes are untrusted (captures come from the field). Every way they can be
//! wrong is a variant here, never a panic.

use std::fmt;

/// Reading or writing a pcap/pcapng file failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The underlying reader or writer failed.
    #[error("capture i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The first four bytes are neither a pcap magic number nor a pcapng section header.
    #[error("not a pcap or pcapng capture (first word {magic:#010x})")]
    UnknownFormat {
        /// The first four bytes, read big-endian.
        magic: u32,
    },
    /// The input ended inside a header, record or block.
    #[error("capture truncated inside {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A header, record or block contradicts itself or the format.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record or block claims more bytes than this reader accepts.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A well-formed feature this crate does not implement.
    #[error("unsupported {what} {value}")]
    Unsupported {
        /// The feature.
        what: &'static str,
        /// Its value in the file.
        value: u64,
    },
    /// A pcapng packet names an interface no Interface Description Block declared.
    #[error("packet on undeclared interface {0}")]
    UnknownInterface(u32),
    /// The writer was given a timestamp the format cannot hold.
    #[error("timestamp {0:?} does not fit the capture format")]
    TimestampOutOfRange(std::time::Duration),
}

/// The protocol layer a [`DecodeError`] happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Link layer: Ethernet (with VLAN tags), Linux SLL/SLL2, BSD loopback.
    Link,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header and its extension headers.
    Ipv6,
    /// UDP header.
    Udp,
    /// TCP header.
    Tcp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Link => "link-layer",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Udp => "UDP",
            Layer::Tcp => "TCP",
        })
    }
}

/// A captured frame could not be decoded down to its transport payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends before the header of `layer` does.
    #[error("{layer} header truncated")]
    Truncated {
        /// Where it ended.
        layer: Layer,
    },
    /// A header field is impossible (e.g. an IPv4 header length below 20 bytes).
    #[error("malformed {layer} header: {reason}")]
    Malformed {
        /// Which header.
        layer: Layer,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A well-formed header announces something this crate does not decode: a link type, an
    /// EtherType, an address family or an IP version.
    #[error("unsupported {layer} type {value:#x}")]
    Unsupported {
        /// Which header.
        layer: Layer,
        /// The type value found.
        value: u32,
    },
}

/// A packet could not be built from the arguments given (a caller error, not input data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Source and destination are not both IPv4 or both IPv6.
    #[error("source and destination address families differ")]
    AddressFamilyMismatch,
    /// The payload does not fit in one IP packet.
    #[error("payload of {0} bytes does not fit in one IP packet")]
    PayloadTooLarge(usize),
    /// The bytes to wrap in an Ethernet frame do not start with an IPv4 or IPv6 header.
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
}
