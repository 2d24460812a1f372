//! Which transcoding pipeline a stream needs: the same answer for the daemon's worker pool
//! and the inline plane.

use std::time::Duration;

use estuary_media::{EncoderRequest, Leg};
use estuary_sdp::{CodecMap, MediaPlan, StreamPlan};
use estuary_transcoder::video::channel::{VideoChannelConfig, VideoCodec};
use estuary_transcoder::video::h264::PacketizationMode;
use estuary_transcoder::video::level::VideoLimits;
use estuary_transcoder::{ChannelSpec, Control, G711ToOpusConfig, Law, OpusToG711Config};

/// The ceiling of a video encoder toward a receiver that set no b=AS or b=TIAS (and whose
/// level sets none either): browsers estimate their own bandwidth and send REMB below it.
pub const DEFAULT_VIDEO_BITRATE: u32 = 2_500_000;

/// Whether stream `i` transcodes the same codec pair (or transcodes in neither) under both
/// plans: when not, its pipelines start afresh.
pub fn same_transcoding(old: &MediaPlan, new: &MediaPlan, i: usize) -> bool {
    fn pair(p: &MediaPlan, i: usize) -> Option<&CodecMap> {
        p.streams.get(i).and_then(|s| s.codecs.iter().find(|c| c.transcode))
    }
    pair(old, i) == pair(new, i)
}

/// The pipeline for stream `s` toward `to`: Opus on the web leg and G.711 on the IMS leg, or
/// VP8 on one and H.264 on the other. Its first RTP timestamp is `initial_timestamp` (random,
/// RFC 3550 §5.1, except in a replay). `None`: no pipeline converts this pair, or the
/// receiver's fmtp is not one a video encoder can follow.
pub fn spec_for(s: &StreamPlan, to: Leg, initial_timestamp: u32) -> Option<ChannelSpec> {
    let c = s.codecs.iter().find(|c| c.transcode)?;
    if c.web.clock == 90_000 {
        return video_spec(s, c, to, initial_timestamp);
    }
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

/// A codec of a video transcode pair as the channel names it.
fn video_codec(encoding: &str, fmtp: Option<&str>) -> Option<VideoCodec> {
    if encoding.eq_ignore_ascii_case("VP8") {
        return Some(VideoCodec::Vp8);
    }
    if !encoding.eq_ignore_ascii_case("H264") {
        return None;
    }
    // RFC 6184 §8.1: no packetization-mode means mode 0.
    let mode = fmtp
        .and_then(|f| f.split(';').find_map(|p| p.trim().strip_prefix("packetization-mode=")))
        .map(str::trim);
    Some(VideoCodec::H264(if mode == Some("1") { PacketizationMode::NonInterleaved } else { PacketizationMode::SingleNal }))
}

/// One direction of a VP8 <-> H.264 stream: the receiver's codec, its fmtp limits (level,
/// max-fs/max-fr) and, toward IMS, the core's b=AS/b=TIAS as the bitrate ceiling. The first
/// VP8 PictureID comes from the same random draw as the timestamp.
fn video_spec(s: &StreamPlan, c: &estuary_sdp::CodecMap, to: Leg, initial_timestamp: u32) -> Option<ChannelSpec> {
    let web = video_codec(&c.web.encoding, c.web_fmtp.as_deref())?;
    let ims = video_codec(&c.ims.encoding, c.ims_fmtp.as_deref())?;
    let (from, to_codec, fmtp, ceiling) = match to {
        Leg::Ims => (web, ims, c.ims_fmtp.as_deref(), s.ims_max_bitrate),
        Leg::Web => (ims, web, c.web_fmtp.as_deref(), None),
    };
    let limits = match to_codec {
        VideoCodec::Vp8 => VideoLimits::vp8(fmtp),
        VideoCodec::H264(_) => VideoLimits::h264(fmtp),
    }
    .ok()?;
    let mut config = VideoChannelConfig::new(from, to_codec, limits, ceiling.unwrap_or(DEFAULT_VIDEO_BITRATE));
    config.initial_timestamp = initial_timestamp;
    config.first_picture_id = (initial_timestamp >> 17) as u16;
    Some(ChannelSpec::Video(config))
}

/// The transcoder's form of a receiver's request.
pub fn control_of(request: EncoderRequest) -> Control {
    match request {
        EncoderRequest::Keyframe => Control::Keyframe,
        EncoderRequest::MaxBitrate(bps) => Control::Bitrate(bps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_plan(web: &str, web_fmtp: Option<&str>, ims: &str, ims_fmtp: Option<&str>, ims_max_bitrate: Option<u32>) -> StreamPlan {
        let rtpmap = |s: &str| estuary_sdp::Rtpmap::parse(s).unwrap();
        let c = estuary_sdp::CodecMap {
            web_pt: 96,
            web: rtpmap(web),
            ims_pt: 97,
            ims: rtpmap(ims),
            transcode: true,
            web_fmtp: web_fmtp.map(str::to_owned),
            ims_fmtp: ims_fmtp.map(str::to_owned),
        };
        StreamPlan {
            index: 1,
            kind: "video".into(),
            mid: None,
            active: true,
            ims_local_port: 30002,
            ims_remote_rtp: None,
            ims_remote_rtcp: None,
            ims_rtcp_mux: false,
            web_direction: estuary_sdp::Direction::SendRecv,
            ims_direction: estuary_sdp::Direction::SendRecv,
            codecs: vec![c],
            dtmf: None,
            ims_srtp: None,
            web_ssrc: 1,
            web_feedback: Default::default(),
            ims_feedback: Default::default(),
            ims_ptime: None,
            ims_max_bitrate,
        }
    }

    fn video(spec: Option<ChannelSpec>) -> VideoChannelConfig {
        match spec {
            Some(ChannelSpec::Video(c)) => c,
            other => panic!("not a video channel: {other:?}"),
        }
    }

    #[test]
    fn a_vp8_browser_and_an_h264_core_get_a_channel_each_way_sized_by_the_receiver() {
        let s = video_plan("96 VP8/90000", Some("max-fs=3600;max-fr=30"), "97 H264/90000", Some("profile-level-id=42e01e;packetization-mode=1"), Some(1_000_000));
        let to_ims = video(spec_for(&s, Leg::Ims, 0x0002_0000));
        assert_eq!((to_ims.from, to_ims.to), (VideoCodec::Vp8, VideoCodec::H264(PacketizationMode::NonInterleaved)));
        assert_eq!(to_ims.max_bitrate, 1_000_000, "the core's b=AS (level 3.0 allows 10 Mbit/s)");
        assert_eq!(to_ims.limits.max_fs, Some(1620), "level 3.0");
        assert_eq!((to_ims.initial_timestamp, to_ims.first_picture_id), (0x0002_0000, 1));
        let to_web = video(spec_for(&s, Leg::Web, 7));
        assert_eq!((to_web.from, to_web.to), (VideoCodec::H264(PacketizationMode::NonInterleaved), VideoCodec::Vp8));
        assert_eq!((to_web.limits.max_fs, to_web.limits.max_fr), (Some(3600), Some(30)));
        assert_eq!(to_web.max_bitrate, DEFAULT_VIDEO_BITRATE);
    }

    #[test]
    fn an_h264_browser_and_a_vp8_core_and_what_has_no_channel() {
        // No packetization-mode: mode 0 (RFC 6184 §8.1).
        let s = video_plan("96 H264/90000", Some("profile-level-id=42e01f"), "97 VP8/90000", None, None);
        let to_ims = video(spec_for(&s, Leg::Ims, 0));
        assert_eq!((to_ims.from, to_ims.to), (VideoCodec::H264(PacketizationMode::SingleNal), VideoCodec::Vp8));
        assert_eq!(to_ims.limits, VideoLimits::UNBOUNDED);
        let bad_level = video_plan("96 VP8/90000", None, "97 H264/90000", Some("profile-level-id=zz"), None);
        assert!(spec_for(&bad_level, Leg::Ims, 0).is_none(), "an fmtp the encoder cannot follow");
        assert!(spec_for(&bad_level, Leg::Web, 0).is_some(), "the browser's direction does not depend on it");
        let vp9 = video_plan("96 VP9/90000", None, "97 H264/90000", None, None);
        assert!(spec_for(&vp9, Leg::Ims, 0).is_none());
    }
}
