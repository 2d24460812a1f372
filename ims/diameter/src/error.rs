//! Error types of the codec. Decode errors carry what RFC 6733 §7 needs to answer them: the
//! Result-Code and, for AVP-level faults, the offending AVP header for a Failed-AVP.

use crate::avp::{Avp, AvpKey, FLAG_MANDATORY, FLAG_PROTECTED, FLAG_VENDOR};
use crate::dictionary::{DataType, Dictionary};
use crate::result_code;

/// The header of an AVP that could not be decoded, as far as it was readable. Missing header
/// bytes read as zero (RFC 6733 §7.1.5: "padding the incomplete AVP header with zero").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvpHeader {
    /// AVP Code.
    pub code: u32,
    /// The raw flags octet (V, M, P and the reserved bits).
    pub flags: u8,
    /// Vendor-Id, when the V bit was set and the field was readable.
    pub vendor: Option<u32>,
    /// The AVP Length field as received (header plus data, no padding).
    pub length: u32,
}

impl AvpHeader {
    /// The AVP's (code, vendor) key.
    pub fn key(&self) -> AvpKey {
        AvpKey {
            code: self.code,
            vendor: self.vendor.filter(|v| *v != 0),
        }
    }

    /// An AVP for Failed-AVP: this header and a zero-filled payload of the minimum length for
    /// the AVP's type (RFC 6733 §7.1.5, DIAMETER_INVALID_AVP_LENGTH). Grouped AVPs and AVPs
    /// unknown to `dictionary` get an empty payload.
    pub fn failed_avp(&self, dictionary: &Dictionary) -> Avp {
        let min_len = dictionary
            .lookup(self.key())
            .map_or(0, |def| def.data_type.minimum_len());
        Avp {
            code: self.code,
            vendor: if self.flags & FLAG_VENDOR != 0 {
                Some(self.vendor.unwrap_or(0))
            } else {
                None
            },
            mandatory: self.flags & FLAG_MANDATORY != 0,
            protected: self.flags & FLAG_PROTECTED != 0,
            data: vec![0; min_len],
        }
    }
}

/// Why bytes are not a valid Diameter message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the Message Length field announces (or than a header).
    #[error("message truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header (or the fixed header size) calls for.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// More bytes than the Message Length field announces.
    #[error("message is {available} bytes but its header says {length}")]
    TrailingBytes {
        /// The Message Length field.
        length: usize,
        /// Bytes given.
        available: usize,
    },
    /// Version other than 1 (RFC 6733 §3).
    #[error("unsupported Diameter version {0}")]
    UnsupportedVersion(u8),
    /// Message Length below the 20-byte header, above [`crate::MAX_MESSAGE_LEN`], or not a
    /// multiple of 4 (RFC 6733 §3).
    #[error("invalid message length {0}")]
    InvalidMessageLength(u32),
    /// Header flags in an invalid combination: E set on a request (RFC 6733 §3).
    #[error("invalid command flags {flags:#04x}")]
    InvalidHeaderBits {
        /// The raw flags octet.
        flags: u8,
    },
    /// An AVP length below its header size or running past the end of the enclosing message
    /// or grouped AVP (RFC 6733 §4.1, §7.1.5).
    #[error("AVP {} has an invalid length {}", .0.code, .0.length)]
    InvalidAvpLength(AvpHeader),
    /// An AVP with a reserved flag bit set (RFC 6733 §4.1: "an unrecognized bit SHOULD be
    /// considered an error").
    #[error("AVP {} has reserved flag bits set ({:#04x})", .0.code, .0.flags)]
    InvalidAvpBits(AvpHeader),
}

impl DecodeError {
    /// The Result-Code an answer to a request with this fault carries (RFC 6733 §7.1).
    pub fn result_code(&self) -> u32 {
        match self {
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::InvalidMessageLength(_) => result_code::INVALID_MESSAGE_LENGTH,
            DecodeError::UnsupportedVersion(_) => result_code::UNSUPPORTED_VERSION,
            DecodeError::InvalidHeaderBits { .. } => result_code::INVALID_HDR_BITS,
            DecodeError::InvalidAvpLength(_) => result_code::INVALID_AVP_LENGTH,
            DecodeError::InvalidAvpBits(_) => result_code::INVALID_AVP_BITS,
        }
    }

    /// Whether the answer is a protocol error (3xxx), sent with the E bit (RFC 6733 §7.1.3).
    pub fn is_protocol_error(&self) -> bool {
        result_code::is_protocol_error(self.result_code())
    }

    /// The Failed-AVP content for AVP-level faults.
    pub fn failed_avp(&self, dictionary: &Dictionary) -> Option<Avp> {
        match self {
            DecodeError::InvalidAvpLength(header) => Some(header.failed_avp(dictionary)),
            DecodeError::InvalidAvpBits(header) => {
                // Report the header as received, with a minimal payload.
                Some(header.failed_avp(dictionary))
            }
            _ => None,
        }
    }
}

/// A message that cannot be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would exceed [`crate::MAX_MESSAGE_LEN`] (and with it, possibly, the
    /// 24-bit length fields).
    #[error("encoded message of {0} bytes exceeds the maximum")]
    TooLong(usize),
}

/// A typed accessor applied to AVP data of the wrong shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Data length does not fit the type.
    #[error("AVP {code}: {expected:?} data expects {len_rule}, got {actual} bytes")]
    WrongLength {
        /// AVP Code.
        code: u32,
        /// The type asked for.
        expected: DataType,
        /// The length rule of that type.
        len_rule: &'static str,
        /// Bytes present.
        actual: usize,
    },
    /// UTF8String (or DiameterIdentity) data that is not UTF-8.
    #[error("AVP {code}: not valid UTF-8")]
    InvalidUtf8 {
        /// AVP Code.
        code: u32,
    },
    /// Address family other than IPv4 (1) or IPv6 (2) (RFC 6733 §4.3.1).
    #[error("AVP {code}: address family {family} is not IPv4 or IPv6")]
    UnsupportedAddressFamily {
        /// AVP Code.
        code: u32,
        /// The family number (IANA address family numbers).
        family: u16,
    },
    /// Grouped data that does not decode as a list of AVPs.
    #[error("AVP {code}: grouped data: {source}")]
    Grouped {
        /// AVP Code of the grouped AVP.
        code: u32,
        /// What failed inside.
        source: DecodeError,
    },
}
