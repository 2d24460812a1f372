//! The little SDP the test peer speaks (RFC 3264 offer/answer, RFC 4566 lines): it reads the
//! m-lines of an offer or answer and writes PCMU/PCMA audio answers and offers. A test peer
//! needs no more; the gateway's own SDP engine is `estuary-sdp`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use estuary_transcoder::Law;

use crate::media::Stream;

/// One m-line as offered or answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MLine {
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    /// Connection address: media level, else session level.
    pub addr: Option<IpAddr>,
    /// `a=rtpmap` lines: (payload type, encoding name/clock).
    pub rtpmaps: Vec<(u8, String)>,
    pub direction: Direction,
    pub rtcp_mux: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The answer's direction for an offer's (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the side with this direction receives media.
    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The m-lines of a session description; `None` when it has none or is not SDP at all.
pub fn parse(body: &[u8]) -> Option<Vec<MLine>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut session_addr = None;
    let mut session_dir = Direction::SendRecv;
    let mut lines: Vec<MLine> = Vec::new();
    for line in text.lines().map(str::trim_end) {
        let Some((kind, value)) = line.split_once('=') else { continue };
        match kind {
            "c" => {
                let addr = value.split_whitespace().nth(2).and_then(|a| a.split('/').next()?.parse().ok());
                match lines.last_mut() {
                    Some(m) => m.addr = addr,
                    None => session_addr = addr,
                }
            }
            "m" => {
                let mut w = value.split_whitespace();
                let (Some(media), Some(port), Some(proto)) = (w.next(), w.next(), w.next()) else { return None };
                lines.push(MLine {
                    media: media.to_owned(),
                    port: port.split('/').next()?.parse().ok()?,
                    proto: proto.to_owned(),
                    formats: w.map(str::to_owned).collect(),
                    addr: session_addr,
                    rtpmaps: Vec::new(),
                    direction: session_dir,
                    rtcp_mux: false,
                });
            }
            "a" => {
                let (name, rest) = value.split_once(':').unwrap_or((value, ""));
                match (name, lines.last_mut()) {
                    ("rtpmap", Some(m)) => {
                        let mut w = rest.split_whitespace();
                        if let (Some(pt), Some(enc)) = (w.next().and_then(|p| p.parse().ok()), w.next()) {
                            m.rtpmaps.push((pt, enc.to_owned()));
                        }
                    }
                    ("rtcp-mux", Some(m)) => m.rtcp_mux = true,
                    (d, Some(m)) if Direction::parse(d).is_some() => m.direction = Direction::parse(d)?,
                    (d, None) if Direction::parse(d).is_some() => session_dir = Direction::parse(d)?,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    (!lines.is_empty()).then_some(lines)
}

impl MLine {
    /// The first G.711 format listed (static 0/8, or a dynamic PT mapped to PCMU/PCMA).
    pub fn g711(&self) -> Option<(u8, Law)> {
        self.formats.iter().find_map(|f| {
            let pt: u8 = f.parse().ok()?;
            let enc = self.rtpmaps.iter().find(|(p, _)| *p == pt).map(|(_, e)| e.to_ascii_uppercase());
            match (pt, enc.as_deref()) {
                (_, Some("PCMU/8000")) | (0, None) => Some((pt, Law::Mu)),
                (_, Some("PCMA/8000")) | (8, None) => Some((pt, Law::A)),
                _ => None,
            }
        })
    }

    /// The payload type of telephone-event/8000, if offered.
    pub fn telephone_event(&self) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|(pt, e)| e.eq_ignore_ascii_case("telephone-event/8000") && self.formats.iter().any(|f| f.parse() == Ok(*pt)))
            .map(|(pt, _)| *pt)
    }

    /// Plain RTP only: the peer has no SRTP keys to offer.
    pub fn is_plain_rtp(&self) -> bool {
        self.proto == "RTP/AVP" || self.proto == "RTP/AVPF"
    }

    /// The audio stream this m-line describes, from the peer's point of view (it sends when the
    /// far end receives).
    pub fn stream(&self, pt: u8, law: Law) -> Stream {
        let remote = match self.addr {
            Some(ip) if !ip.is_unspecified() && self.port != 0 => Some(SocketAddr::new(ip, self.port)),
            _ => None,
        };
        Stream { remote, pt, law, send: self.direction.receives() }
    }
}

/// The audio m-line the peer takes from an offer: the first plain-RTP audio line with G.711.
pub fn pick(lines: &[MLine]) -> Option<(usize, u8, Law)> {
    lines.iter().enumerate().find_map(|(i, m)| {
        let (pt, law) = m.g711()?;
        (m.media == "audio" && m.port != 0 && m.is_plain_rtp()).then_some((i, pt, law))
    })
}

/// What goes into a description the peer writes.
pub struct Local<'a> {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub version: u64,
    pub name: &'a str,
}

fn header(out: &mut String, l: &Local<'_>) {
    let family = if l.ip.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        out,
        "v=0\r\no=estuary-testpeer {} {} IN {family} {}\r\ns={}\r\nc=IN {family} {}\r\nt=0 0\r\n",
        l.session_id, l.version, l.ip, l.name, l.ip
    );
}

fn audio_attributes(out: &mut String, pt: u8, law: Law, te: Option<u8>) {
    let name = if law == Law::Mu { "PCMU" } else { "PCMA" };
    let _ = write!(out, "a=rtpmap:{pt} {name}/8000\r\n");
    if let Some(te) = te {
        let _ = write!(out, "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n");
    }
    out.push_str("a=ptime:20\r\n");
}

/// The answer to `offer`: the picked audio line accepted with one codec (and telephone-event
/// when offered), every other line refused with port 0 (RFC 3264 §6: one m-line per offered).
pub fn answer(offer: &[MLine], picked: usize, pt: u8, law: Law, l: &Local<'_>) -> String {
    let mut out = String::with_capacity(400);
    header(&mut out, l);
    for (i, m) in offer.iter().enumerate() {
        if i != picked {
            let first = m.formats.first().map_or("0", String::as_str);
            let _ = write!(out, "m={} 0 {} {first}\r\n", m.media, m.proto);
            continue;
        }
        let te = m.telephone_event();
        let _ = write!(out, "m=audio {} {} {pt}", l.port, m.proto);
        if let Some(te) = te {
            let _ = write!(out, " {te}");
        }
        out.push_str("\r\n");
        audio_attributes(&mut out, pt, law, te);
        // RTCP on the RTP port: muxed when offered, else pointed there with a=rtcp (RFC 3605),
        // so the peer needs one socket per call.
        if m.rtcp_mux {
            out.push_str("a=rtcp-mux\r\n");
        } else {
            let _ = write!(out, "a=rtcp:{}\r\n", l.port);
        }
        let _ = write!(out, "a={}\r\n", m.direction.answer().as_str());
    }
    out
}

/// The peer's own offer (a delayed-offer INVITE is answered with one): PCMU, PCMA and
/// telephone-event.
pub fn offer(l: &Local<'_>) -> String {
    let mut out = String::with_capacity(300);
    header(&mut out, l);
    let _ = write!(out, "m=audio {} RTP/AVP 0 8 101\r\n", l.port);
    out.push_str("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n");
    out.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n");
    let _ = write!(out, "a=rtcp:{}\r\na=sendrecv\r\n", l.port);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 30000 RTP/AVP 111 8 0 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\nm=video 30002 RTP/AVP 96\r\n\
        a=rtpmap:96 H264/90000\r\n";

    #[test]
    fn picks_the_first_g711_and_refuses_the_rest() {
        let lines = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(pick(&lines), Some((0, 8, Law::A)));
        assert_eq!(lines[0].telephone_event(), Some(101));
        let l = Local { ip: "127.0.0.1".parse().unwrap(), port: 4000, session_id: 7, version: 1, name: "t" };
        let a = answer(&lines, 0, 8, Law::A, &l);
        assert!(a.contains("m=audio 4000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(a.contains("a=recvonly\r\n"), "sendonly offered: {a}");
        assert!(a.contains("m=video 0 RTP/AVP 96\r\n"), "{a}");
        let s = lines[0].stream(8, Law::A);
        assert_eq!(s.remote, Some("10.0.0.1:30000".parse().unwrap()));
        assert!(!s.send, "the far end only sends");
    }

    #[test]
    fn no_g711_or_srtp_only_is_not_picked() {
        let opus = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(pick(&parse(opus.as_bytes()).unwrap()), None);
        let savp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/SAVP 0\r\n";
        assert_eq!(pick(&parse(savp.as_bytes()).unwrap()), None);
        assert_eq!(parse(b"not sdp"), None);
        assert_eq!(parse(b"m=audio x RTP/AVP 0"), None);
    }

    #[test]
    fn hold_address_means_no_destination() {
        let held = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\n";
        let lines = parse(held.as_bytes()).unwrap();
        assert_eq!(lines[0].stream(0, Law::Mu).remote, None);
    }
}
