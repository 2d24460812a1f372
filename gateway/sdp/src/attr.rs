//! Typed views of the SDP attributes the interworking reads and writes. Parsing is strict
//! enough to refuse nonsense and lenient about case and spacing, as RFC 8866 §5.13 asks.

use std::fmt;

use sdp::description::common::Attribute;

use crate::error::SdpError;

/// The value of the first attribute named `key` (`Some("")` for a property attribute).
pub fn get<'a>(attrs: &'a [Attribute], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.key.eq_ignore_ascii_case(key))
        .map(|a| a.value.as_deref().unwrap_or(""))
}

/// The values of every attribute named `key`, in order.
pub fn all<'a>(attrs: &'a [Attribute], key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    attrs
        .iter()
        .filter(move |a| a.key.eq_ignore_ascii_case(key))
        .map(|a| a.value.as_deref().unwrap_or(""))
}

pub fn value(key: &str, value: impl Into<String>) -> Attribute {
    Attribute::new(key.to_owned(), Some(value.into()))
}

pub fn property(key: &str) -> Attribute {
    Attribute::new(key.to_owned(), None)
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 8866 §6.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtpmap {
    pub pt: u8,
    pub encoding: String,
    pub clock: u32,
    pub channels: Option<u8>,
}

impl Rtpmap {
    pub fn parse(v: &str) -> Result<Rtpmap, SdpError> {
        let bad = || SdpError::malformed(format!("bad a=rtpmap \"{v}\""));
        let (pt, rest) = v.trim().split_once(' ').ok_or_else(bad)?;
        let pt = parse_pt(pt).ok_or_else(bad)?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?;
        let clock = parts.next().and_then(|c| c.parse().ok()).filter(|&c| c > 0).ok_or_else(bad)?;
        let channels = match parts.next() {
            None => None,
            Some(c) => Some(c.parse().ok().filter(|&c| c > 0).ok_or_else(bad)?),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Rtpmap { pt, encoding: encoding.to_owned(), clock, channels })
    }
}

impl fmt::Display for Rtpmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.pt, self.encoding, self.clock)?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// A payload type number, 0..=127 (RFC 3550 §5.1: 7 bits).
pub fn parse_pt(s: &str) -> Option<u8> {
    s.trim().parse::<u8>().ok().filter(|&p| p <= 127)
}

/// The static payload types of RFC 3551 §6 an IMS peer may use without an rtpmap.
pub fn static_rtpmap(pt: u8) -> Option<Rtpmap> {
    let (encoding, clock) = match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    };
    Some(Rtpmap { pt, encoding: encoding.to_owned(), clock, channels: None })
}

/// Per payload type: its rtpmap (explicit, or the static one), fmtp and rtcp-fb values.
pub fn rtpmap_for(attrs: &[Attribute], pt: u8) -> Option<Rtpmap> {
    all(attrs, "rtpmap")
        .filter_map(|v| Rtpmap::parse(v).ok())
        .find(|r| r.pt == pt)
        .or_else(|| static_rtpmap(pt))
}

/// The `a=fmtp` parameters of `pt`, if any.
pub fn fmtp_for(attrs: &[Attribute], pt: u8) -> Option<&str> {
    all(attrs, "fmtp").find_map(|v| {
        let (p, params) = v.trim().split_once(' ')?;
        (parse_pt(p) == Some(pt)).then_some(params.trim())
    })
}

/// The `a=rtcp-fb` values of `pt` (without the payload type), wildcard `*` entries included.
pub fn rtcp_fb_for(attrs: &[Attribute], pt: u8) -> Vec<&str> {
    all(attrs, "rtcp-fb")
        .filter_map(|v| {
            let (p, fb) = v.trim().split_once(' ')?;
            (p == "*" || parse_pt(p) == Some(pt)).then_some(fb.trim())
        })
        .collect()
}

/// Media direction (RFC 3264 §5.1, §6.1), seen from the side that wrote it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction attribute of a media section (media level wins over session level;
    /// sendrecv when neither says, RFC 3264 §5.1).
    pub fn of(session: &[Attribute], media: &[Attribute]) -> Direction {
        Self::find(media).or_else(|| Self::find(session)).unwrap_or(Direction::SendRecv)
    }

    fn find(attrs: &[Attribute]) -> Option<Direction> {
        attrs.iter().rev().find_map(|a| match a.key.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The same media flow described from the other end.
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// `a=setup` (RFC 4145 §4, RFC 8842 §3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    pub fn parse(v: &str) -> Option<Setup> {
        match v.trim().to_ascii_lowercase().as_str() {
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "actpass" => Some(Setup::ActPass),
            "holdconn" => Some(Setup::HoldConn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// `a=fingerprint:<hash> <hex pairs>` (RFC 8122 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Lowercase hash function name, e.g. `sha-256`.
    pub algorithm: String,
    /// Uppercase colon-separated hex, e.g. `AB:CD:...`.
    pub value: String,
}

impl Fingerprint {
    pub fn parse(v: &str) -> Result<Fingerprint, SdpError> {
        let bad = || SdpError::malformed(format!("bad a=fingerprint \"{v}\""));
        let (alg, hex) = v.trim().split_once(' ').ok_or_else(bad)?;
        let hex = hex.trim();
        let pairs_ok = !hex.is_empty()
            && hex.split(':').all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        if alg.is_empty() || !pairs_ok {
            return Err(bad());
        }
        Ok(Fingerprint { algorithm: alg.to_ascii_lowercase(), value: hex.to_ascii_uppercase() })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.value)
    }
}
