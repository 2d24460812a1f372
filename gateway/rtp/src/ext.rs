//! RTP header extensions (RFC 3550 §5.3.1) and the RFC 8285 element forms inside them.
//!
//! RFC 8285 packs several extension elements into the one header extension RFC 3550 allows. The
//! 16-bit "defined by profile" field says which packing is used:
//!
//! - `0xBEDE`: one-byte headers (§4.2). Each element is a byte `ID(4) | L(4)` followed by L+1
//!   data bytes; IDs 1..=14 are elements, ID 0 is a padding byte, ID 15 ends parsing.
//! - `0x100` followed by 4 "appbits": two-byte headers (§4.3). Each element is an ID byte and a
//!   length byte followed by that many data bytes (0..=255); an ID byte of 0 is padding.
//!
//! The mapping from ID to meaning comes from SDP `a=extmap` (for example the MID extension,
//! [`MID_URI`], RFC 8843 §14), so lookups here are by ID.

use crate::error::{need, ParseError};

/// `a=extmap` URI of the MID header extension (RFC 8843 §14): the element's data is the MID
/// as ASCII, identifying the m= line a BUNDLEd packet belongs to.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// "Defined by profile" value of the one-byte form (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xbede;

/// "Defined by profile" value of the two-byte form with appbits 0 (RFC 8285 §4.3); the low four
/// bits may carry appbits.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// An RFC 8285 local identifier: 1..=14 in the one-byte form, 1..=255 in the two-byte form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtId(pub u8);

/// Which element packing a header extension uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtForm {
    /// RFC 8285 §4.2, profile `0xBEDE`.
    OneByte,
    /// RFC 8285 §4.3, profile `0x100X`, with the four application bits.
    TwoByte {
        /// The low four bits of the profile field, application-defined.
        appbits: u8,
    },
    /// Some other RFC 3550 §5.3.1 extension; its content is opaque here.
    Other(u16),
}

/// The header extension of an RTP packet: profile field and data words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    profile: u16,
    data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    pub(crate) fn new(profile: u16, data: &'a [u8]) -> HeaderExtension<'a> {
        HeaderExtension { profile, data }
    }

    /// The 16-bit "defined by profile" field.
    pub fn profile(&self) -> u16 {
        self.profile
    }

    /// The element packing, from the profile field.
    pub fn form(&self) -> ExtForm {
        match self.profile {
            ONE_BYTE_PROFILE => ExtForm::OneByte,
            p if p & 0xfff0 == TWO_BYTE_PROFILE => ExtForm::TwoByte {
                appbits: (p & 0x0f) as u8,
            },
            p => ExtForm::Other(p),
        }
    }

    /// The extension data after the 4-byte extension header (a multiple of 4 bytes).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The RFC 8285 elements in order. Yields nothing for [`ExtForm::Other`]. An element whose
    /// length runs past the extension yields one `Err` and ends the iteration.
    pub fn elements(&self) -> ExtElements<'a> {
        let form = match self.form() {
            ExtForm::OneByte => Some(false),
            ExtForm::TwoByte { .. } => Some(true),
            ExtForm::Other(_) => None,
        };
        ExtElements {
            data: self.data,
            pos: 0,
            two_byte: form.unwrap_or(false),
            done: form.is_none(),
        }
    }

    /// The data of the first element with local identifier `id`, if it is present before any
    /// malformed element. RFC 8285 §5 forbids repeating an ID in one packet.
    pub fn find(&self, id: ExtId) -> Option<&'a [u8]> {
        self.elements()
            .map_while(Result::ok)
            .find(|e| e.id == id)
            .map(|e| e.data)
    }
}

/// One RFC 8285 extension element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtElement<'a> {
    /// The local identifier, mapped to a URI by SDP `a=extmap`.
    pub id: ExtId,
    /// The element data (1..=16 bytes in the one-byte form, 0..=255 in the two-byte form).
    pub data: &'a [u8],
}

/// Iterator over the elements of a [`HeaderExtension`]; see [`HeaderExtension::elements`].
#[derive(Clone, Debug)]
pub struct ExtElements<'a> {
    data: &'a [u8],
    pos: usize,
    two_byte: bool,
    done: bool,
}

impl<'a> Iterator for ExtElements<'a> {
    type Item = Result<ExtElement<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let rest = self.data.get(self.pos..).unwrap_or_default();
            let Some(&first) = rest.first() else {
                self.done = true;
                break;
            };
            let (id, start, len) = if self.two_byte {
                // RFC 8285 §4.3: a zero ID byte is padding, with no length byte after it.
                if first == 0 {
                    self.pos += 1;
                    continue;
                }
                if let Err(e) = need("two-byte extension element", rest, 2) {
                    self.done = true;
                    return Some(Err(e));
                }
                (first, 2, usize::from(rest[1]))
            } else {
                let id = first >> 4;
                // RFC 8285 §4.2: ID 0 is a padding byte (its length nibble is ignored); ID 15 is
                // reserved, and a parser meeting it stops and keeps only the elements before it.
                if id == 0 {
                    self.pos += 1;
                    continue;
                }
                if id == 15 {
                    self.done = true;
                    break;
                }
                (id, 1, usize::from(first & 0x0f) + 1)
            };
            if let Err(e) = need("extension element", rest, start + len) {
                self.done = true;
                return Some(Err(e));
            }
            self.pos += start + len;
            return Some(Ok(ExtElement {
                id: ExtId(id),
                data: &rest[start..start + len],
            }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpPacket;

    /// An RTP header (V=2, X=1, PT 111, seq 1, ts 2, SSRC 3) followed by `ext`, then payload
    /// "pl".
    fn packet(ext: &[u8]) -> Vec<u8> {
        let mut v = vec![0x90, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        v.extend_from_slice(ext);
        v.extend_from_slice(b"pl");
        v
    }

    /// RFC 8285 §4.2's figure: length 3 words; an element with L=0 (1 byte), an element with L=1
    /// (2 bytes), two padding bytes, an element with L=3 (4 bytes). IDs chosen here: 1, 2, 3.
    const RFC8285_ONE_BYTE: [u8; 16] = [
        0xbe, 0xde, 0x00, 0x03, //
        0x10, 0xa1, 0x21, 0xb1, //
        0xb2, 0x00, 0x00, 0x33, //
        0xc1, 0xc2, 0xc3, 0xc4, //
    ];

    /// RFC 8285 §4.3's figure: profile 0x1000, length 3 words; an element with L=0, an element
    /// with L=1, one padding byte, an element with L=4. IDs chosen here: 1, 2, 200.
    const RFC8285_TWO_BYTE: [u8; 16] = [
        0x10, 0x00, 0x00, 0x03, //
        0x01, 0x00, 0x02, 0x01, //
        0xd1, 0x00, 200, 0x04, //
        0xe1, 0xe2, 0xe3, 0xe4, //
    ];

    #[test]
    fn rfc8285_one_byte_layout() {
        let buf = packet(&RFC8285_ONE_BYTE);
        let p = RtpPacket::parse(&buf).unwrap();
        let ext = p.extension().unwrap();
        assert_eq!(ext.form(), ExtForm::OneByte);
        let got: Vec<_> = ext.elements().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                ExtElement {
                    id: ExtId(1),
                    data: &[0xa1]
                },
                ExtElement {
                    id: ExtId(2),
                    data: &[0xb1, 0xb2]
                },
                ExtElement {
                    id: ExtId(3),
                    data: &[0xc1, 0xc2, 0xc3, 0xc4]
                },
            ]
        );
        assert_eq!(ext.find(ExtId(2)), Some(&[0xb1, 0xb2][..]));
        assert_eq!(ext.find(ExtId(4)), None);
        assert_eq!(p.payload(), b"pl");
    }

    #[test]
    fn rfc8285_two_byte_layout() {
        let buf = packet(&RFC8285_TWO_BYTE);
        let p = RtpPacket::parse(&buf).unwrap();
        let ext = p.extension().unwrap();
        assert_eq!(ext.form(), ExtForm::TwoByte { appbits: 0 });
        let got: Vec<_> = ext.elements().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                ExtElement {
                    id: ExtId(1),
                    data: &[]
                },
                ExtElement {
                    id: ExtId(2),
                    data: &[0xd1]
                },
                ExtElement {
                    id: ExtId(200),
                    data: &[0xe1, 0xe2, 0xe3, 0xe4]
                },
            ]
        );
        assert_eq!(ext.find(ExtId(200)).map(<[u8]>::len), Some(4));
    }

    #[test]
    fn mid_as_chrome_sends_it() {
        // Chrome's audio: a=extmap:1 ssrc-audio-level, a=extmap:4 sdes:mid. Element 1 (L=0):
        // audio level 0x9f (V=1, level 31); element 4 (L=0): MID "0". Exactly one word.
        let buf = packet(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x9f, 0x40, b'0']);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        assert_eq!(ext.find(ExtId(4)), Some(&b"0"[..]));
        let buf = packet(&[0xbe, 0xde, 0x00, 0x01, 0x42, b'a', b'u', b'd']);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        assert_eq!(ext.find(ExtId(4)), Some(&b"aud"[..]));
    }

    #[test]
    fn id_15_stops_one_byte_parsing() {
        let buf = packet(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x01, 0xf0, 0x20]);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        assert_eq!(ext.elements().count(), 1);
        assert_eq!(ext.find(ExtId(2)), None);
    }

    #[test]
    fn overlong_element_is_an_error() {
        // One-byte element 1 with L=7 (8 bytes) in a 4-byte extension.
        let buf = packet(&[0xbe, 0xde, 0x00, 0x01, 0x17, 0, 0, 0]);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        let mut it = ext.elements();
        assert!(matches!(it.next(), Some(Err(ParseError::Truncated { .. }))));
        assert_eq!(it.next(), None);
        // Two-byte element with its length byte missing.
        let buf = packet(&[0x10, 0x00, 0x00, 0x01, 0, 0, 0, 7]);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        assert!(matches!(ext.elements().next(), Some(Err(_))));
    }

    #[test]
    fn other_profiles_are_opaque() {
        let buf = packet(&[0xab, 0xac, 0x00, 0x01, 1, 2, 3, 4]);
        let ext = RtpPacket::parse(&buf).unwrap().extension().unwrap();
        assert_eq!(ext.form(), ExtForm::Other(0xabac));
        assert_eq!(ext.elements().count(), 0);
        assert_eq!(ext.data(), &[1, 2, 3, 4]);
    }

    #[test]
    fn strip_removes_rfc_layouts() {
        for ext in [&RFC8285_ONE_BYTE, &RFC8285_TWO_BYTE] {
            let mut buf = packet(ext);
            let len = crate::strip_extension(&mut buf).unwrap();
            assert_eq!(len, 14);
            let p = RtpPacket::parse(&buf[..len]).unwrap();
            assert!(p.extension().is_none());
            assert_eq!(p.payload(), b"pl");
            assert_eq!(p.timestamp(), 2);
        }
    }
}
