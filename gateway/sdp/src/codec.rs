//! Codecs as the interworking sees them: identity by encoding name, clock rate, channels and
//! (for H.264) the fmtp parameters that change the bitstream.

use std::fmt;

use crate::attr::Rtpmap;

/// A codec named the way operators write it in config: `PCMU/8000`, `opus/48000/2`,
/// `H264/90000`, optionally with required fmtp parameters (`packetization-mode=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecSpec {
    pub encoding: String,
    pub clock: u32,
    pub channels: Option<u8>,
    /// fmtp the codec must carry to match (only H.264's packetization-mode and profile are
    /// compared; see [`CodecSpec::matches`]); also written when the gateway offers it.
    pub fmtp: Option<String>,
}

impl CodecSpec {
    /// `name/clock[/channels][;fmtp]`, e.g. `H264/90000;packetization-mode=1`.
    pub fn parse(s: &str) -> Option<CodecSpec> {
        let (codec, fmtp) = match s.split_once(';') {
            Some((c, f)) => (c, Some(f.trim().to_owned()).filter(|f| !f.is_empty())),
            None => (s, None),
        };
        let mut parts = codec.trim().split('/');
        let encoding = parts.next().filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_graphic()))?;
        let clock = parts.next()?.parse().ok().filter(|&c| c > 0)?;
        let channels = match parts.next() {
            Some(c) => Some(c.parse().ok().filter(|&c| c > 0)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(CodecSpec { encoding: encoding.to_owned(), clock, channels, fmtp })
    }

    pub fn is(&self, encoding: &str) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding)
    }

    /// Whether payload type `r` (with its fmtp) is this codec. Channels default to 1
    /// (RFC 8866 §6.6). For H.264 the packetization-mode must be equal and, when this spec
    /// names a profile-level-id, the profile (its first two bytes) must be equal; the level may
    /// differ (RFC 6184 §8.2.2 level asymmetry).
    pub fn matches(&self, r: &Rtpmap, fmtp: Option<&str>) -> bool {
        if !self.is(&r.encoding) || self.clock != r.clock || self.channels.unwrap_or(1) != r.channels.unwrap_or(1) {
            return false;
        }
        if self.is("H264") {
            let mode = |f: Option<&str>| fmtp_param(f, "packetization-mode").unwrap_or("0").to_owned();
            if mode(self.fmtp.as_deref()) != mode(fmtp) {
                return false;
            }
            if let Some(want) = fmtp_param(self.fmtp.as_deref(), "profile-level-id") {
                let have = fmtp_param(fmtp, "profile-level-id").unwrap_or("42000a");
                if want.len() != 6 || have.len() != 6 || !want[..4].eq_ignore_ascii_case(&have[..4]) {
                    return false;
                }
            }
        }
        true
    }

    pub fn rtpmap(&self, pt: u8) -> Rtpmap {
        Rtpmap { pt, encoding: self.encoding.clone(), clock: self.clock, channels: self.channels }
    }

    /// The static payload type RFC 3551 assigns to this codec, if any.
    pub fn static_pt(&self) -> Option<u8> {
        [0u8, 3, 4, 8, 9, 18]
            .into_iter()
            .find(|&pt| crate::attr::static_rtpmap(pt).is_some_and(|r| self.matches(&r, None)))
    }
}

impl fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.encoding, self.clock)?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        if let Some(p) = &self.fmtp {
            write!(f, ";{p}")?;
        }
        Ok(())
    }
}

/// One `key=value` of an fmtp parameter list (`;`-separated, RFC 8866 §6.15).
pub fn fmtp_param<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// Payload formats that carry no media of their own: they follow a codec (RFC 4588 rtx,
/// RFC 2198 red, FEC) and are never offered across the gateway.
pub fn is_auxiliary(r: &Rtpmap) -> bool {
    ["rtx", "red", "ulpfec", "flexfec-03", "CN"].iter().any(|a| r.encoding.eq_ignore_ascii_case(a))
}

pub fn is_telephone_event(r: &Rtpmap) -> bool {
    r.encoding.eq_ignore_ascii_case("telephone-event")
}

/// Codecs every WebRTC browser decodes (RFC 7874 §3: Opus, G.711; RFC 7742 §5: VP8, H.264),
/// plus G.722 and the DTMF events Chromium and Firefox both offer. An IMS codec outside this
/// list cannot pass through to a browser.
pub fn browser_decodes(r: &Rtpmap) -> bool {
    let known: [(&str, u32); 8] = [
        ("opus", 48000),
        ("PCMU", 8000),
        ("PCMA", 8000),
        ("G722", 8000),
        ("telephone-event", 8000),
        ("telephone-event", 48000),
        ("VP8", 90000),
        ("H264", 90000),
    ];
    known.iter().any(|(e, c)| r.encoding.eq_ignore_ascii_case(e) && r.clock == *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &str) -> Rtpmap {
        Rtpmap::parse(v).unwrap()
    }

    #[test]
    fn specs_parse_and_match_like_rtpmaps() {
        let opus = CodecSpec::parse("opus/48000/2").unwrap();
        assert!(opus.matches(&map("111 opus/48000/2"), Some("minptime=10;useinbandfec=1")));
        assert!(!opus.matches(&map("111 opus/48000"), None), "channels matter");
        let pcmu = CodecSpec::parse("pcmu/8000").unwrap();
        assert!(pcmu.matches(&map("0 PCMU/8000"), None), "names are case-insensitive");
        assert_eq!(pcmu.static_pt(), Some(0));
        assert_eq!(CodecSpec::parse("PCMA/8000").unwrap().static_pt(), Some(8));
        assert_eq!(opus.static_pt(), None);
        assert!(CodecSpec::parse("PCMU").is_none());
        assert!(CodecSpec::parse("PCMU/x").is_none());
        assert_eq!(CodecSpec::parse("H264/90000;packetization-mode=1").unwrap().to_string(), "H264/90000;packetization-mode=1");
    }

    #[test]
    fn h264_matches_on_packetization_mode_and_profile_not_level() {
        let spec = CodecSpec::parse("H264/90000;profile-level-id=42e01f;packetization-mode=1").unwrap();
        let h = map("102 H264/90000");
        assert!(spec.matches(&h, Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")));
        assert!(spec.matches(&h, Some("packetization-mode=1;profile-level-id=42e00d")), "level may differ");
        assert!(!spec.matches(&h, Some("packetization-mode=0;profile-level-id=42e01f")));
        assert!(!spec.matches(&h, Some("packetization-mode=1;profile-level-id=640c1f")), "high profile is not baseline");
    }
}
