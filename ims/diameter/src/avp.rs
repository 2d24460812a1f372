//! Attribute-Value Pairs (RFC 6733 §4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           AVP Code                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V M P r r r r r|                  AVP Length                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Vendor-ID (opt)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Data ...
//! +-+-+-+-+-+-+-+-+
//! ```
//!
//! An [`Avp`] keeps its data as raw bytes: unknown AVPs stay opaque and survive a decode and
//! re-encode unchanged; typed views are accessors that return `Result`. Grouped AVPs are
//! parsed on demand by [`Avp::grouped_avps`] / [`Avp::iter_grouped`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dictionary::{self, DataType, MBit};
use crate::error::{AvpHeader, DecodeError, ValueError};

/// V bit: a Vendor-Id field follows the length (RFC 6733 §4.1).
pub const FLAG_VENDOR: u8 = 0x80;
/// M bit: the receiver must understand the AVP or reject the message.
pub const FLAG_MANDATORY: u8 = 0x40;
/// P bit: reserved for end-to-end security (RFC 6733 §4.1 keeps it for compatibility).
pub const FLAG_PROTECTED: u8 = 0x20;
/// The five reserved bits; RFC 6733 §4.1 says a set one "SHOULD be considered an error".
pub const FLAG_RESERVED: u8 = 0x1f;

/// AVP header size without the Vendor-Id field.
pub const HEADER_LEN: usize = 8;
/// AVP header size with the Vendor-Id field.
pub const VENDOR_HEADER_LEN: usize = 12;

/// Seconds between the NTP epoch (1900-01-01) and the Unix epoch, for Time AVPs.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An AVP's identity: its code within a vendor's space (`None` is the IETF space, which
/// Vendor-Id 0 also denotes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AvpKey {
    /// AVP Code.
    pub code: u32,
    /// Vendor-Id, `None` for IETF AVPs.
    pub vendor: Option<u32>,
}

impl AvpKey {
    /// An IETF (no Vendor-Id) AVP.
    pub const fn base(code: u32) -> AvpKey {
        AvpKey { code, vendor: None }
    }

    /// A vendor-specific AVP.
    pub const fn vendor(code: u32, vendor: u32) -> AvpKey {
        AvpKey {
            code,
            vendor: Some(vendor),
        }
    }
}

/// One AVP: header fields and raw data (without padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avp {
    /// AVP Code.
    pub code: u32,
    /// Vendor-Id; `Some` sets the V bit and adds the 4-byte field.
    pub vendor: Option<u32>,
    /// M bit.
    pub mandatory: bool,
    /// P bit.
    pub protected: bool,
    /// The data, unpadded.
    pub data: Vec<u8>,
}

impl Avp {
    /// An AVP with raw data; the M bit follows the dictionary (set when the definition says
    /// it must be, clear otherwise, including for unknown AVPs).
    pub fn new(key: AvpKey, data: Vec<u8>) -> Avp {
        let mandatory = matches!(
            dictionary::Dictionary::standard()
                .lookup(key)
                .map(|d| d.m_bit),
            Some(MBit::Must)
        );
        Avp {
            code: key.code,
            vendor: key.vendor,
            mandatory,
            protected: false,
            data,
        }
    }

    /// Unsigned32 (also Enumerated values, which are Integer32 on the wire but never
    /// negative in practice; see [`Avp::integer32`]).
    pub fn unsigned32(key: AvpKey, value: u32) -> Avp {
        Avp::new(key, value.to_be_bytes().to_vec())
    }

    /// Unsigned64.
    pub fn unsigned64(key: AvpKey, value: u64) -> Avp {
        Avp::new(key, value.to_be_bytes().to_vec())
    }

    /// Integer32 and Enumerated.
    pub fn integer32(key: AvpKey, value: i32) -> Avp {
        Avp::new(key, value.to_be_bytes().to_vec())
    }

    /// Integer64.
    pub fn integer64(key: AvpKey, value: i64) -> Avp {
        Avp::new(key, value.to_be_bytes().to_vec())
    }

    /// Float32 (IEEE 754 big-endian).
    pub fn float32(key: AvpKey, value: f32) -> Avp {
        Avp::new(key, value.to_bits().to_be_bytes().to_vec())
    }

    /// Float64.
    pub fn float64(key: AvpKey, value: f64) -> Avp {
        Avp::new(key, value.to_bits().to_be_bytes().to_vec())
    }

    /// UTF8String (also IPFilterRule and DiameterURI, which are UTF-8 text).
    pub fn utf8(key: AvpKey, value: &str) -> Avp {
        Avp::new(key, value.as_bytes().to_vec())
    }

    /// OctetString.
    pub fn octets(key: AvpKey, value: impl Into<Vec<u8>>) -> Avp {
        Avp::new(key, value.into())
    }

    /// DiameterIdentity (an FQDN or realm, ASCII text; RFC 6733 §4.3.1).
    pub fn identity(key: AvpKey, value: &str) -> Avp {
        Avp::utf8(key, value)
    }

    /// Address (RFC 6733 §4.3.1): a 2-byte IANA address family (1 IPv4, 2 IPv6) then the
    /// address bytes.
    pub fn address(key: AvpKey, addr: IpAddr) -> Avp {
        let mut data = Vec::with_capacity(18);
        match addr {
            IpAddr::V4(v4) => {
                data.extend_from_slice(&1u16.to_be_bytes());
                data.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                data.extend_from_slice(&2u16.to_be_bytes());
                data.extend_from_slice(&v6.octets());
            }
        }
        Avp::new(key, data)
    }

    /// Time (RFC 6733 §4.3.1): seconds since 1900-01-01 00:00 UTC, the NTP format, modulo
    /// 2^32. Use [`ntp_seconds_from_unix`] to convert from Unix time.
    pub fn time(key: AvpKey, ntp_seconds: u32) -> Avp {
        Avp::new(key, ntp_seconds.to_be_bytes().to_vec())
    }

    /// Grouped: the concatenated encodings of `members` (RFC 6733 §4.4).
    pub fn grouped(key: AvpKey, members: &[Avp]) -> Avp {
        let mut data = Vec::with_capacity(members.iter().map(Avp::padded_len).sum());
        for member in members {
            member.encode(&mut data);
        }
        Avp::new(key, data)
    }

    /// Sets the vendor (and with it the V bit).
    #[must_use]
    pub fn with_vendor(mut self, vendor: Option<u32>) -> Avp {
        self.vendor = vendor;
        self
    }

    /// Sets or clears the M bit.
    #[must_use]
    pub fn with_mandatory(mut self, mandatory: bool) -> Avp {
        self.mandatory = mandatory;
        self
    }

    /// Sets or clears the P bit.
    #[must_use]
    pub fn with_protected(mut self, protected: bool) -> Avp {
        self.protected = protected;
        self
    }

    /// The (code, vendor) key; Vendor-Id 0 is the IETF space and maps to `None`.
    pub fn key(&self) -> AvpKey {
        AvpKey {
            code: self.code,
            vendor: self.vendor.filter(|v| *v != 0),
        }
    }

    /// The flags octet.
    pub fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.vendor.is_some() {
            flags |= FLAG_VENDOR;
        }
        if self.mandatory {
            flags |= FLAG_MANDATORY;
        }
        if self.protected {
            flags |= FLAG_PROTECTED;
        }
        flags
    }

    /// Header size: 12 with a Vendor-Id, else 8.
    pub fn header_len(&self) -> usize {
        if self.vendor.is_some() {
            VENDOR_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The AVP Length field: header plus data, padding excluded (RFC 6733 §4.1).
    pub fn len(&self) -> usize {
        self.header_len() + self.data.len()
    }

    /// Whether the data is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes on the wire, padding to a multiple of 4 included.
    pub fn padded_len(&self) -> usize {
        pad4(self.len())
    }

    /// Appends the encoding, padded with zeros to a multiple of 4. A length beyond 24 bits is
    /// written truncated; [`crate::Message::encode`] refuses such messages before they reach
    /// the wire (its limit is far below 2^24).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = self.len();
        out.extend_from_slice(&self.code.to_be_bytes());
        let len_field = (len as u32) & 0x00ff_ffff;
        out.extend_from_slice(&(len_field | (u32::from(self.flags()) << 24)).to_be_bytes());
        if let Some(vendor) = self.vendor {
            out.extend_from_slice(&vendor.to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out.resize(out.len() + (pad4(len) - len), 0);
    }

    fn wrong_length(&self, expected: DataType) -> ValueError {
        ValueError::WrongLength {
            code: self.code,
            expected,
            len_rule: expected.length_rule(),
            actual: self.data.len(),
        }
    }

    fn fixed<const N: usize>(&self, ty: DataType) -> Result<[u8; N], ValueError> {
        <[u8; N]>::try_from(self.data.as_slice()).map_err(|_| self.wrong_length(ty))
    }

    /// Unsigned32 data.
    pub fn as_u32(&self) -> Result<u32, ValueError> {
        self.fixed::<4>(DataType::Unsigned32)
            .map(u32::from_be_bytes)
    }

    /// Unsigned64 data.
    pub fn as_u64(&self) -> Result<u64, ValueError> {
        self.fixed::<8>(DataType::Unsigned64)
            .map(u64::from_be_bytes)
    }

    /// Integer32 or Enumerated data.
    pub fn as_i32(&self) -> Result<i32, ValueError> {
        self.fixed::<4>(DataType::Integer32).map(i32::from_be_bytes)
    }

    /// Integer64 data.
    pub fn as_i64(&self) -> Result<i64, ValueError> {
        self.fixed::<8>(DataType::Integer64).map(i64::from_be_bytes)
    }

    /// Float32 data.
    pub fn as_f32(&self) -> Result<f32, ValueError> {
        self.fixed::<4>(DataType::Float32)
            .map(|b| f32::from_bits(u32::from_be_bytes(b)))
    }

    /// Float64 data.
    pub fn as_f64(&self) -> Result<f64, ValueError> {
        self.fixed::<8>(DataType::Float64)
            .map(|b| f64::from_bits(u64::from_be_bytes(b)))
    }

    /// OctetString data.
    pub fn as_octets(&self) -> &[u8] {
        &self.data
    }

    /// UTF8String (or IPFilterRule, DiameterURI) data.
    pub fn as_utf8(&self) -> Result<&str, ValueError> {
        std::str::from_utf8(&self.data).map_err(|_| ValueError::InvalidUtf8 { code: self.code })
    }

    /// DiameterIdentity data.
    pub fn as_identity(&self) -> Result<&str, ValueError> {
        self.as_utf8()
    }

    /// Address data, IPv4 or IPv6 only.
    pub fn as_address(&self) -> Result<IpAddr, ValueError> {
        let family = match self.data.get(..2) {
            Some(f) => u16::from_be_bytes([f[0], f[1]]),
            None => return Err(self.wrong_length(DataType::Address)),
        };
        let rest = &self.data[2..];
        match family {
            1 => <[u8; 4]>::try_from(rest)
                .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                .map_err(|_| self.wrong_length(DataType::Address)),
            2 => <[u8; 16]>::try_from(rest)
                .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                .map_err(|_| self.wrong_length(DataType::Address)),
            other => Err(ValueError::UnsupportedAddressFamily {
                code: self.code,
                family: other,
            }),
        }
    }

    /// Time data: NTP seconds (see [`unix_seconds_from_ntp`]).
    pub fn as_time(&self) -> Result<u32, ValueError> {
        self.fixed::<4>(DataType::Time).map(u32::from_be_bytes)
    }

    /// Grouped data parsed into its members.
    pub fn grouped_avps(&self) -> Result<Vec<Avp>, ValueError> {
        decode_avps(&self.data).map_err(|source| ValueError::Grouped {
            code: self.code,
            source,
        })
    }

    /// Grouped data as a lazy iterator; it yields one error and stops on malformed data.
    pub fn iter_grouped(&self) -> AvpIter<'_> {
        AvpIter::new(&self.data)
    }

    /// The first member with `key` of a grouped AVP.
    pub fn find_in_group(&self, key: AvpKey) -> Result<Option<Avp>, ValueError> {
        for member in self.iter_grouped() {
            let member = member.map_err(|source| ValueError::Grouped {
                code: self.code,
                source,
            })?;
            if member.key() == key {
                return Ok(Some(member));
            }
        }
        Ok(None)
    }
}

/// Rounds up to a multiple of 4.
pub(crate) fn pad4(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// Unix seconds to the Time AVP's NTP seconds (wrapping per RFC 6733 §4.3.1).
pub fn ntp_seconds_from_unix(unix_seconds: u64) -> u32 {
    (unix_seconds.wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff) as u32
}

/// Time AVP seconds to Unix seconds, reading values below 2^31 as the era after 2036
/// (RFC 6733 §4.3.1, following RFC 5905 era handling).
pub fn unix_seconds_from_ntp(ntp_seconds: u32) -> u64 {
    let era_base = if ntp_seconds & 0x8000_0000 == 0 {
        1u64 << 32
    } else {
        0
    };
    (u64::from(ntp_seconds) + era_base).saturating_sub(NTP_UNIX_OFFSET)
}

/// Decodes one AVP at the start of `buf`, returning it and the bytes consumed (padding
/// included; trailing padding may be absent at the very end of `buf`).
pub fn decode_avp(buf: &[u8]) -> Result<(Avp, usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::InvalidAvpLength(partial_header(buf)));
    }
    let code = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]);
    let has_vendor = flags & FLAG_VENDOR != 0;
    let vendor = if has_vendor {
        buf.get(8..12)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    } else {
        None
    };
    let header = AvpHeader {
        code,
        flags,
        vendor,
        length,
    };
    let header_len = if has_vendor {
        VENDOR_HEADER_LEN
    } else {
        HEADER_LEN
    };
    let len = length as usize;
    if len < header_len || len > buf.len() {
        return Err(DecodeError::InvalidAvpLength(header));
    }
    if flags & FLAG_RESERVED != 0 {
        return Err(DecodeError::InvalidAvpBits(header));
    }
    let avp = Avp {
        code,
        vendor: if has_vendor {
            Some(vendor.unwrap_or(0))
        } else {
            None
        },
        mandatory: flags & FLAG_MANDATORY != 0,
        protected: flags & FLAG_PROTECTED != 0,
        data: buf[header_len..len].to_vec(),
    };
    Ok((avp, pad4(len).min(buf.len())))
}

/// The readable part of a header shorter than 8 bytes, zero-padded.
fn partial_header(buf: &[u8]) -> AvpHeader {
    let mut bytes = [0u8; HEADER_LEN];
    let n = buf.len().min(HEADER_LEN);
    bytes[..n].copy_from_slice(&buf[..n]);
    AvpHeader {
        code: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        flags: bytes[4],
        vendor: None,
        length: u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]),
    }
}

/// Decodes a whole list of AVPs (a message body or grouped data).
pub fn decode_avps(buf: &[u8]) -> Result<Vec<Avp>, DecodeError> {
    AvpIter::new(buf).collect()
}

/// A lazy walk over encoded AVPs. After an error it yields nothing more.
#[derive(Clone, Debug)]
pub struct AvpIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> AvpIter<'a> {
    /// Iterates the AVPs encoded in `buf`.
    pub fn new(buf: &'a [u8]) -> AvpIter<'a> {
        AvpIter {
            rest: buf,
            failed: false,
        }
    }
}

impl Iterator for AvpIter<'_> {
    type Item = Result<Avp, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match decode_avp(self.rest) {
            Ok((avp, used)) => {
                self.rest = &self.rest[used..];
                Some(Ok(avp))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_of_five_bytes_pads_to_sixteen() {
        // Origin-Host (264), M set, length 8 + 5 = 13, three zero pad bytes.
        let avp = Avp::utf8(AvpKey::base(264), "abcde");
        let mut out = Vec::new();
        avp.encode(&mut out);
        assert_eq!(
            out,
            [
                0, 0, 1, 8, // code 264
                0x40, 0, 0, 13, // M, length 13 (padding excluded)
                b'a', b'b', b'c', b'd', b'e', 0, 0, 0,
            ]
        );
        assert_eq!(avp.len(), 13);
        assert_eq!(avp.padded_len(), 16);
        let (back, used) = decode_avp(&out).unwrap();
        assert_eq!(used, 16);
        assert_eq!(back, avp);
    }

    #[test]
    fn vendor_avp_has_twelve_byte_header() {
        // Flow-Number (509, 3GPP 10415), V and M set, Unsigned32 7: length 16.
        let avp = Avp::unsigned32(AvpKey::vendor(509, 10415), 7);
        let mut out = Vec::new();
        avp.encode(&mut out);
        assert_eq!(
            out,
            [
                0, 0, 0x01, 0xfd, // 509
                0xc0, 0, 0, 16, // V|M, length 16
                0, 0, 0x28, 0xaf, // 10415
                0, 0, 0, 7,
            ]
        );
        assert_eq!(decode_avp(&out).unwrap().0.as_u32(), Ok(7));
    }

    #[test]
    fn rx_request_type_is_not_mandatory_by_default() {
        // TS 29.214 §5.3 table 5.3.1: Rx-Request-Type must not have M set.
        assert!(!Avp::integer32(AvpKey::vendor(533, 10415), 0).mandatory);
        assert!(Avp::integer32(AvpKey::vendor(511, 10415), 2).mandatory);
    }

    #[test]
    fn address_layouts() {
        let v4 = Avp::address(AvpKey::base(257), "192.0.2.1".parse().unwrap());
        assert_eq!(v4.data, [0, 1, 192, 0, 2, 1]);
        assert_eq!(v4.as_address(), Ok("192.0.2.1".parse().unwrap()));
        let v6 = Avp::address(AvpKey::base(257), "2001:db8::1".parse().unwrap());
        assert_eq!(v6.data.len(), 18);
        assert_eq!(&v6.data[..2], &[0, 2]);
        assert_eq!(v6.as_address(), Ok("2001:db8::1".parse().unwrap()));
        let odd = Avp::octets(AvpKey::base(257), vec![0, 8, 1, 2]);
        assert!(matches!(
            odd.as_address(),
            Err(ValueError::UnsupportedAddressFamily { family: 8, .. })
        ));
        let short = Avp::octets(AvpKey::base(257), vec![0, 1, 1, 2]);
        assert!(matches!(
            short.as_address(),
            Err(ValueError::WrongLength { .. })
        ));
    }

    #[test]
    fn typed_accessors_check_lengths() {
        let five = Avp::octets(AvpKey::base(1), vec![1, 2, 3, 4, 5]);
        assert!(five.as_u32().is_err());
        assert!(five.as_u64().is_err());
        assert!(five.as_i32().is_err());
        assert!(five.as_time().is_err());
        assert_eq!(Avp::integer32(AvpKey::base(1), -5).as_i32(), Ok(-5));
        assert_eq!(Avp::integer64(AvpKey::base(1), -5).as_i64(), Ok(-5));
        assert_eq!(
            Avp::unsigned64(AvpKey::base(1), 1 << 40).as_u64(),
            Ok(1 << 40)
        );
        assert_eq!(Avp::float32(AvpKey::base(1), 1.5).as_f32(), Ok(1.5));
        assert_eq!(Avp::float64(AvpKey::base(1), -2.25).as_f64(), Ok(-2.25));
        let bad = Avp::octets(AvpKey::base(1), vec![0xff, 0xfe]);
        assert!(matches!(
            bad.as_utf8(),
            Err(ValueError::InvalidUtf8 { code: 1 })
        ));
    }

    #[test]
    fn time_round_trips_through_ntp() {
        // 2024-01-01T00:00:00Z = 1704067200 Unix = 3913056000 NTP.
        let ntp = ntp_seconds_from_unix(1_704_067_200);
        assert_eq!(ntp, 3_913_056_000);
        assert_eq!(unix_seconds_from_ntp(ntp), 1_704_067_200);
        // After the 2036 wrap the NTP value is small and maps to the next era.
        let after_wrap = ntp_seconds_from_unix(2_085_978_496 + 10);
        assert_eq!(after_wrap, 10);
        assert_eq!(unix_seconds_from_ntp(after_wrap), 2_085_978_506);
        let avp = Avp::time(AvpKey::base(55), ntp);
        assert_eq!(avp.as_time(), Ok(ntp));
    }

    #[test]
    fn grouped_members_decode_on_demand() {
        let inner = [
            Avp::unsigned32(AvpKey::base(266), 10415),
            Avp::unsigned32(AvpKey::base(258), 16_777_236),
        ];
        let group = Avp::grouped(AvpKey::base(260), &inner);
        assert_eq!(group.data.len(), 24);
        assert_eq!(group.grouped_avps().unwrap(), inner);
        assert_eq!(
            group
                .find_in_group(AvpKey::base(258))
                .unwrap()
                .unwrap()
                .as_u32(),
            Ok(16_777_236)
        );
        assert_eq!(group.find_in_group(AvpKey::base(259)), Ok(None));
        let broken = Avp::octets(AvpKey::base(260), vec![0, 0, 1, 10, 0x40, 0, 0, 99]);
        assert!(matches!(
            broken.grouped_avps(),
            Err(ValueError::Grouped { code: 260, .. })
        ));
    }

    #[test]
    fn bad_lengths_are_errors() {
        // Length 7 < 8.
        let short = [0, 0, 1, 8, 0x40, 0, 0, 7];
        assert!(
            matches!(decode_avp(&short), Err(DecodeError::InvalidAvpLength(h)) if h.length == 7)
        );
        // V set but length 10 < 12.
        let vshort = [0, 0, 1, 8, 0xc0, 0, 0, 10, 0, 0, 0x28, 0xaf];
        assert!(
            matches!(decode_avp(&vshort), Err(DecodeError::InvalidAvpLength(h)) if h.vendor == Some(10415))
        );
        // Length past the end.
        let long = [0, 0, 1, 8, 0x40, 0, 0, 20, 1, 2, 3, 4];
        assert!(
            matches!(decode_avp(&long), Err(DecodeError::InvalidAvpLength(h)) if h.length == 20)
        );
        // Fewer than 8 bytes: header padded with zeros.
        let stub = [0, 0, 1];
        assert!(matches!(
            decode_avp(&stub),
            Err(DecodeError::InvalidAvpLength(AvpHeader {
                code: 256,
                length: 0,
                ..
            }))
        ));
        // Reserved flag bit.
        let reserved = [0, 0, 1, 8, 0x41, 0, 0, 8];
        assert!(matches!(
            decode_avp(&reserved),
            Err(DecodeError::InvalidAvpBits(_))
        ));
    }

    #[test]
    fn unknown_avps_stay_opaque() {
        let avp = Avp::octets(AvpKey::vendor(99_999, 4_242), vec![9, 8, 7]).with_mandatory(true);
        let mut out = Vec::new();
        avp.encode(&mut out);
        let (back, _) = decode_avp(&out).unwrap();
        assert_eq!(back, avp);
        assert_eq!(back.key(), AvpKey::vendor(99_999, 4_242));
    }

    #[test]
    fn vendor_zero_is_the_ietf_space() {
        let avp = Avp::unsigned32(AvpKey::base(268), 2001).with_vendor(Some(0));
        assert_eq!(avp.key(), AvpKey::base(268));
        assert_eq!(avp.header_len(), 12);
    }
}
