//! The media plan: what the media plane and the transcoder must do for one call, as settled
//! by the last completed offer/answer exchange. It is plain data, rebuilt after every answer.

use std::fmt;
use std::net::SocketAddr;

use crate::attr::{Direction, Fingerprint, Rtpmap};
use crate::crypto::Suite;

/// Which side of the gateway.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Web,
    Ims,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Web => Side::Ims,
            Side::Ims => Side::Web,
        }
    }
}

/// DTLS role of the gateway on the web leg (RFC 5763 §5, RFC 8842).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    Client,
    Server,
}

/// The browser-facing transport: one BUNDLE group on one local port (ICE-lite, DTLS-SRTP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebTransport {
    pub local_port: u16,
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: Option<String>,
    pub remote_pwd: Option<String>,
    /// Every fingerprint the browser declared; its certificate must match one.
    pub remote_fingerprints: Vec<Fingerprint>,
    /// Settled once an answer fixes a=setup; `None` while the gateway's own offer
    /// (actpass) is outstanding.
    pub dtls_role: Option<DtlsRole>,
    /// The browser's preferred address, from its latest SDP: its highest-priority UDP RTP
    /// candidate with an IP address (mDNS `.local` names are not), else a usable c=/m=
    /// pair. What policy (Rx) describes until ICE selects a pair; media never sends to it.
    pub remote_candidate: Option<SocketAddr>,
}

/// One payload type carried across the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecMap {
    pub web_pt: u8,
    pub web: Rtpmap,
    pub ims_pt: u8,
    pub ims: Rtpmap,
    /// The payloads differ and the transcoder converts them (otherwise only the payload type
    /// number may need rewriting).
    pub transcode: bool,
    /// The fmtp each leg settled for this payload type: what the answerer wrote where it
    /// answered, else what was offered. A video transcoder sizes its encoder from them
    /// (H.264 profile-level-id, VP8 max-fs/max-fr).
    pub web_fmtp: Option<String>,
    pub ims_fmtp: Option<String>,
}

impl CodecMap {
    /// A video codec (every RTP video clock is 90 kHz, RFC 3551 §5).
    pub fn is_video(&self) -> bool {
        self.web.clock == 90_000
    }
}

/// RFC 4733 events: payload type and clock on each leg (durations rescale with the clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtmfMap {
    pub web_pt: u8,
    pub web_clock: u32,
    pub ims_pt: u8,
    pub ims_clock: u32,
}

/// SDES keys of one IMS stream (RFC 4568): ours encrypt what we send, theirs decrypt what
/// we receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesKeys {
    pub suite: Suite,
    pub local_key_salt: Vec<u8>,
    pub remote_key_salt: Vec<u8>,
}

/// RTCP feedback one leg negotiated for a stream's primary codec (RFC 4585 `nack`,
/// `nack pli`; RFC 5104 `ccm fir`, `ccm tmmbr`; `goog-remb`): what the gateway may send that
/// leg when the other leg asks for a retransmission or a key frame, and which rate feedback
/// the leg's receiver gives a video encoder of ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feedback {
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    /// The receiver reports its bandwidth estimate in REMB (draft-alvestrand-rmcat-remb).
    pub remb: bool,
    /// Temporary maximum bitrate requests (RFC 5104 §3.5.4), answered with TMMBN.
    pub tmmbr: bool,
}

impl Feedback {
    /// From `a=rtcp-fb` values without the payload type (`nack`, `nack pli`, `ccm fir`, ...);
    /// others (transport-cc, `ccm tstr`, ...) are not feedback the gateway acts on.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Feedback {
        let mut fb = Feedback::default();
        for v in values {
            let words: Vec<&str> = v.split_ascii_whitespace().collect();
            let is = |w: &str, want: &str| w.eq_ignore_ascii_case(want);
            match words.as_slice() {
                [n] if is(n, "nack") => fb.nack = true,
                [n, p] if is(n, "nack") && is(p, "pli") => fb.pli = true,
                [c, f] if is(c, "ccm") && is(f, "fir") => fb.fir = true,
                [c, t] if is(c, "ccm") && is(t, "tmmbr") => fb.tmmbr = true,
                [r] if is(r, "goog-remb") => fb.remb = true,
                _ => {}
            }
        }
        fb
    }

    pub fn any(&self) -> bool {
        self.nack || self.pli || self.fir || self.remb || self.tmmbr
    }
}

impl fmt::Display for Feedback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = [(self.nack, "nack"), (self.pli, "pli"), (self.fir, "fir"), (self.remb, "remb"), (self.tmmbr, "tmmbr")];
        let names: Vec<&str> = flags
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// One m-line, the same index on both legs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    pub index: usize,
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    /// The web leg's a=mid.
    pub mid: Option<String>,
    /// Both legs accepted the stream (no port 0 on either side).
    pub active: bool,
    /// Our RTP port toward IMS (RTCP on +1 unless `ims_rtcp_mux`); 0 when none.
    pub ims_local_port: u16,
    /// Where IMS wants RTP; `None` when it did not give a usable address (0.0.0.0 hold).
    pub ims_remote_rtp: Option<SocketAddr>,
    pub ims_remote_rtcp: Option<SocketAddr>,
    pub ims_rtcp_mux: bool,
    /// Direction of each leg from the gateway's point of view (what it may send / receive).
    pub web_direction: Direction,
    pub ims_direction: Direction,
    /// The first entry is the primary codec; transcoding entries appear only when the legs
    /// share no codec.
    pub codecs: Vec<CodecMap>,
    pub dtmf: Option<DtmfMap>,
    pub ims_srtp: Option<SdesKeys>,
    /// The SSRC the gateway uses toward the browser (announced in a=ssrc).
    pub web_ssrc: u32,
    /// RTCP feedback each leg negotiated: a PLI from the browser reaches IMS as PLI, or as FIR
    /// where IMS only took `ccm fir`, or not at all.
    pub web_feedback: Feedback,
    pub ims_feedback: Feedback,
    /// The packet time the IMS side asked for (its a=ptime, ms): what the transcoder sends it.
    pub ims_ptime: Option<u32>,
    /// The most the core asked to receive on this stream, bits/s: its m-line's b=TIAS, else
    /// b=AS (RFC 3890, RFC 4566 §5.8), else the session's. A transcoder's encoder toward IMS
    /// keeps below it.
    pub ims_max_bitrate: Option<u32>,
}

impl StreamPlan {
    /// Whether any codec on this stream needs the transcoder.
    pub fn transcodes(&self) -> bool {
        self.active && self.codecs.iter().any(|c| c.transcode)
    }
}

/// Everything the media plane needs for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlan {
    pub web: WebTransport,
    pub streams: Vec<StreamPlan>,
}

impl MediaPlan {
    pub fn transcodes(&self) -> bool {
        self.streams.iter().any(StreamPlan::transcodes)
    }
}

/// A line-per-fact summary for operators (`estuary sdp`) and golden tests.
impl fmt::Display for MediaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.web;
        writeln!(f, "web port {} ufrag {} role {:?}", w.local_port, w.local_ufrag, w.dtls_role)?;
        writeln!(f, "web remote ufrag {:?} fingerprints {}", w.remote_ufrag, w.remote_fingerprints.len())?;
        for st in &self.streams {
            writeln!(
                f,
                "stream {} {} mid {:?} active {} ims port {} remote {:?}/{:?} mux {} web {} ims {}",
                st.index,
                st.kind,
                st.mid,
                st.active,
                st.ims_local_port,
                st.ims_remote_rtp,
                st.ims_remote_rtcp,
                st.ims_rtcp_mux,
                st.web_direction.as_str(),
                st.ims_direction.as_str()
            )?;
            for c in &st.codecs {
                if c.transcode {
                    let fmtp = |v: &Option<String>| v.as_deref().map(|v| format!(" ({v})")).unwrap_or_default();
                    writeln!(f, "  codec web {}{} <-> ims {}{} TRANSCODE", c.web, fmtp(&c.web_fmtp), c.ims, fmtp(&c.ims_fmtp))?;
                } else {
                    writeln!(f, "  codec web {} <-> ims {}", c.web, c.ims)?;
                }
            }
            if st.web_feedback.any() || st.ims_feedback.any() {
                writeln!(f, "  rtcp-fb web {} ims {}", st.web_feedback, st.ims_feedback)?;
            }
            if let Some(b) = st.ims_max_bitrate {
                writeln!(f, "  ims max bitrate {b}")?;
            }
            if let Some(d) = &st.dtmf {
                writeln!(f, "  dtmf web {}/{} <-> ims {}/{}", d.web_pt, d.web_clock, d.ims_pt, d.ims_clock)?;
            }
            if let Some(k) = &st.ims_srtp {
                writeln!(
                    f,
                    "  sdes {} local {} bytes remote {} bytes",
                    k.suite.name(),
                    k.local_key_salt.len(),
                    k.remote_key_salt.len()
                )?;
            }
        }
        Ok(())
    }
}
