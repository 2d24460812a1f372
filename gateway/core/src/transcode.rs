//! Which transcoding pipeline a stream needs: the same answer for the daemon's worker pool
//! and the inline plane.

use std::time::Duration;

use estuary_media::Leg;
use estuary_sdp::{CodecMap, MediaPlan, StreamPlan};
use estuary_transcoder::{ChannelSpec, G711ToOpusConfig, Law, OpusToG711Config};

/// Whether stream `i` transcodes the same codec pair (or transcodes in neither) under both
/// plans: when not, its pipelines start afresh.
pub fn same_transcoding(old: &MediaPlan, new: &MediaPlan, i: usize) -> bool {
    fn pair(p: &MediaPlan, i: usize) -> Option<&CodecMap> {
        p.streams.get(i).and_then(|s| s.codecs.iter().find(|c| c.transcode))
    }
    pair(old, i) == pair(new, i)
}

/// The pipeline for stream `s` toward `to`: Opus on the web leg, G.711 on the IMS leg. Its
/// first RTP timestamp is `initial_timestamp` (random, RFC 3550 §5.1, except in a replay).
pub fn spec_for(s: &StreamPlan, to: Leg, initial_timestamp: u32) -> Option<ChannelSpec> {
    let c = s.codecs.iter().find(|c| c.transcode)?;
    if !c.web.encoding.eq_ignore_ascii_case("opus") {
        return None;
    }
    let law = match c.ims.encoding.to_ascii_uppercase().as_str() {
        "PCMU" => Law::Mu,
        "PCMA" => Law::A,
        _ => return None,
    };
    // The core's a=ptime where the pipeline can make it (10 ms steps up to 60), else 20 ms.
    let ptime = s.ims_ptime.filter(|p| *p % 10 == 0 && (10..=60).contains(p)).unwrap_or(20);
    Some(match to {
        Leg::Ims => ChannelSpec::OpusToG711(OpusToG711Config {
            law,
            initial_timestamp,
            ptime: Duration::from_millis(u64::from(ptime)),
            ..OpusToG711Config::default()
        }),
        Leg::Web => ChannelSpec::G711ToOpus(G711ToOpusConfig { law, initial_timestamp, ..G711ToOpusConfig::default() }),
    })
}
