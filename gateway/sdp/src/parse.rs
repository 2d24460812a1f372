//! Parse and print. The `sdp` crate keeps every line and attribute in order (unknown ones
//! included); this module adds the limits and checks the interworking relies on, so that
//! everything past it may index formats and ports without fear.

use std::io::Cursor;
use std::net::IpAddr;

use sdp::description::common::{Address, ConnectionInformation};
use sdp::description::media::MediaDescription;
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

use crate::attr::parse_pt;
use crate::error::SdpError;

/// Larger bodies are refused: a real offer with many codecs is a few kilobytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// More m-lines than any real session needs (each costs ports).
pub const MAX_MEDIA: usize = 16;

/// Parse an SDP body. Errors are [`crate::ErrorKind::Malformed`] with a reason fit for a
/// SIP reason phrase.
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(SdpError::malformed(format!("SDP longer than {MAX_SDP_LEN} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::malformed("SDP is not UTF-8"))?;
    if !text.starts_with("v=") {
        return Err(SdpError::malformed("SDP must start with v="));
    }
    if text.bytes().any(|b| b == 0) {
        return Err(SdpError::malformed("SDP contains NUL"));
    }
    let sd = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::malformed(format!("bad SDP: {e}")))?;
    check(&sd)?;
    Ok(sd)
}

fn check(sd: &SessionDescription) -> Result<(), SdpError> {
    if sd.version != 0 {
        return Err(SdpError::malformed("SDP version must be 0"));
    }
    if sd.media_descriptions.len() > MAX_MEDIA {
        return Err(SdpError::malformed(format!("more than {MAX_MEDIA} m-lines")));
    }
    for (i, m) in sd.media_descriptions.iter().enumerate() {
        let n = &m.media_name;
        if !(0..=65535).contains(&n.port.value) {
            return Err(SdpError::malformed(format!("m-line {i}: port out of range")));
        }
        if n.formats.is_empty() || n.protos.is_empty() {
            return Err(SdpError::malformed(format!("m-line {i}: no formats")));
        }
        if is_rtp(m) && n.formats.iter().any(|f| parse_pt(f).is_none()) {
            return Err(SdpError::malformed(format!("m-line {i}: RTP formats must be payload types 0-127")));
        }
        if n.port.value != 0 && connection_addr(sd, m).is_none() && !has_unspecified_c(sd, m) {
            return Err(SdpError::malformed(format!("m-line {i}: no c= address")));
        }
    }
    Ok(())
}

fn has_unspecified_c(sd: &SessionDescription, m: &MediaDescription) -> bool {
    m.connection_information.is_some() || sd.connection_information.is_some()
}

/// The m-line carries RTP (any RTP/* or UDP/TLS/RTP/* profile).
pub fn is_rtp(m: &MediaDescription) -> bool {
    m.media_name.protos.iter().any(|p| p.eq_ignore_ascii_case("RTP"))
}

/// The proto as written, e.g. `UDP/TLS/RTP/SAVPF`.
pub fn proto(m: &MediaDescription) -> String {
    m.media_name.protos.join("/")
}

/// The connection address of a media section (its own c=, else the session's).
pub fn connection_addr(sd: &SessionDescription, m: &MediaDescription) -> Option<IpAddr> {
    let c = m.connection_information.as_ref().or(sd.connection_information.as_ref())?;
    c.address.as_ref()?.address.trim().parse().ok()
}

/// The m-line port.
pub fn port(m: &MediaDescription) -> u16 {
    u16::try_from(m.media_name.port.value).unwrap_or(0)
}

pub fn connection(addr: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".to_owned(),
        address_type: if addr.is_ipv4() { "IP4" } else { "IP6" }.to_owned(),
        address: Some(Address { address: addr.to_string(), ttl: None, range: None }),
    }
}

/// A new session skeleton: v=0, o=, s=-, t=0 0.
pub fn skeleton(session_id: u64, version: u64, addr: IpAddr) -> SessionDescription {
    SessionDescription {
        version: 0,
        origin: Origin {
            username: "-".to_owned(),
            session_id,
            session_version: version,
            network_type: "IN".to_owned(),
            address_type: if addr.is_ipv4() { "IP4" } else { "IP6" }.to_owned(),
            unicast_address: addr.to_string(),
        },
        session_name: "-".to_owned(),
        session_information: None,
        uri: None,
        email_address: None,
        phone_number: None,
        connection_information: None,
        bandwidth: Vec::new(),
        time_descriptions: vec![TimeDescription {
            timing: Timing { start_time: 0, stop_time: 0 },
            repeat_times: Vec::new(),
        }],
        time_zones: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
        media_descriptions: Vec::new(),
    }
}

/// Print with CRLF line ends (RFC 8866 §5).
pub fn print(sd: &SessionDescription) -> String {
    sd.marshal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_lines_and_order_survive_a_round_trip() {
        let text = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=x-unknown:keep me\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=mid:0\r\na=zzz\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(print(&parse(text.as_bytes()).unwrap()), text);
    }

    #[test]
    fn refusals_name_the_problem() {
        for (body, why) in [
            (&b"hello"[..], "start with v="),
            (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1000 RTP/AVP 300\r\nc=IN IP4 1.2.3.4\r\n", "payload types"),
            (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1000 RTP/AVP 0\r\n", "no c="),
            (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\nc=IN IP4 1.2.3.4\r\n", "too large"),
            (b"v=0\r\xff", "UTF-8"),
            (b"v=0\r\no=- 1\r\n", "bad SDP"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.reason.contains(why), "{:?}: {e}", String::from_utf8_lossy(body));
            assert_eq!(e.status(), 400);
        }
    }
}
