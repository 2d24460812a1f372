//! `video`: what VP8 <-> H.264 transcoding costs, per direction of a stream.
//!
//! 1. The codecs alone, the reference: libvpx's VP8 decoder and OpenH264's encoder (and the
//!    reverse) through our thin wrappers, frame by frame over the same pictures, with no RTP,
//!    no reassembly, no rate or size policy. Then a `VideoChannel` over the RTP packets of
//!    the same frames: depacketize, decode, encode, packetize. Both timed on this thread's
//!    CPU clock in the same run; the channel's overhead shows as a ratio.
//! 2. Memory: resident growth of this process while `BENCH_VIDEO_CHANNELS` channels are
//!    built and have each converted a few frames (codecs allocate at the first frame).
//! 3. Latency on the worker pool: one stream, both directions, fed in real time at 30
//!    frames/s for `BENCH_VIDEO_SECONDS`; from the last packet of a frame pushed to the last
//!    packet of its conversion delivered, p50 and p99.
//!
//! The pictures are 640x480 at 30 frames/s, a moving scene (what a browser's camera sends at
//! its default resolution), sent and re-encoded at 1 Mbit/s. `video_transcodes_per_core` and
//! `raw_codec_transcodes_per_core` count two-way streams (VP8 -> H.264 and back), as issue 14
//! defines them; the per-direction figures are beside them.
//!
//! Environment: `BENCH_VIDEO_FRAMES` (300), `BENCH_VIDEO_CHANNELS` (8), `BENCH_VIDEO_SECONDS`
//! (5), `BENCH_OUT` (`target/bench/video.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use estuary_bench::{env_or, print_table, sample, write_json};
use estuary_transcoder::{ChannelSpec, FrameSink, OutFrame, Pool};
use estuary_transcoder::video::channel::{VideoChannel, VideoChannelConfig, VideoCodec, VideoOutput};
use estuary_transcoder::video::h264::{H264Packetizer, PacketizationMode};
use estuary_transcoder::video::level::VideoLimits;
use estuary_transcoder::video::openh264::{H264Decoder, H264Encoder};
use estuary_transcoder::video::picture::{EncoderConfig, Picture, VideoDecoder, VideoEncoder};
use estuary_transcoder::video::vp8::Vp8Packetizer;
use estuary_transcoder::video::vpx::{Vp8Decoder, Vp8Encoder};
use estuary_transcoder::video::RtpPayload;

const W: u32 = 640;
const H: u32 = 480;
const FPS: u32 = 30;
const TICKS_PER_FRAME: u32 = 90_000 / FPS;
const BITRATE: u32 = 1_000_000;
const FIRST_TS: u32 = 90_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("video: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CPU time of the calling thread: what the work cost, whatever else the machine is doing.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Frame `k` of a camera-like scene: horizontal bands drifting down, a bright disc moving
/// right, fine noise so the encoders cannot coast.
fn camera(k: u32) -> Picture {
    let mut p = Picture::new(W, H).expect("640x480 is a valid picture");
    let stride = p.y_stride();
    let (cx, cy) = ((80 + 7 * k) % W, 240 + (k % 60));
    let mut noise = 0x9e37_79b9u32 ^ k;
    for y in 0..H {
        for x in 0..W {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
            let band = 40 + ((y + 3 * k) / 24 % 6) * 30;
            let v = if dx * dx + dy * dy < 50 * 50 { 235 } else { band + (noise & 7) };
            p.y_mut()[y as usize * stride + x as usize] = v as u8;
        }
    }
    let uv = p.uv_stride();
    for y in 0..H / 2 {
        for x in 0..W / 2 {
            p.u_mut()[y as usize * uv + x as usize] = (90 + (x + k) / 10 % 60) as u8;
            p.v_mut()[y as usize * uv + x as usize] = (120 + y / 12) as u8;
        }
    }
    p
}

/// One encoded frame as its sender would put it on the wire.
struct SentFrame {
    /// The whole frame (VP8) or access unit (H.264), for the codec-only reference.
    data: Vec<u8>,
    /// Its RTP packets: (sequence number, payload with marker).
    packets: Vec<(u16, RtpPayload)>,
    timestamp: u32,
}

/// `frames` of the scene encoded in `codec` at the sender's bitrate, a keyframe first.
fn sent_stream(codec: VideoCodec, pictures: &[Picture]) -> Result<Vec<SentFrame>, String> {
    let config = EncoderConfig { width: W, height: H, bitrate_bps: BITRATE, max_fps: FPS, keyframe_interval: 0, max_nal_bytes: None };
    let mut encoder: Box<dyn VideoEncoder> = match codec {
        VideoCodec::Vp8 => Box::new(Vp8Encoder::new(&config).map_err(|e| format!("VP8 encoder: {e}"))?),
        VideoCodec::H264(_) => Box::new(H264Encoder::new(&config).map_err(|e| format!("H.264 encoder: {e}"))?),
    };
    let mut vp8 = Vp8Packetizer::new(1200, 1);
    let h264 = H264Packetizer::new(PacketizationMode::NonInterleaved, 1200);
    let mut seq = 1000u16;
    let mut out = Vec::with_capacity(pictures.len());
    for (k, picture) in pictures.iter().enumerate() {
        let timestamp = FIRST_TS + k as u32 * TICKS_PER_FRAME;
        let Some(frame) = encoder.encode(picture, timestamp, k == 0).map_err(|e| format!("sender encode: {e}"))? else { continue };
        let data = frame.data.to_vec();
        let mut payloads = Vec::new();
        match codec {
            VideoCodec::Vp8 => vp8.packetize(&data, &mut payloads),
            VideoCodec::H264(_) => h264.packetize(&data, &mut payloads),
        }
        .map_err(|e| format!("packetize: {e:?}"))?;
        let packets = payloads
            .into_iter()
            .map(|p| {
                seq = seq.wrapping_add(1);
                (seq, p)
            })
            .collect();
        out.push(SentFrame { data, packets, timestamp });
    }
    Ok(out)
}

fn channel_config(from: VideoCodec, to: VideoCodec) -> VideoChannelConfig {
    let mut c = VideoChannelConfig::new(from, to, VideoLimits::UNBOUNDED, BITRATE);
    c.start_bitrate = BITRATE;
    // The output timestamps are then the input's, which the latency measurement matches on.
    c.initial_timestamp = FIRST_TS;
    c
}

/// The codecs alone: decode every frame of `stream`, encode each picture into `to` at the
/// bitrate a channel starts at (the encoders' cost follows it). CPU per frame converted.
fn codecs_alone(stream: &[SentFrame], from: VideoCodec, to: VideoCodec) -> Result<Duration, String> {
    let bitrate_bps = channel_config(from, to).start_bitrate;
    let config = EncoderConfig { width: W, height: H, bitrate_bps, max_fps: FPS, keyframe_interval: 0, max_nal_bytes: None };
    let (mut decoder, mut encoder): (Box<dyn VideoDecoder>, Box<dyn VideoEncoder>) = match to {
        VideoCodec::H264(_) => (Box::new(Vp8Decoder::new().map_err(|e| e.to_string())?), Box::new(H264Encoder::new(&config).map_err(|e| e.to_string())?)),
        VideoCodec::Vp8 => (Box::new(H264Decoder::new().map_err(|e| e.to_string())?), Box::new(Vp8Encoder::new(&config).map_err(|e| e.to_string())?)),
    };
    let mut picture = Picture::new(16, 16).map_err(|e| e.to_string())?;
    let t0 = thread_cpu();
    for (k, f) in stream.iter().enumerate() {
        if decoder.decode(&f.data, &mut picture).map_err(|e| format!("reference decode: {e}"))? {
            encoder.encode(&picture, f.timestamp, k == 0).map_err(|e| format!("reference encode: {e}"))?;
        }
    }
    Ok((thread_cpu() - t0) / stream.len() as u32)
}

/// The channel over the RTP packets of `stream`: CPU per frame, and frames sent.
fn channel_alone(stream: &[SentFrame], from: VideoCodec, to: VideoCodec) -> Result<(Duration, u64), String> {
    let mut channel = VideoChannel::new(channel_config(from, to)).map_err(|e| e.to_string())?;
    let now = Instant::now();
    let mut sent = 0;
    let t0 = thread_cpu();
    for f in stream {
        for (seq, p) in &f.packets {
            channel.push(now, *seq, f.timestamp, p.marker, &p.data);
        }
        while let Some(out) = channel.poll_output() {
            if let VideoOutput::Rtp { payload, .. } = out {
                sent += u64::from(payload.marker);
            }
        }
    }
    let cpu = (thread_cpu() - t0) / stream.len() as u32;
    let stats = channel.stats();
    if stats.decode_errors > 0 || sent == 0 {
        return Err(format!("the channel did not convert the stream cleanly: {stats:?}"));
    }
    Ok((cpu, sent))
}

/// Resident bytes per channel: `n` channels (half each way), each fed its first frames.
fn bytes_per_channel(n: usize, vp8: &[SentFrame], h264: &[SentFrame]) -> Result<u64, String> {
    let me = std::process::id();
    let before = sample(me).map_err(|e| e.to_string())?.rss_bytes;
    let mut held = Vec::with_capacity(n);
    let now = Instant::now();
    for i in 0..n {
        let (stream, from, to) = if i % 2 == 0 { (vp8, VideoCodec::Vp8, VideoCodec::H264(PacketizationMode::NonInterleaved)) } else { (h264, VideoCodec::H264(PacketizationMode::NonInterleaved), VideoCodec::Vp8) };
        let mut channel = VideoChannel::new(channel_config(from, to)).map_err(|e| e.to_string())?;
        for f in stream.iter().take(5) {
            for (seq, p) in &f.packets {
                channel.push(now, *seq, f.timestamp, p.marker, &p.data);
            }
            while channel.poll_output().is_some() {}
        }
        held.push(channel);
    }
    let grown = sample(me).map_err(|e| e.to_string())?.rss_bytes.saturating_sub(before);
    drop(held);
    Ok(grown / n as u64)
}

/// Delivers the instant each converted frame's last packet left the worker.
struct Timed(mpsc::Sender<(u32, Instant)>);

impl FrameSink for Timed {
    fn deliver(&mut self, f: OutFrame<'_>) -> bool {
        !f.marker || self.0.send((f.timestamp, Instant::now())).is_ok()
    }
    fn request_keyframe(&mut self) -> bool {
        true
    }
}

/// Both directions of one stream on a pool (one audio and one video worker), fed in real
/// time: per-frame latency from push to delivery, sorted.
fn pool_latency(seconds: u64, vp8: &[SentFrame], h264: &[SentFrame]) -> Result<Vec<Duration>, String> {
    let pool = Pool::new(1, 1).map_err(|e| e.to_string())?;
    let mode = PacketizationMode::NonInterleaved;
    let (tx_a, rx_a) = mpsc::channel();
    let (tx_b, rx_b) = mpsc::channel();
    let a = pool.open(&ChannelSpec::Video(channel_config(VideoCodec::Vp8, VideoCodec::H264(mode))), Box::new(Timed(tx_a))).map_err(|e| e.to_string())?;
    let b = pool.open(&ChannelSpec::Video(channel_config(VideoCodec::H264(mode), VideoCodec::Vp8)), Box::new(Timed(tx_b))).map_err(|e| e.to_string())?;
    let frames = (seconds as usize * FPS as usize).min(vp8.len()).min(h264.len());
    let start = Instant::now();
    let mut pushed_a = Vec::with_capacity(frames);
    let mut pushed_b = Vec::with_capacity(frames);
    for k in 0..frames {
        let due = start + Duration::from_secs(1) * k as u32 / FPS;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        for (channel, f, pushed) in [(&a, &vp8[k], &mut pushed_a), (&b, &h264[k], &mut pushed_b)] {
            for (seq, p) in &f.packets {
                channel.push(Instant::now(), *seq, f.timestamp, p.marker, &p.data);
            }
            pushed.push((f.timestamp, Instant::now()));
        }
    }
    // Let the last frames through, then match outputs to inputs by timestamp.
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::with_capacity(2 * frames);
    for (rx, pushed) in [(rx_a, pushed_a), (rx_b, pushed_b)] {
        for (ts, at) in rx.try_iter() {
            if let Some((_, t)) = pushed.iter().find(|(pts, _)| *pts == ts) {
                latencies.push(at.saturating_duration_since(*t));
            }
        }
    }
    if latencies.len() < frames {
        return Err(format!("the pool delivered {} of {} frames", latencies.len(), 2 * frames));
    }
    latencies.sort();
    Ok(latencies)
}

fn run() -> Result<(), String> {
    let frames: u32 = env_or("BENCH_VIDEO_FRAMES", 300)?;
    let channels: usize = env_or("BENCH_VIDEO_CHANNELS", 8)?;
    let seconds: u64 = env_or("BENCH_VIDEO_SECONDS", 5)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/video.json"))?;
    let h264 = VideoCodec::H264(PacketizationMode::NonInterleaved);

    let pictures: Vec<Picture> = (0..frames.max(FPS)).map(camera).collect();
    let vp8_in = sent_stream(VideoCodec::Vp8, &pictures)?;
    let h264_in = sent_stream(h264, &pictures)?;
    drop(pictures);

    // 1. The codecs alone and the channels, same pictures, same run.
    let raw_to_h264 = codecs_alone(&vp8_in, VideoCodec::Vp8, h264)?;
    let raw_to_vp8 = codecs_alone(&h264_in, h264, VideoCodec::Vp8)?;
    let (ch_to_h264, sent_h264) = channel_alone(&vp8_in, VideoCodec::Vp8, h264)?;
    let (ch_to_vp8, sent_vp8) = channel_alone(&h264_in, h264, VideoCodec::Vp8)?;
    // A frame every 1/30 s through `per_frame` of CPU: how many such loads one core carries.
    let per_core = |per_frame: Duration| 1.0 / (per_frame.as_secs_f64() * f64::from(FPS)).max(1e-12);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Two-way streams: both directions' frames on one core.
    let channel_per_core = per_core(ch_to_h264 + ch_to_vp8);
    let raw_per_core = per_core(raw_to_h264 + raw_to_vp8);

    // 2. Memory.
    let bytes = bytes_per_channel(channels, &vp8_in, &h264_in)?;

    // 3. Latency through the pool.
    let lat = pool_latency(seconds, &vp8_in, &h264_in)?;
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];

    print_table(
        "VP8 <-> H.264 transcoding, 640x480 at 30 frames/s (a direction = one decoder and one encoder)",
        &[
            ("video_transcodes_per_core", format!("{channel_per_core:.1} two-way streams (channels: {:.2} ms/frame to H.264, {:.2} ms/frame to VP8)", ms(ch_to_h264), ms(ch_to_vp8))),
            ("raw_codec_transcodes_per_core", format!("{raw_per_core:.1} two-way streams (libvpx + OpenH264 alone: {:.2} / {:.2} ms/frame)", ms(raw_to_h264), ms(raw_to_vp8))),
            ("channels / raw throughput", format!("{:.2} (target >= 0.85)", channel_per_core / raw_per_core.max(1e-9))),
            ("frames", format!("{} VP8 and {} H.264 in, {sent_h264} H.264 and {sent_vp8} VP8 out", vp8_in.len(), h264_in.len())),
            ("video_bytes_per_channel", format!("{bytes} (resident, {channels} channels after their first frames)")),
            ("latency p50 / p99 / max", format!("{:.2} / {:.2} / {:.2} ms ({} frames through the pool, both directions in real time)", ms(pct(0.5)), ms(pct(0.99)), ms(lat[lat.len() - 1]), lat.len())),
        ],
    );
    let json = serde_json::json!({
        "video_transcodes_per_core": channel_per_core,
        "raw_codec_transcodes_per_core": raw_per_core,
        "throughput_ratio": channel_per_core / raw_per_core.max(1e-9),
        "bitrate_bps": BITRATE,
        "channel_ms_per_frame_vp8_to_h264": ms(ch_to_h264),
        "channel_ms_per_frame_h264_to_vp8": ms(ch_to_vp8),
        "raw_ms_per_frame_vp8_to_h264": ms(raw_to_h264),
        "raw_ms_per_frame_h264_to_vp8": ms(raw_to_vp8),
        "video_bytes_per_channel": bytes,
        "latency_ms_p50": ms(pct(0.5)),
        "latency_ms_p99": ms(pct(0.99)),
        "latency_ms_max": ms(lat[lat.len() - 1]),
        "latency_frames": lat.len(),
        "width": W,
        "height": H,
        "fps": FPS,
    });
    write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}
