//! `VideoChannel`, one direction of a transcoded stream, driven as the gateway will drive it:
//! a real encoder makes the sender's RTP, the channel converts it, a real decoder checks
//! what the receiver gets.

use std::time::{Duration, Instant};

use estuary_transcoder::video::channel::{VideoChannel, VideoChannelConfig, VideoCodec, VideoOutput, MIN_BITRATE};
use estuary_transcoder::video::h264::{self, H264Depacketizer, H264Packetizer, PacketizationMode};
use estuary_transcoder::video::level::VideoLimits;
use estuary_transcoder::video::openh264::{H264Decoder, H264Encoder};
use estuary_transcoder::video::picture::{psnr_y, EncoderConfig, Picture, Scaler, VideoEncoder};
use estuary_transcoder::video::vp8::{self, Vp8Depacketizer, Vp8Packetizer};
use estuary_transcoder::video::vpx::{Vp8Decoder, Vp8Encoder};
use estuary_transcoder::video::{Depacketized, RtpPayload};

const W: u32 = 640;
const H: u32 = 480;

/// Frame `k` of a moving scene: a diagonal gradient, a bright square crossing it, texture.
fn scene(k: u32) -> Picture {
    let mut p = Picture::new(W, H).unwrap();
    let stride = p.y_stride();
    let (x0, y0) = (40 + k * 9, 60 + k * 5);
    for y in 0..H {
        for x in 0..W {
            let inside = (x0..x0 + 120).contains(&x) && (y0..y0 + 90).contains(&y);
            let texture = ((x / 8 + y / 8) % 2) * 12;
            let v = if inside { 230 } else { ((x + y + k * 4) / 5 % 200) + texture };
            p.y_mut()[y as usize * stride + x as usize] = v.min(255) as u8;
        }
    }
    let uv = p.uv_stride();
    for y in 0..H / 2 {
        for x in 0..W / 2 {
            p.u_mut()[y as usize * uv + x as usize] = (100 + x / 8) as u8;
            p.v_mut()[y as usize * uv + x as usize] = (140 + y / 8) as u8;
        }
    }
    p
}

/// The sender: a real encoder and our packetizer, as a browser or a core would send.
struct Sender {
    encoder: Box<dyn VideoEncoder>,
    vp8: Option<Vp8Packetizer>,
    h264: Option<H264Packetizer>,
    seq: u16,
}

impl Sender {
    fn new(codec: VideoCodec) -> Sender {
        let config = EncoderConfig { width: W, height: H, bitrate_bps: 1_500_000, max_fps: 30, keyframe_interval: 0, max_nal_bytes: None };
        match codec {
            VideoCodec::Vp8 => Sender { encoder: Box::new(Vp8Encoder::new(&config).unwrap()), vp8: Some(Vp8Packetizer::new(1200, 7)), h264: None, seq: 100 },
            VideoCodec::H264(mode) => Sender { encoder: Box::new(H264Encoder::new(&config).unwrap()), vp8: None, h264: Some(H264Packetizer::new(mode, 1200)), seq: 100 },
        }
    }

    /// Frame `k` as RTP packets: (seq, timestamp, payload).
    fn frame(&mut self, k: u32, keyframe: bool) -> Vec<(u16, u32, RtpPayload)> {
        let ts = 5000 + k * 3000;
        let picture = scene(k);
        let frame = self.encoder.encode(&picture, ts, keyframe).unwrap().expect("1.5 Mbit/s leaves room for every frame");
        let mut out = Vec::new();
        match (&mut self.vp8, &self.h264) {
            (Some(p), _) => p.packetize(frame.data, &mut out).unwrap(),
            (_, Some(p)) => p.packetize(frame.data, &mut out).unwrap(),
            _ => unreachable!(),
        };
        out.into_iter()
            .map(|p| {
                self.seq = self.seq.wrapping_add(1);
                (self.seq, ts, p)
            })
            .collect()
    }
}

/// The receiver: our depacketizer and a real decoder.
struct Receiver {
    vp8: Option<(Vp8Depacketizer, Vp8Decoder)>,
    h264: Option<(H264Depacketizer, H264Decoder)>,
    seq: u16,
    picture: Picture,
    frames: Vec<(u32, bool, Picture)>,
}

impl Receiver {
    fn new(codec: VideoCodec) -> Receiver {
        let (vp8, h264) = match codec {
            VideoCodec::Vp8 => (Some((Vp8Depacketizer::new(), Vp8Decoder::new().unwrap())), None),
            VideoCodec::H264(_) => (None, Some((H264Depacketizer::new(), H264Decoder::new().unwrap()))),
        };
        Receiver { vp8, h264, seq: 0, picture: Picture::new(16, 16).unwrap(), frames: Vec::new() }
    }

    fn take(&mut self, timestamp: u32, payload: &RtpPayload) {
        self.seq = self.seq.wrapping_add(1);
        let got = match (&mut self.vp8, &mut self.h264) {
            (Some((d, _)), _) => d.push(self.seq, timestamp, payload.marker, &payload.data),
            (_, Some((d, _))) => d.push(self.seq, timestamp, payload.marker, &payload.data),
            _ => unreachable!(),
        };
        if let Depacketized::Frame(f) = got {
            let keyframe = match &self.vp8 {
                Some(_) => vp8::is_keyframe(&f.data),
                None => h264::nal_units(&f.data).any(|n| h264::nal_type(n) == 5),
            };
            let decoded = match (&mut self.vp8, &mut self.h264) {
                (Some((_, dec)), _) => dec.decode(&f.data, &mut self.picture),
                (_, Some((_, dec))) => dec.decode(&f.data, &mut self.picture),
                _ => unreachable!(),
            };
            assert_eq!(decoded, Ok(true), "every frame the channel sends decodes");
            self.frames.push((f.timestamp, keyframe, self.picture.clone()));
        }
    }
}

/// Runs `channel`'s outputs into `rx`; returns how many keyframe requests it made.
fn drain(channel: &mut VideoChannel, rx: &mut Receiver) -> usize {
    let mut requests = 0;
    while let Some(out) = channel.poll_output() {
        match out {
            VideoOutput::Rtp { timestamp, payload } => rx.take(timestamp, &payload),
            VideoOutput::RequestKeyframe => requests += 1,
        }
    }
    requests
}

#[test]
fn a_vp8_browser_reaches_a_level_1_2_h264_core_scaled_and_slowed_to_what_the_level_allows() {
    let from = VideoCodec::Vp8;
    let to = VideoCodec::H264(PacketizationMode::NonInterleaved);
    // IR.94's level: CIF-sized frames (396 macroblocks) at 6000 macroblocks per second.
    let limits = VideoLimits::h264(Some("profile-level-id=42e00c;packetization-mode=1")).unwrap();
    let mut config = VideoChannelConfig::new(from, to, limits, 2_000_000);
    config.initial_timestamp = 0xffff_f000; // wraps within the run
    assert_eq!(config.max_bitrate, 384_000, "the level's MaxBR is the ceiling");
    let mut channel = VideoChannel::new(config).unwrap();
    let mut tx = Sender::new(from);
    let mut rx = Receiver::new(to);
    let t0 = Instant::now();
    for k in 0..30 {
        for (seq, ts, p) in tx.frame(k, k == 0) {
            channel.push(t0 + Duration::from_millis(33 * u64::from(k)), seq, ts, p.marker, &p.data);
        }
        assert_eq!(drain(&mut channel, &mut rx), 0, "no loss, no keyframe request");
    }
    let stats = channel.stats();
    let mbs = stats.width.div_ceil(16) * stats.height.div_ceil(16);
    assert!(mbs <= 396 && stats.width > 300, "{stats:?}");
    assert_eq!(stats.frames_in, 30);
    assert!((14..=16).contains(&stats.frames_out), "30 frames/s in, at most 6000/{mbs} out: {stats:?}");
    assert_eq!(rx.frames.len() as u64, stats.frames_out);
    assert!(rx.frames[0].1, "the first frame the core gets is an IDR");
    assert_eq!(rx.frames[0].0, 0xffff_f000, "timestamps start at the configured one");
    for w in rx.frames.windows(2) {
        let step = w[1].0.wrapping_sub(w[0].0);
        assert!(step % 3000 == 0 && step >= 6000, "the sender's spacing, every other frame: {step}");
    }
    // Quality against the source scaled to the same size.
    let mut scaler = Scaler::new();
    let mut total = 0.0;
    for (ts, _, picture) in &rx.frames {
        assert_eq!((picture.width(), picture.height()), (stats.width, stats.height));
        let k = ts.wrapping_sub(0xffff_f000) / 3000;
        let mut reference = Picture::new(stats.width, stats.height).unwrap();
        scaler.scale(&scene(k), &mut reference);
        total += psnr_y(&reference, picture).unwrap();
    }
    let mean = total / rx.frames.len() as f64;
    println!("VP8 640x480@30 -> H.264 {}x{}: {} frames, mean Y PSNR {mean:.2} dB", stats.width, stats.height, rx.frames.len());
    assert!(mean >= 30.0, "{mean:.2} dB");
}

#[test]
fn a_lost_packet_asks_the_sender_for_a_keyframe_again_until_one_comes_and_nothing_broken_is_sent() {
    let from = VideoCodec::H264(PacketizationMode::NonInterleaved);
    let to = VideoCodec::Vp8;
    let mut channel = VideoChannel::new(VideoChannelConfig::new(from, to, VideoLimits::UNBOUNDED, 2_000_000)).unwrap();
    let mut tx = Sender::new(from);
    let mut rx = Receiver::new(to);
    let t0 = Instant::now();
    let at = |k: u32| t0 + Duration::from_millis(33 * u64::from(k));
    for k in 0..5 {
        for (seq, ts, p) in tx.frame(k, k == 0) {
            channel.push(at(k), seq, ts, p.marker, &p.data);
        }
    }
    assert_eq!(drain(&mut channel, &mut rx), 0);
    assert_eq!(rx.frames.len(), 5);
    // Frame 5 loses its first packet.
    let mut packets = tx.frame(5, false);
    assert!(packets.len() > 1, "a 640x480 frame at 1.5 Mbit/s spans packets");
    packets.remove(0);
    for (seq, ts, p) in packets {
        channel.push(at(5), seq, ts, p.marker, &p.data);
    }
    for k in 6..20 {
        for (seq, ts, p) in tx.frame(k, false) {
            channel.push(at(k), seq, ts, p.marker, &p.data);
        }
    }
    assert_eq!(drain(&mut channel, &mut rx), 1, "one request for the loss");
    assert_eq!(rx.frames.len(), 5, "nothing decoded from a broken reference was sent");
    let retry = channel.poll_timeout().expect("the request is repeated while no keyframe comes");
    assert!(retry > at(5) && retry <= at(5) + Duration::from_millis(500));
    channel.handle_timeout(retry);
    assert_eq!(drain(&mut channel, &mut rx), 1, "repeated");
    assert_eq!(channel.stats().keyframes_requested, 2);
    // The sender answers with a keyframe: output resumes, and the request stops.
    for (seq, ts, p) in tx.frame(20, true) {
        channel.push(at(20), seq, ts, p.marker, &p.data);
    }
    for k in 21..24 {
        for (seq, ts, p) in tx.frame(k, false) {
            channel.push(at(k), seq, ts, p.marker, &p.data);
        }
    }
    assert_eq!(drain(&mut channel, &mut rx), 0);
    assert_eq!(rx.frames.len(), 9, "frames 20 to 23 arrive");
    assert_eq!(channel.poll_timeout(), None);
    channel.handle_timeout(at(40));
    assert_eq!(drain(&mut channel, &mut rx), 0, "nothing outstanding, nothing repeated");
}

#[test]
fn the_receiver_gets_a_keyframe_when_it_asks_and_its_bitrate_moves_the_encoder_in_steps() {
    let from = VideoCodec::Vp8;
    let to = VideoCodec::H264(PacketizationMode::NonInterleaved);
    let mut channel = VideoChannel::new(VideoChannelConfig::new(from, to, VideoLimits::UNBOUNDED, 1_000_000)).unwrap();
    let mut tx = Sender::new(from);
    let mut rx = Receiver::new(to);
    let t0 = Instant::now();
    for k in 0..6 {
        for (seq, ts, p) in tx.frame(k, k == 0) {
            channel.push(t0, seq, ts, p.marker, &p.data);
        }
    }
    drain(&mut channel, &mut rx);
    let keyframes = |rx: &Receiver| rx.frames.iter().filter(|f| f.1).count();
    assert_eq!(keyframes(&rx), 1, "one keyframe at the start, none asked since");
    channel.request_keyframe(t0);
    for (seq, ts, p) in tx.frame(6, false) {
        channel.push(t0, seq, ts, p.marker, &p.data);
    }
    drain(&mut channel, &mut rx);
    assert!(rx.frames.last().unwrap().1, "the frame after the request is a keyframe");
    assert_eq!(channel.stats().keyframes_forced, 1);

    assert_eq!(channel.stats().bitrate, 600_000);
    channel.set_bitrate(t0, 620_000);
    assert_eq!(channel.stats().bitrate, 600_000, "a 3% change is not worth an H.264 restart");
    channel.set_bitrate(t0, 5_000_000);
    assert_eq!(channel.stats().bitrate, 1_000_000, "capped at the ceiling");
    channel.set_bitrate(t0, 1_000);
    assert_eq!(channel.stats().bitrate, MIN_BITRATE, "never below the floor");
    assert!(VideoChannel::new(VideoChannelConfig::new(from, from, VideoLimits::UNBOUNDED, 1_000_000)).is_err(), "VP8 to VP8 is not transcoding");
}

/// What a pool's sink received, in order.
#[derive(Debug)]
enum Sunk {
    Packet(u32, RtpPayload),
    KeyframeRequest,
}

struct ToTest(std::sync::mpsc::Sender<Sunk>);

impl estuary_transcoder::FrameSink for ToTest {
    fn deliver(&mut self, f: estuary_transcoder::OutFrame<'_>) -> bool {
        self.0.send(Sunk::Packet(f.timestamp, RtpPayload { data: f.payload.to_vec(), marker: f.marker })).is_ok()
    }
    fn request_keyframe(&mut self) -> bool {
        self.0.send(Sunk::KeyframeRequest).is_ok()
    }
}

/// The nice value of this process's thread called `name` (field 19 of its stat line).
fn nice_of_thread(name: &str) -> Option<i32> {
    // Other tests' threads come and go while we look: a task that vanished is skipped, not an answer.
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
        if comm.trim() == name {
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { continue };
            // After the parenthesised command: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')')? + 2..];
            return rest.split(' ').nth(16)?.parse().ok();
        }
    }
    None
}

#[test]
fn on_the_pool_video_runs_on_its_own_lower_priority_worker_and_asks_for_keyframes_through_the_sink() {
    use estuary_transcoder::{ChannelSpec, Control, Pool};
    use std::sync::atomic::Ordering;
    let pool = Pool::new(1, 1).unwrap();
    assert_eq!((pool.threads(), pool.video_threads()), (1, 1));
    let from = VideoCodec::Vp8;
    let to = VideoCodec::H264(PacketizationMode::NonInterleaved);
    let (sink_tx, sink_rx) = std::sync::mpsc::channel();
    let spec = ChannelSpec::Video(VideoChannelConfig::new(from, to, VideoLimits::UNBOUNDED, 1_000_000));
    let ch = pool.open(&spec, Box::new(ToTest(sink_tx))).unwrap();
    assert_eq!(pool.stats().video_channels.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().channels.load(Ordering::Relaxed), 0, "not counted as audio");
    // Video yields to audio under contention: its worker runs 10 nice steps lower. A worker
    // names itself and lowers its priority once it first runs, which on a loaded machine can
    // be after open() returns: wait for both, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match (nice_of_thread("transcode-0"), nice_of_thread("video-0")) {
            (Some(a), Some(v)) if v == a + 10 => break,
            found if Instant::now() > deadline => panic!("workers (audio, video) nice after 5 s: {found:?}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }

    let mut tx = Sender::new(from);
    let mut rx = Receiver::new(to);
    let mut requests = 0;
    let mut collect = |rx: &mut Receiver, wait: Duration| {
        // The worker runs on its own clock: wait for its output, then take what came.
        while let Ok(s) = sink_rx.recv_timeout(wait) {
            match s {
                Sunk::Packet(ts, p) => rx.take(ts, &p),
                Sunk::KeyframeRequest => requests += 1,
            }
        }
    };
    let mut push = |k: u32, keyframe: bool, skip_first: bool| {
        for (i, (seq, ts, p)) in tx.frame(k, keyframe).into_iter().enumerate() {
            if skip_first && i == 0 {
                continue;
            }
            assert!(ch.push(Instant::now(), seq, ts, p.marker, &p.data));
        }
    };
    for k in 0..5 {
        push(k, k == 0, false);
    }
    collect(&mut rx, Duration::from_millis(500));
    assert_eq!(rx.frames.len(), 5, "five VP8 frames came back as H.264 and decoded");
    assert!(rx.frames[0].1 && !rx.frames[4].1);

    // The receiver asks: the next frame is an IDR.
    assert!(ch.control(Instant::now(), Control::Keyframe));
    push(5, false, false);
    collect(&mut rx, Duration::from_millis(500));
    assert!(rx.frames.last().unwrap().1, "an IDR after the receiver's request");

    // A lost packet: the sink hears the request for the sender.
    push(6, false, true);
    push(7, false, false);
    collect(&mut rx, Duration::from_millis(300));
    assert_eq!(requests, 1, "one keyframe request toward the sender");
    assert_eq!(rx.frames.len(), 6, "nothing from the broken frames");

    let stats = ch.video_stats().expect("a video channel has video counters");
    assert_eq!((stats.frames_in, stats.frames_out, stats.keyframes_forced), (6, 6, 1), "frames 6 and 7 never completed: {stats:?}");
    assert!(stats.keyframes_requested >= 1 && stats.width == 640, "{stats:?}");
    assert_eq!(pool.stats().video_frames_out.load(Ordering::Relaxed), 6);
    assert_eq!(pool.stats().frames_out.load(Ordering::Relaxed), 0, "audio counters untouched");
    // The workers timed their video jobs; eight frames are too few to quote a cost from.
    assert!(pool.stats().video_busy_ns.load(Ordering::Relaxed) > 0);
    assert_eq!(pool.stats().video_cost_per_frame(), None);
    drop(ch);
    assert_eq!(pool.stats().video_channels.load(Ordering::Relaxed), 0);
}
