//! The little SDP the test peer speaks (RFC 3264 offer/answer, RFC 4566 lines): it reads the
//! m-lines of an offer or answer and writes PCMU/PCMA audio answers and offers, plus an
//! H.264-only video answer for echo calls. A test peer needs no more; the gateway's own SDP
//! engine is `estuary-sdp`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use estuary_transcoder::Law;

use crate::media::{Stream, VideoStream};

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
    /// `a=fmtp` lines: (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
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
                    fmtps: Vec::new(),
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
                    ("fmtp", Some(m)) => {
                        if let Some((pt, params)) = rest.split_once(char::is_whitespace) {
                            if let Ok(pt) = pt.parse() {
                                m.fmtps.push((pt, params.trim().to_owned()));
                            }
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

    /// Where the far end receives: `None` for c=0.0.0.0 (old-style hold) or port 0.
    fn remote(&self) -> Option<SocketAddr> {
        match self.addr {
            Some(ip) if !ip.is_unspecified() && self.port != 0 => Some(SocketAddr::new(ip, self.port)),
            _ => None,
        }
    }

    /// The audio stream this m-line describes, from the peer's point of view (it sends when the
    /// far end receives).
    pub fn stream(&self, pt: u8, law: Law) -> Stream {
        Stream { remote: self.remote(), pt, law, send: self.direction.receives() }
    }

    /// The video stream this m-line describes, from the peer's point of view.
    pub fn video_stream(&self, pt: u8) -> VideoStream {
        VideoStream { remote: self.remote(), pt, send: self.direction.receives() }
    }

    /// The H.264 format to answer with: the first listed H264/90000 with packetization-mode=1,
    /// else the first H264/90000 (mode 0, or none said, which is 0: RFC 6184 §8.1).
    pub fn h264(&self) -> Option<H264> {
        let fmtp = |pt: u8| self.fmtps.iter().find(|(p, _)| *p == pt).map(|(_, f)| f.as_str());
        let mut listed = self.formats.iter().filter_map(|f| f.parse::<u8>().ok()).filter(|pt| {
            self.rtpmaps.iter().any(|(p, enc)| p == pt && enc.eq_ignore_ascii_case("H264/90000"))
        });
        let mode1 = |pt: &u8| fmtp_param(fmtp(*pt), "packetization-mode") == Some("1");
        let pt = listed.clone().find(mode1).or_else(|| listed.next())?;
        // Only what describes the stream itself: the echo returns the gateway's own bitstream,
        // so its profile and packetization are exactly what the gateway offered to receive.
        let copied: Vec<String> = ["profile-level-id", "packetization-mode"]
            .iter()
            .filter_map(|k| fmtp_param(fmtp(pt), k).map(|v| format!("{k}={v}")))
            .collect();
        Some(H264 { pt, fmtp: copied.join(";") })
    }
}

/// The value of `key` in an `a=fmtp` parameter list (`k=v;k=v`, names case-insensitive).
fn fmtp_param<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// The H.264 format the peer answers a video m-line with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H264 {
    pub pt: u8,
    /// The offer's profile-level-id and packetization-mode, as fmtp parameters; empty when the
    /// offer gave neither.
    pub fmtp: String,
}

/// The video m-line the peer takes from an offer: the first plain-RTP video line that lists
/// H.264 and is not refused. Only echo calls take it (see the crate doc).
pub fn pick_video(lines: &[MLine]) -> Option<(usize, H264)> {
    lines.iter().enumerate().find_map(|(i, m)| {
        if m.media != "video" || m.port == 0 || !m.is_plain_rtp() {
            return None;
        }
        Some((i, m.h264()?))
    })
}

/// The video line the peer accepts in an answer, and the port of its video socket.
pub struct VideoAnswer<'a> {
    pub line: usize,
    pub codec: &'a H264,
    pub port: u16,
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

/// RTCP on the RTP port: muxed when offered, else pointed there with a=rtcp (RFC 3605), so
/// the peer needs one socket per stream.
fn rtcp_and_direction(out: &mut String, m: &MLine, port: u16) {
    if m.rtcp_mux {
        out.push_str("a=rtcp-mux\r\n");
    } else {
        let _ = write!(out, "a=rtcp:{port}\r\n");
    }
    let _ = write!(out, "a={}\r\n", m.direction.answer().as_str());
}

/// The answer to `offer`: the picked audio line accepted with one codec (and telephone-event
/// when offered), the accepted video line (if any) with H.264 only, every other line refused
/// with port 0 (RFC 3264 §6: one m-line per offered).
pub fn answer(offer: &[MLine], picked: usize, pt: u8, law: Law, video: Option<VideoAnswer<'_>>, l: &Local<'_>) -> String {
    let mut out = String::with_capacity(600);
    header(&mut out, l);
    for (i, m) in offer.iter().enumerate() {
        if let Some(v) = video.as_ref().filter(|v| v.line == i && i != picked) {
            let vpt = v.codec.pt;
            let _ = write!(out, "m=video {} {} {vpt}\r\na=rtpmap:{vpt} H264/90000\r\n", v.port, m.proto);
            if !v.codec.fmtp.is_empty() {
                let _ = write!(out, "a=fmtp:{vpt} {}\r\n", v.codec.fmtp);
            }
            rtcp_and_direction(&mut out, m, v.port);
            continue;
        }
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
        rtcp_and_direction(&mut out, m, l.port);
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
        let a = answer(&lines, 0, 8, Law::A, None, &l);
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

    const AUDIO: &str = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";

    fn local() -> Local<'static> {
        Local { ip: "127.0.0.1".parse().unwrap(), port: 4000, session_id: 7, version: 1, name: "t" }
    }

    #[test]
    fn h264_is_answered_alone_preferring_packetization_mode_1_with_the_offers_profile() {
        let offer = format!(
            "{AUDIO}m=video 30002 RTP/AVP 98 97 96 120\r\na=rtpmap:98 H264/90000\r\n\
             a=fmtp:98 profile-level-id=42e01f\r\na=rtpmap:97 h264/90000\r\n\
             a=fmtp:97 level-asymmetry-allowed=1; Packetization-Mode=1 ;profile-level-id=42e01f;sprop-parameter-sets=Z0LgHtoCgPRA,aM4G4g==\r\n\
             a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=rtpmap:120 VP8/90000\r\n\
             a=recvonly\r\n"
        );
        let lines = parse(offer.as_bytes()).unwrap();
        let (i, codec) = pick_video(&lines).expect("H.264 offered");
        // Mode 0 (98, no parameter) is listed first: the first mode-1 one is taken instead.
        assert_eq!((i, codec.pt, codec.fmtp.as_str()), (1, 97, "profile-level-id=42e01f;packetization-mode=1"));
        let a = answer(&lines, 0, 0, Law::Mu, Some(VideoAnswer { line: i, codec: &codec, port: 4002 }), &local());
        let video = &a[a.find("m=video").unwrap()..];
        assert_eq!(
            video,
            "m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
             a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\na=rtcp:4002\r\na=sendonly\r\n",
            "H.264 only, RTCP to the video port, recvonly answered sendonly"
        );
        assert!(a.contains("m=audio 4000 RTP/AVP 0\r\n"), "{a}");
        assert!(lines[1].video_stream(97).send, "the gateway only receives: we send");

        // Only mode 0, no fmtp at all: taken as it is, and no a=fmtp is made up.
        let mode0 = format!("{AUDIO}m=video 30002 RTP/AVPF 99\r\na=rtpmap:99 H264/90000\r\na=rtcp-mux\r\n");
        let lines = parse(mode0.as_bytes()).unwrap();
        let (i, codec) = pick_video(&lines).unwrap();
        assert_eq!((codec.pt, codec.fmtp.as_str()), (99, ""));
        let a = answer(&lines, 0, 0, Law::Mu, Some(VideoAnswer { line: i, codec: &codec, port: 4002 }), &local());
        assert!(a.ends_with("m=video 4002 RTP/AVPF 99\r\na=rtpmap:99 H264/90000\r\na=rtcp-mux\r\na=sendrecv\r\n"), "{a}");
    }

    #[test]
    fn video_without_plain_rtp_h264_is_refused() {
        for video in [
            "m=video 30002 RTP/AVP 120 121\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:121 VP9/90000\r\n",
            "m=video 30002 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n",
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
            // Mapped but not listed on the m-line.
            "m=video 30002 RTP/AVP 120\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:96 H264/90000\r\n",
            "m=video 30002 RTP/AVP\r\n",
        ] {
            let lines = parse(format!("{AUDIO}{video}").as_bytes()).unwrap();
            assert_eq!(pick_video(&lines), None, "{video}");
            let a = answer(&lines, 0, 0, Law::Mu, None, &local());
            assert!(a.contains("\r\nm=video 0 "), "refused with port 0: {a}");
        }
    }

    #[test]
    fn broken_fmtp_lines_are_ignored() {
        let offer = format!("{AUDIO}m=video 1 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:\r\na=fmtp:x y\r\na=fmtp:96\r\na=fmtp:96 ;=;packetization-mode\r\n");
        let lines = parse(offer.as_bytes()).unwrap();
        assert_eq!(lines[1].fmtps, [(96, ";=;packetization-mode".to_owned())]);
        assert_eq!(pick_video(&lines).map(|(_, c)| c), Some(H264 { pt: 96, fmtp: String::new() }));
    }

    #[test]
    fn hold_address_means_no_destination() {
        let held = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\n";
        let lines = parse(held.as_bytes()).unwrap();
        assert_eq!(lines[0].stream(0, Law::Mu).remote, None);
    }
}
