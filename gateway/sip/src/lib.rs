//! SIP message syntax (RFC 3261 §7, §25): parse and print, URIs, stream framing. No state.

pub mod framing;

pub use framing::{Frame, FramingError, StreamFramer};
