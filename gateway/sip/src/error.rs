//! Parse errors, classified by the answer they lead to on the wire (STYLE R5).

/// What kind of failure a [`ParseError`] is, which decides what goes back on the wire.
///
/// RFC 3261 §8.2 and §18.3 leave the element three answers to a broken request: drop it, answer
/// 400 with a reason phrase naming the fault, or a more specific code. A broken *response* is
/// never answered (RFC 3261 §18.1.2 discards it); [`ParseErrorKind::status_code`] only applies
/// to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// No start line or header section could be found: not SIP, or hopelessly truncated.
    /// Drop silently; there is nothing to address an answer to.
    Unparseable,
    /// A start line and headers were found but something violates the grammar or a
    /// mandatory rule: a request gets 400 (Bad Request) with [`ParseError::reason`].
    Malformed,
    /// The SIP-Version is well-formed but not `SIP/2.0`: a request gets 505
    /// (Version Not Supported), RFC 3261 §8.2.1 and RFC 4475 §3.1.2.16.
    VersionNotSupported,
    /// The Request-URI scheme is not one we serve: 416 (Unsupported URI Scheme),
    /// RFC 3261 §8.2.2.1. Produced by [`crate::Request::check_uri_scheme`], never by parsing:
    /// unknown schemes are syntactically fine (RFC 4475 §3.3.2).
    UnsupportedUriScheme,
}

impl ParseErrorKind {
    /// The status code to answer a *request* that failed this way with, `None` to drop it.
    pub fn status_code(self) -> Option<u16> {
        match self {
            ParseErrorKind::Unparseable => None,
            ParseErrorKind::Malformed => Some(400),
            ParseErrorKind::VersionNotSupported => Some(505),
            ParseErrorKind::UnsupportedUriScheme => Some(416),
        }
    }
}

/// A message, header or URI that could not be parsed or failed validation.
///
/// `reason` is a short phrase fit to be sent as the reason phrase of the answer
/// (`400 Bad Via header`); it never contains CR or LF and never echoes input bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// Which class of failure, hence which answer.
    pub kind: ParseErrorKind,
    /// Short human phrase, usable as a SIP reason phrase.
    pub reason: String,
}

impl ParseError {
    /// A [`ParseErrorKind::Malformed`] error with the given reason phrase.
    pub fn malformed(reason: &str) -> ParseError {
        ParseError {
            kind: ParseErrorKind::Malformed,
            reason: reason.to_owned(),
        }
    }

    /// A [`ParseErrorKind::Unparseable`] error with the given reason phrase.
    pub fn unparseable(reason: &str) -> ParseError {
        ParseError {
            kind: ParseErrorKind::Unparseable,
            reason: reason.to_owned(),
        }
    }

    /// Shorthand for `self.kind.status_code()`.
    pub fn status_code(&self) -> Option<u16> {
        self.kind.status_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_one_answer() {
        assert_eq!(ParseErrorKind::Unparseable.status_code(), None);
        assert_eq!(ParseErrorKind::Malformed.status_code(), Some(400));
        assert_eq!(ParseErrorKind::VersionNotSupported.status_code(), Some(505));
        assert_eq!(
            ParseErrorKind::UnsupportedUriScheme.status_code(),
            Some(416)
        );
    }

    #[test]
    fn display_is_the_reason_phrase() {
        let e = ParseError::malformed("Bad Via header");
        assert_eq!(e.to_string(), "Bad Via header");
        assert_eq!(e.status_code(), Some(400));
    }
}
