//! What the operator decides: addresses, the IMS media profile, codec lists and what the
//! transcoder can bridge. Mechanism lives in `session`; this is only policy.

use std::net::{IpAddr, Ipv4Addr};

use crate::attr::Fingerprint;
use crate::codec::CodecSpec;
use crate::crypto::Suite;

/// How the IMS side carries media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImsProfile {
    /// SDES-SRTP suites to offer, in preference order; empty means plain RTP (RTP/AVP).
    pub srtp: Vec<Suite>,
    /// Offer RTP/AVPF (RTCP feedback, RFC 4585) instead of RTP/AVP.
    pub avpf: bool,
    /// Offer rtcp-mux toward IMS (RFC 5761); otherwise RTCP uses port+1.
    pub rtcp_mux: bool,
    /// `a=ptime` on audio offered toward IMS (IR.92 §3.2.1 uses 20 ms), if any.
    pub ptime: Option<u32>,
}

impl Default for ImsProfile {
    fn default() -> Self {
        ImsProfile { srtp: Vec::new(), avpf: false, rtcp_mux: false, ptime: Some(20) }
    }
}

impl ImsProfile {
    /// The m-line proto the gateway offers toward IMS.
    pub fn proto(&self) -> &'static str {
        match (self.srtp.is_empty(), self.avpf) {
            (true, false) => "RTP/AVP",
            (true, true) => "RTP/AVPF",
            (false, false) => "RTP/SAVP",
            (false, true) => "RTP/SAVPF",
        }
    }
}

/// A codec pair the transcoder can bridge: `web` on the browser leg, `ims` on the IMS leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscodePair {
    pub web: CodecSpec,
    pub ims: CodecSpec,
}

impl TranscodePair {
    /// `audio` or `video`, from the clock (every video payload format runs at 90 kHz).
    pub fn kind(&self) -> &'static str {
        if self.web.clock == 90_000 {
            "video"
        } else {
            "audio"
        }
    }

    /// VP8 <-> H.264 pairs for the video codecs the core may be offered, in their order: a
    /// VP8-only browser reaches an H.264 core, an H.264-only browser a VP8 core. The IMS side
    /// is the operator's spec itself, so its profile-level-id and packetization-mode are what
    /// the core is offered.
    pub fn video(ims_video: &[CodecSpec]) -> Vec<TranscodePair> {
        let vp8 = CodecSpec { encoding: "VP8".to_owned(), clock: 90_000, channels: None, fmtp: None };
        let h264 = CodecSpec {
            encoding: "H264".to_owned(),
            clock: 90_000,
            channels: None,
            fmtp: Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".to_owned()),
        };
        ims_video
            .iter()
            .filter_map(|ims| {
                let web = if ims.is("H264") {
                    vp8.clone()
                } else if ims.is("VP8") {
                    h264.clone()
                } else {
                    return None;
                };
                Some(TranscodePair { web, ims: ims.clone() })
            })
            .collect()
    }
}

/// The whole interworking policy of one gateway (shared by every call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpPolicy {
    /// Written in c= and o= toward IMS.
    pub ims_address: IpAddr,
    /// Written in host candidates, c= and o= toward browsers.
    pub web_address: IpAddr,
    pub ims: ImsProfile,
    /// Audio codecs the IMS side may be offered, in preference order (passthrough).
    pub audio: Vec<CodecSpec>,
    /// Video codecs the IMS side may be offered, in preference order (passthrough).
    pub video: Vec<CodecSpec>,
    /// What the transcoder bridges, in preference order; used only when the two sides share
    /// no codec. Empty disables transcoding.
    pub transcode: Vec<TranscodePair>,
    /// Relay RFC 4733 DTMF events (telephone-event, /8000 toward IMS).
    pub telephone_event: bool,
    /// The gateway's DTLS certificate fingerprint, written in every browser-facing SDP.
    pub fingerprint: Fingerprint,
}

impl Default for SdpPolicy {
    fn default() -> Self {
        let spec = |s| CodecSpec::parse(s).expect("built-in codec spec");
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        SdpPolicy {
            ims_address: loopback,
            web_address: loopback,
            ims: ImsProfile::default(),
            audio: vec![spec("PCMU/8000"), spec("PCMA/8000")],
            video: vec![spec("H264/90000;profile-level-id=42e01f;packetization-mode=1"), spec("H264/90000;profile-level-id=42e01f;packetization-mode=0")],
            transcode: vec![
                TranscodePair { web: spec("opus/48000/2"), ims: spec("PCMU/8000") },
                TranscodePair { web: spec("opus/48000/2"), ims: spec("PCMA/8000") },
            ],
            telephone_event: true,
            fingerprint: Fingerprint {
                algorithm: "sha-256".to_owned(),
                value: ["00"; 32].join(":"),
            },
        }
    }
}
