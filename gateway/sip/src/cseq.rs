//! The CSeq header (RFC 3261 §20.16).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::method::Method;
use crate::scan::{is_token_byte, parse_digits, Cursor};

/// `CSeq: <seq> <method>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// Sequence number; RFC 3261 §8.1.1.5 bounds it to 32 bits, larger values are errors
    /// (RFC 4475 §3.1.2.4).
    pub seq: u32,
    /// Method, which must equal the request's (RFC 3261 §8.1.1.5).
    pub method: Method,
}

impl CSeq {
    /// Parse `1*DIGIT LWS Method`; leading zeros are fine (`0009 INVITE`).
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        parse_cseq(s).ok_or_else(|| ParseError::malformed("Bad CSeq header"))
    }
}

impl FromStr for CSeq {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<CSeq, ParseError> {
        CSeq::parse(s)
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

fn parse_cseq(s: &str) -> Option<CSeq> {
    let mut cur = Cursor::new(s);
    cur.skip_wsp();
    let digits = cur.take_while(|b| b.is_ascii_digit());
    let seq = u32::try_from(parse_digits(digits)?).ok()?;
    if !cur.skip_wsp() {
        return None;
    }
    let method = cur.take_while(is_token_byte).parse().ok()?;
    cur.skip_wsp();
    cur.at_end().then_some(CSeq { seq, method })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let c = CSeq::parse("0009 INVITE").unwrap();
        assert_eq!(
            c,
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(c.to_string(), "9 INVITE");
        assert_eq!(
            CSeq::parse(" 4294967295\tNEWMETHOD ").unwrap().seq,
            u32::MAX
        );
    }

    #[test]
    fn rejects_overflow_and_junk() {
        for bad in [
            "36893488147419103232 REGISTER",
            "4294967296 INVITE",
            "INVITE",
            "1",
            "1INVITE",
            "-1 INVITE",
            "1 INVITE x",
            "1 <INVITE>",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
