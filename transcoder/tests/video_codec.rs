//! Video codecs: VP8 (libvpx) and H.264 (OpenH264) through our wrappers. Quality on moving
//! synthetic content, keyframes on demand, the way through our RTP payload formats with and
//! without loss, an independent decoder (ffmpeg) reading what we encode, hostile input to the
//! decoders, run-time bitrate changes, size-limited H.264 slices, and the scaler.
//!
//! Each test prints its figures (PSNR, sizes, timings); run with `--nocapture` to see them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use estuary_transcoder::video::h264::{
    self, H264Depacketizer, H264Packetizer, PacketizationMode, NAL_IDR, NAL_SPS,
};
use estuary_transcoder::video::openh264::{H264Decoder, H264Encoder};
use estuary_transcoder::video::picture::{
    psnr, psnr_y, scale_into, EncoderConfig, Picture, Scaler, VideoCodecError, VideoDecoder,
    VideoEncoder, MAX_DIMENSION,
};
use estuary_transcoder::video::vp8::{self, Vp8Depacketizer, Vp8Packetizer};
use estuary_transcoder::video::vpx::{Vp8Decoder, Vp8Encoder};
use estuary_transcoder::video::{Depacketized, RtpPayload};

use common::XorShift;

// ---- Helpers --------------------------------------------------------------------------------

const W: u32 = 640;
const H: u32 = 480;
/// 90 kHz ticks per frame at 30 fps.
const TICKS: u32 = 3000;
const MAX_PAYLOAD: usize = 1200;


/// Frame `i` of a moving test scene at `w`x`h`: a diagonal luma gradient drifting 2 px per
/// frame, a soft sine texture, a textured rectangle crossing the picture at 6 px per frame,
/// and chroma gradients, so there is motion, edges, flat areas and detail to code. The
/// scene is defined in picture-relative coordinates, so any size shows the same content.
fn scene(w: u32, h: u32, i: u32) -> Picture {
    let mut p = Picture::new(w, h).unwrap();
    let (ys, uvs) = (p.y_stride(), p.uv_stride());
    let (fw, fh) = (f64::from(w), f64::from(h));
    // Scale factor against the 640-wide reference, so motion and texture follow the size.
    let k = fw / 640.0;
    let shift = f64::from(i) * 2.0 * k;
    let (rx, ry) = (
        ((f64::from(i) * 6.0 * k) % (fw * 0.8)) as i64,
        (fh * 0.3) as i64,
    );
    let (rw, rh) = ((fw * 0.2) as i64, (fh * 0.25) as i64);
    let (y, u, v) = p.planes_mut();
    for row in 0..h as usize {
        for col in 0..w as usize {
            let (x, yy) = (col as f64, row as f64);
            let gradient = 40.0 + 140.0 * ((x + shift) / fw + yy / fh) / 2.0;
            let texture = 12.0 * ((x + shift) / (9.0 * k)).sin() * (yy / (7.0 * k)).cos();
            let mut value = gradient + texture;
            let (dx, dy) = (col as i64 - rx, row as i64 - ry);
            if (0..rw).contains(&dx) && (0..rh).contains(&dy) {
                // A checker of 8-sample cells (at the 640 reference), moving with it.
                let cell = ((dx as f64 / (8.0 * k)) as i64 + (dy as f64 / (8.0 * k)) as i64) % 2;
                value = if cell == 0 { 200.0 } else { 60.0 };
            }
            y[row * ys + col] = value.clamp(16.0, 235.0) as u8;
        }
    }
    for row in 0..(h / 2) as usize {
        for col in 0..(w / 2) as usize {
            let (x, yy) = (col as f64 * 2.0, row as f64 * 2.0);
            u[row * uvs + col] = (128.0 + 40.0 * ((x + shift) / fw - 0.5)) as u8;
            v[row * uvs + col] = (128.0 + 40.0 * (yy / fh - 0.5)) as u8;
        }
    }
    p
}

/// [`scene`] with fresh noise of ±`amp` on every luma sample: content no encoder can
/// predict, so it spends whatever bitrate it is given.
fn noisy_scene(w: u32, h: u32, i: u32, amp: i32, rng: &mut XorShift) -> Picture {
    let mut p = scene(w, h, i);
    for s in p.y_mut() {
        let noise = rng.below(2 * amp as u64 + 1) as i32 - amp;
        *s = (i32::from(*s) + noise).clamp(16, 235) as u8;
    }
    p
}

fn config(width: u32, height: u32, bitrate_bps: u32) -> EncoderConfig {
    EncoderConfig {
        width,
        height,
        bitrate_bps,
        max_fps: 30,
        keyframe_interval: 0,
        max_nal_bytes: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Vp8,
    H264,
}

const CODECS: [Codec; 2] = [Codec::Vp8, Codec::H264];

fn encoder(codec: Codec, config: &EncoderConfig) -> Box<dyn VideoEncoder> {
    match codec {
        Codec::Vp8 => Box::new(Vp8Encoder::new(config).unwrap()),
        Codec::H264 => Box::new(H264Encoder::new(config).unwrap()),
    }
}

fn decoder(codec: Codec) -> Box<dyn VideoDecoder> {
    match codec {
        Codec::Vp8 => Box::new(Vp8Decoder::new().unwrap()),
        Codec::H264 => Box::new(H264Decoder::new().unwrap()),
    }
}

/// One encoded frame, owned: its source frame index and whether it is a keyframe.
#[derive(Clone, Debug)]
struct Encoded {
    index: u32,
    data: Vec<u8>,
    keyframe: bool,
}

/// Encodes `sources` at 30 fps (timestamps `i * TICKS`), forcing a keyframe where
/// `force(i)`. Returns the frames the rate control kept and the total encode time.
fn encode_all(
    enc: &mut dyn VideoEncoder,
    sources: &[Picture],
    force: impl Fn(u32) -> bool,
) -> (Vec<Encoded>, Duration) {
    let mut out = Vec::new();
    let mut spent = Duration::ZERO;
    for (i, pic) in (0u32..).zip(sources) {
        let start = Instant::now();
        let frame = enc.encode(pic, i * TICKS, force(i)).unwrap();
        spent += start.elapsed();
        if let Some(f) = frame {
            out.push(Encoded {
                index: i,
                data: f.data.to_vec(),
                keyframe: f.keyframe,
            });
        }
    }
    (out, spent)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The RTP timestamp a frame index was sent with, back to the index.
fn index_of(timestamp: u32) -> usize {
    (timestamp / TICKS) as usize
}

// ---- 1. Quality and speed on moving content -------------------------------------------------

#[test]
fn encode_decode_quality_and_speed() {
    // With camera-like noise (±4), so 1 Mbit/s is a budget to meet, not a formality: the
    // clean scene codes at 47-51 dB.
    let mut rng = XorShift(1);
    let sources: Vec<Picture> = (0..60).map(|i| noisy_scene(W, H, i, 4, &mut rng)).collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 1_000_000));
        let (frames, enc_time) = encode_all(enc.as_mut(), &sources, |_| false);
        let mut dec = decoder(codec);
        let mut out = Picture::new(2, 2).unwrap();
        let mut dec_time = Duration::ZERO;
        let mut psnrs = Vec::new();
        let mut all_planes = Vec::new();
        for f in &frames {
            let start = Instant::now();
            let shown = dec.decode(&f.data, &mut out).unwrap();
            dec_time += start.elapsed();
            assert!(shown, "{codec:?} frame {} produced no picture", f.index);
            assert_eq!(
                (out.width(), out.height()),
                (W, H),
                "{codec:?} frame {}",
                f.index
            );
            psnrs.push(psnr_y(&sources[f.index as usize], &out).unwrap());
            all_planes.push(psnr(&sources[f.index as usize], &out).unwrap());
        }
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
        println!(
            "{codec:?} 640x480 @ 1 Mbit/s: {} of 60 frames coded ({kbps:.0} kbit/s), mean PSNR \
             Y {:.2} dB (min {:.2}), all planes {:.2} dB; encode {:.2} ms/frame, decode {:.2} \
             ms/frame",
            frames.len(),
            mean(&psnrs),
            psnrs.iter().cloned().fold(f64::INFINITY, f64::min),
            mean(&all_planes),
            enc_time.as_secs_f64() * 1000.0 / 60.0,
            dec_time.as_secs_f64() * 1000.0 / frames.len() as f64,
        );
        assert!(
            frames.len() >= 50,
            "{codec:?}: the rate control dropped too many frames"
        );
        assert!(
            frames[0].keyframe,
            "{codec:?}: the first frame must be a keyframe"
        );
        assert!(
            mean(&psnrs) >= 30.0,
            "{codec:?}: mean Y PSNR {:.2} dB",
            mean(&psnrs)
        );
    }
}

// ---- 2. Keyframes on demand -----------------------------------------------------------------

/// `(nal types, profile-level-id)` of an H.264 access unit.
fn h264_nal_types(access_unit: &[u8]) -> Vec<u8> {
    h264::nal_units(access_unit).map(h264::nal_type).collect()
}

#[test]
fn forced_keyframes() {
    let sources: Vec<Picture> = (0..20).map(|i| scene(W, H, i)).collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 1_000_000));
        let (frames, _) = encode_all(enc.as_mut(), &sources, |i| i == 12);
        let keyframes: Vec<u32> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.index)
            .collect();
        println!("{codec:?}: keyframes at {keyframes:?} (forced at 12)");
        assert_eq!(
            keyframes,
            [0, 12],
            "{codec:?}: keyframes only first and when forced"
        );
        for f in &frames {
            match codec {
                Codec::Vp8 => assert_eq!(vp8::is_keyframe(&f.data), f.keyframe),
                Codec::H264 => {
                    let types = h264_nal_types(&f.data);
                    if f.keyframe {
                        // SPS and PPS before the IDR slice(s), every time.
                        assert_eq!(types[..3], [NAL_SPS, 8, NAL_IDR], "frame {}", f.index);
                        assert!(types[2..].iter().all(|&t| t == NAL_IDR));
                    } else {
                        assert!(
                            types.iter().all(|&t| t == 1),
                            "frame {}: {types:?}",
                            f.index
                        );
                    }
                }
            }
        }
        if codec == Codec::H264 {
            // Constrained baseline (profile_idc 66, constraint_set1), level 3.1.
            let sps = h264::nal_units(&frames[0].data).next().unwrap();
            let profile_level_id = format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]);
            println!("H.264 SPS profile-level-id {profile_level_id}");
            assert_eq!(sps[1], 0x42, "profile_idc 66 (baseline)");
            assert_ne!(
                sps[2] & 0x40,
                0,
                "constraint_set1_flag: constrained baseline"
            );
            assert_eq!(sps[3], 0x1f, "level 3.1");
        }
    }
}

#[test]
fn periodic_keyframes() {
    let sources: Vec<Picture> = (0..31).map(|i| scene(W, H, i)).collect();
    for codec in CODECS {
        let mut cfg = config(W, H, 1_000_000);
        cfg.keyframe_interval = 10;
        let mut enc = encoder(codec, &cfg);
        let (frames, _) = encode_all(enc.as_mut(), &sources, |_| false);
        let keyframes: Vec<u32> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.index)
            .collect();
        println!("{codec:?}: keyframes at {keyframes:?} with an interval of 10");
        assert!(keyframes.len() >= 3, "{codec:?}: {keyframes:?}");
        assert!(
            keyframes.windows(2).all(|w| w[1] - w[0] <= 10),
            "{codec:?}: {keyframes:?}"
        );
    }
}

// ---- 3. Through our RTP payload formats -----------------------------------------------------

enum Packetizer {
    Vp8(Vp8Packetizer),
    H264(H264Packetizer),
}

impl Packetizer {
    fn new(codec: Codec) -> Self {
        match codec {
            Codec::Vp8 => Packetizer::Vp8(Vp8Packetizer::new(MAX_PAYLOAD, 1234)),
            Codec::H264 => Packetizer::H264(H264Packetizer::new(
                PacketizationMode::NonInterleaved,
                MAX_PAYLOAD,
            )),
        }
    }

    fn packetize(&mut self, frame: &[u8]) -> Vec<RtpPayload> {
        let mut out = Vec::new();
        match self {
            Packetizer::Vp8(p) => p.packetize(frame, &mut out).unwrap(),
            Packetizer::H264(p) => p.packetize(frame, &mut out).unwrap(),
        };
        out
    }
}

enum Depacketizer {
    Vp8(Vp8Depacketizer),
    H264(H264Depacketizer),
}

impl Depacketizer {
    fn new(codec: Codec) -> Self {
        match codec {
            Codec::Vp8 => Depacketizer::Vp8(Vp8Depacketizer::new()),
            Codec::H264 => Depacketizer::H264(H264Depacketizer::new()),
        }
    }

    fn push(&mut self, seq: u16, ts: u32, p: &RtpPayload) -> Depacketized {
        match self {
            Depacketizer::Vp8(d) => d.push(seq, ts, p.marker, &p.data),
            Depacketizer::H264(d) => d.push(seq, ts, p.marker, &p.data),
        }
    }
}

/// What happened to a run through packetizer, network, depacketizer and decoder.
#[derive(Debug, Default)]
struct RtpRun {
    /// Source index and Y PSNR of every decoded picture.
    decoded: Vec<(usize, f64)>,
    /// Frame indices at which the depacketizer asked for a keyframe.
    requests: Vec<u32>,
    /// Frame indices the encoder made keyframes.
    keyframes: Vec<u32>,
}

/// Encodes `sources`, packetizes each frame, drops the packet `drop` = (frame, packet index)
/// names, depacketizes and decodes. A keyframe request forces the next frame to a keyframe,
/// as a PLI would.
fn rtp_run(codec: Codec, sources: &[Picture], drop: Option<(u32, usize)>) -> RtpRun {
    let mut enc = encoder(codec, &config(W, H, 1_000_000));
    let mut dec = decoder(codec);
    let mut pack = Packetizer::new(codec);
    let mut depack = Depacketizer::new(codec);
    let mut out = Picture::new(2, 2).unwrap();
    let mut run = RtpRun::default();
    let mut seq = 1000u16;
    let mut pli = false;
    for (i, pic) in (0u32..).zip(sources) {
        let ts = i * TICKS;
        let Some(frame) = enc.encode(pic, ts, std::mem::take(&mut pli)).unwrap() else {
            continue;
        };
        if frame.keyframe {
            run.keyframes.push(i);
        }
        let payloads = pack.packetize(frame.data);
        for (k, p) in payloads.iter().enumerate() {
            seq = seq.wrapping_add(1);
            if drop == Some((i, k)) {
                continue;
            }
            match depack.push(seq, ts, p) {
                Depacketized::Frame(f) => {
                    assert!(
                        dec.decode(&f.data, &mut out).unwrap(),
                        "{codec:?} frame {i}"
                    );
                    let index = index_of(f.timestamp);
                    run.decoded
                        .push((index, psnr_y(&sources[index], &out).unwrap()));
                }
                Depacketized::KeyframeNeeded => {
                    run.requests.push(i);
                    pli = true;
                }
                Depacketized::Pending => {}
                Depacketized::Rejected(e) => panic!("{codec:?} frame {i}: rejected {e}"),
            }
        }
    }
    run
}

/// 40 frames of the scene with camera-like noise: delta frames of several packets.
fn rtp_sources() -> Vec<Picture> {
    let mut rng = XorShift(3);
    (0..40).map(|i| noisy_scene(W, H, i, 4, &mut rng)).collect()
}

#[test]
fn through_rtp_payload_formats() {
    let sources = rtp_sources();
    for codec in CODECS {
        let run = rtp_run(codec, &sources, None);
        let psnrs: Vec<f64> = run.decoded.iter().map(|d| d.1).collect();
        println!(
            "{codec:?} via RTP: {} pictures, mean Y PSNR {:.2} dB",
            psnrs.len(),
            mean(&psnrs)
        );
        assert!(
            run.requests.is_empty(),
            "{codec:?}: no loss, no keyframe request"
        );
        assert!(psnrs.len() >= 35, "{codec:?}");
        assert!(mean(&psnrs) >= 30.0, "{codec:?}: {:.2} dB", mean(&psnrs));
    }
}

#[test]
fn through_rtp_with_a_lost_packet() {
    let sources = rtp_sources();
    // Delta frame 15 is sent in several packets (checked below); its second one is lost.
    const LOST: u32 = 15;
    for codec in CODECS {
        let clean = rtp_run(codec, &sources, None);
        let run = rtp_run(codec, &sources, Some((LOST, 1)));
        let decoded: Vec<usize> = run.decoded.iter().map(|d| d.0).collect();
        println!(
            "{codec:?} with packet 1 of frame {LOST} lost: requests at {:?}, keyframes {:?}, \
             decoded {decoded:?}",
            run.requests, run.keyframes
        );
        assert!(
            clean.decoded.iter().any(|d| d.0 == LOST as usize),
            "{codec:?}: frame {LOST} must have been coded"
        );
        // The depacketizer asks once, within the lost frame (or at the next one if the
        // lost packet was its last).
        assert_eq!(run.requests.len(), 1, "{codec:?}: {:?}", run.requests);
        let asked = run.requests[0];
        assert!(
            asked == LOST || asked == LOST + 1,
            "{codec:?}: asked at {asked}"
        );
        // The next frame coded after the request is the forced keyframe.
        let recovery = *run
            .keyframes
            .iter()
            .find(|&&k| k > asked)
            .expect("a keyframe");
        assert!(recovery <= asked + 2, "{codec:?}: keyframe at {recovery}");
        // Nothing between the loss and the keyframe reached the decoder...
        assert!(
            decoded
                .iter()
                .all(|&i| i < LOST as usize || i >= recovery as usize),
            "{codec:?}: a damaged or orphaned frame was decoded: {decoded:?}"
        );
        // ...and everything from the keyframe on did, at full quality.
        let after: Vec<f64> = run
            .decoded
            .iter()
            .filter(|d| d.0 >= recovery as usize)
            .map(|d| d.1)
            .collect();
        assert!(
            after.len() >= 40 - recovery as usize - 3,
            "{codec:?}: {decoded:?}"
        );
        let worst = after.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{codec:?} after recovery: mean {:.2} dB, worst {worst:.2} dB",
            mean(&after)
        );
        assert!(
            mean(&after) >= 30.0,
            "{codec:?}: {:.2} dB after recovery",
            mean(&after)
        );
        assert!(
            worst >= 28.0,
            "{codec:?}: a picture after recovery at {worst:.2} dB"
        );
    }
}

// ---- 4. An independent decoder: ffmpeg --------------------------------------------------------

/// Runs ffmpeg on `path`, returning the decoded raw I420 frames. Fails the test, with a way
/// forward, if ffmpeg cannot run: this check must not pass by being skipped.
fn ffmpeg_decode(path: &Path) -> Vec<u8> {
    // -fps_mode passthrough: one output frame per coded frame. The rawvideo muxer would
    // otherwise get constant frame rate, duplicating frames across gaps the rate control
    // left.
    let args = [
        "-v",
        "error",
        "-i",
        path.to_str().unwrap(),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-",
    ];
    println!("ffmpeg {}", args.join(" "));
    let output = Command::new("ffmpeg")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "ffmpeg could not run ({e}): this test checks our VP8 and H.264 with an \
             independent decoder; install it (Debian: apt-get install ffmpeg) and run again"
            )
        });
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "ffmpeg failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// An IVF file (the container of libvpx's tools): a 32-byte header, then each frame behind
/// its size and timestamp.
fn ivf(frames: &[Encoded], width: u16, height: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"DKIF");
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(b"VP80");
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&90_000u32.to_le_bytes()); // time base denominator
    out.extend_from_slice(&1u32.to_le_bytes()); // time base numerator
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for f in frames {
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&u64::from(f.index * TICKS).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    out
}

#[test]
fn ffmpeg_decodes_what_we_encode() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let sources: Vec<Picture> = (0..30).map(|i| scene(W, H, i)).collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 1_000_000));
        let (frames, _) = encode_all(enc.as_mut(), &sources, |i| i == 20);
        let (path, file) = match codec {
            Codec::Vp8 => (
                dir.join("estuary-video-codec.ivf"),
                ivf(&frames, W as u16, H as u16),
            ),
            Codec::H264 => (
                dir.join("estuary-video-codec.h264"),
                frames.iter().flat_map(|f| f.data.iter().copied()).collect(),
            ),
        };
        std::fs::write(&path, file).unwrap();
        let raw = ffmpeg_decode(&path);
        let frame_len = (W * H * 3 / 2) as usize;
        assert_eq!(
            raw.len() % frame_len,
            0,
            "{codec:?}: ffmpeg output is not whole frames"
        );
        assert_eq!(
            raw.len() / frame_len,
            frames.len(),
            "{codec:?}: frame count"
        );
        let mut decoded = Picture::new(W, H).unwrap();
        let mut psnrs = Vec::new();
        for (f, bytes) in frames.iter().zip(raw.chunks_exact(frame_len)) {
            let (y, rest) = bytes.split_at((W * H) as usize);
            let (u, v) = rest.split_at((W * H / 4) as usize);
            decoded.y_mut().copy_from_slice(y);
            decoded.u_mut().copy_from_slice(u);
            decoded.v_mut().copy_from_slice(v);
            psnrs.push(psnr_y(&sources[f.index as usize], &decoded).unwrap());
        }
        let worst = psnrs.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{codec:?} decoded by ffmpeg: {} frames, mean Y PSNR {:.2} dB, worst {worst:.2} dB",
            psnrs.len(),
            mean(&psnrs)
        );
        assert!(mean(&psnrs) >= 30.0, "{codec:?}: {:.2} dB", mean(&psnrs));
    }
}

// ---- 5. Hostile input -----------------------------------------------------------------------

/// Random and damaged inputs for `codec`'s decoder, built from `frames` (real ones of the
/// same codec) and `other` (real ones of the other codec).
fn hostile_inputs(codec: Codec, frames: &[Encoded], other: &[Encoded]) -> Vec<Vec<u8>> {
    let mut rng = XorShift(0x5eed_0000 + codec as u64);
    let mut inputs = Vec::new();
    // 2,000 random byte strings, a third of them wearing a plausible header so they get
    // past the first checks.
    for n in 0..2000 {
        let len = rng.below(1500) as usize;
        let mut data = rng.bytes(len);
        match (n % 3, codec) {
            (0, _) => {}
            (1, Codec::Vp8) if len >= 10 => {
                // A key frame tag, the start code, and a size up to 640x480 (larger random
                // sizes only cost libvpx allocation time).
                data[0] &= 0xfe;
                data[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                let (w, h) = (rng.below(321) as u16 * 2, rng.below(241) as u16 * 2);
                data[6..8].copy_from_slice(&w.to_le_bytes());
                data[8..10].copy_from_slice(&h.to_le_bytes());
            }
            (2, Codec::Vp8) if len >= 1 => data[0] |= 1, // a delta frame tag
            (_, Codec::H264) => {
                // Start codes and NAL headers of the kinds a decoder acts on.
                let mut au = Vec::new();
                for chunk in data.chunks(1 + rng.below(400) as usize) {
                    let kind = [1u8, 5, 7, 8, 6, 9][rng.below(6) as usize];
                    au.extend_from_slice(&[0, 0, 0, 1, 0x60 | kind]);
                    au.extend_from_slice(chunk);
                }
                data = au;
            }
            _ => {}
        }
        inputs.push(data);
    }
    // Every real frame truncated at many points, and with bytes flipped.
    for f in frames {
        let step = (f.data.len() / 40).max(1);
        for cut in (0..f.data.len()).step_by(step) {
            inputs.push(f.data[..cut].to_vec());
        }
        for _ in 0..20 {
            let mut damaged = f.data.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] ^= 1 << rng.below(8);
            }
            inputs.push(damaged);
        }
    }
    // The other codec's frames.
    inputs.extend(other.iter().map(|f| f.data.clone()));
    inputs
}

#[test]
fn decoders_survive_hostile_input() {
    let sources: Vec<Picture> = (0..6).map(|i| scene(W, H, i)).collect();
    let mut real = Vec::new();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 1_000_000));
        real.push(encode_all(enc.as_mut(), &sources, |_| false).0);
    }
    for (c, codec) in CODECS.into_iter().enumerate() {
        let frames = &real[c];
        let inputs = hostile_inputs(codec, &frames[..4], &real[1 - c]);
        let mut dec = decoder(codec);
        let mut out = Picture::new(2, 2).unwrap();
        let (mut pictures, mut errors) = (0, 0);
        let start = Instant::now();
        for data in &inputs {
            match dec.decode(data, &mut out) {
                Ok(true) => pictures += 1,
                Ok(false) => {}
                Err(_) => errors += 1,
            }
        }
        println!(
            "{codec:?}: {} hostile inputs in {:.0} ms: {pictures} pictures, {errors} errors",
            inputs.len(),
            start.elapsed().as_secs_f64() * 1000.0
        );
        assert!(
            errors > inputs.len() / 2,
            "{codec:?}: garbage must mostly be refused"
        );
        // A valid keyframe decodes again, at full quality.
        let key = &frames[0];
        assert!(key.keyframe);
        assert!(dec.decode(&key.data, &mut out).unwrap(), "{codec:?}");
        assert_eq!((out.width(), out.height()), (W, H));
        let quality = psnr_y(&sources[0], &out).unwrap();
        println!("{codec:?}: keyframe after the garbage: {quality:.2} dB");
        assert!(quality >= 30.0, "{codec:?}: {quality:.2} dB");
        for f in &frames[1..] {
            assert!(
                dec.decode(&f.data, &mut out).unwrap(),
                "{codec:?} frame {}",
                f.index
            );
            assert!(psnr_y(&sources[f.index as usize], &out).unwrap() >= 30.0);
        }
    }
}

#[test]
fn decoders_refuse_the_obvious() {
    let mut out = Picture::new(2, 2).unwrap();
    let mut vp8 = Vp8Decoder::new().unwrap();
    let mut h264 = H264Decoder::new().unwrap();
    assert_eq!(vp8.decode(&[], &mut out), Err(VideoCodecError::Malformed));
    assert_eq!(h264.decode(&[], &mut out), Err(VideoCodecError::Malformed));
    // A VP8 key frame header declaring 16000x16000 is refused before libvpx allocates.
    let mut huge = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    huge.extend_from_slice(&16000u16.to_le_bytes());
    huge.extend_from_slice(&16000u16.to_le_bytes());
    huge.extend_from_slice(&[0; 100]);
    assert_eq!(
        vp8.decode(&huge, &mut out),
        Err(VideoCodecError::InvalidSize {
            width: 16000,
            height: 16000
        })
    );
    // A delta frame with no keyframe before it.
    let sources: Vec<Picture> = (0..2).map(|i| scene(W, H, i)).collect();
    let mut enc = Vp8Encoder::new(&config(W, H, 1_000_000)).unwrap();
    let (frames, _) = encode_all(&mut enc, &sources, |_| false);
    assert_eq!(
        vp8.decode(&frames[1].data, &mut out),
        Err(VideoCodecError::Malformed)
    );

    // H.264 parameter sets alone are no picture; with the IDR that follows they are.
    let mut enc = H264Encoder::new(&config(W, H, 1_000_000)).unwrap();
    let (frames, _) = encode_all(&mut enc, &sources, |_| false);
    let mut parameter_sets = Vec::new();
    for nal in h264::nal_units(&frames[0].data).filter(|n| h264::nal_type(n) != NAL_IDR) {
        parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
        parameter_sets.extend_from_slice(nal);
    }
    assert_eq!(h264::nal_units(&parameter_sets).count(), 2);
    assert_eq!(h264.decode(&parameter_sets, &mut out), Ok(false));
    assert_eq!(h264.decode(&frames[0].data, &mut out), Ok(true));
    // A delta frame with no keyframe before it.
    let mut fresh = H264Decoder::new().unwrap();
    assert_eq!(
        fresh.decode(&frames[1].data, &mut out),
        Err(VideoCodecError::Malformed)
    );
}

#[test]
fn decoders_refuse_what_follows_a_failed_frame() {
    // Frame 1 arrives damaged; frames 2 and 3 predict from it, so no picture may come out
    // until the keyframe at 4.
    let sources: Vec<Picture> = (0..6).map(|i| scene(W, H, i)).collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 1_000_000));
        let (frames, _) = encode_all(enc.as_mut(), &sources, |i| i == 4);
        assert_eq!(frames.len(), 6, "{codec:?}");
        let mut dec = decoder(codec);
        let mut out = Picture::new(2, 2).unwrap();
        assert_eq!(dec.decode(&frames[0].data, &mut out), Ok(true), "{codec:?}");
        let half = &frames[1].data[..frames[1].data.len() / 2];
        assert_eq!(
            dec.decode(half, &mut out),
            Err(VideoCodecError::Malformed),
            "{codec:?}"
        );
        for f in &frames[2..4] {
            let result = dec.decode(&f.data, &mut out);
            assert_eq!(
                result,
                Err(VideoCodecError::Malformed),
                "{codec:?} {}",
                f.index
            );
        }
        for f in &frames[4..] {
            assert_eq!(
                dec.decode(&f.data, &mut out),
                Ok(true),
                "{codec:?} {}",
                f.index
            );
            assert!(psnr_y(&sources[f.index as usize], &out).unwrap() >= 30.0);
        }
    }
}

// ---- 6. Run-time bitrate --------------------------------------------------------------------

#[test]
fn set_bitrate_changes_frame_sizes() {
    let mut rng = XorShift(42);
    let sources: Vec<Picture> = (0..60)
        .map(|i| noisy_scene(W, H, i, 12, &mut rng))
        .collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(W, H, 300_000));
        let (frames, _) = encode_all(enc.as_mut(), &sources[..30], |_| false);
        enc.set_bitrate(2_000_000).unwrap();
        let mut after = Vec::new();
        for (i, pic) in (30u32..).zip(&sources[30..]) {
            if let Some(f) = enc.encode(pic, i * TICKS, false).unwrap() {
                after.push(Encoded {
                    index: i,
                    data: f.data.to_vec(),
                    keyframe: f.keyframe,
                });
            }
        }
        // Delta frames once the rate control has settled, 10 frames after each start.
        let average = |frames: &[Encoded], from: u32| {
            let sizes: Vec<f64> = frames
                .iter()
                .filter(|f| !f.keyframe && f.index >= from)
                .map(|f| f.data.len() as f64)
                .collect();
            (mean(&sizes), sizes.len())
        };
        let (low, n_low) = average(&frames, 10);
        let (high, n_high) = average(&after, 40);
        println!(
            "{codec:?}: 300 kbit/s {low:.0} B/frame ({n_low} frames), then 2 Mbit/s \
             {high:.0} B/frame ({n_high} frames): ratio {:.2}; keyframes after the change: \
             {:?}",
            high / low,
            after
                .iter()
                .filter(|f| f.keyframe)
                .map(|f| f.index)
                .collect::<Vec<_>>()
        );
        assert!(n_low >= 5 && n_high >= 5, "{codec:?}: too few frames coded");
        assert!(high / low > 2.0, "{codec:?}: ratio {:.2}", high / low);
        // The targets themselves: within 50% of 300 kbit/s and 2 Mbit/s at 30 fps.
        assert!(
            (low * 8.0 * 30.0 - 300e3).abs() < 150e3,
            "{codec:?}: {low:.0} B/frame"
        );
        assert!(
            (high * 8.0 * 30.0 - 2e6).abs() < 1e6,
            "{codec:?}: {high:.0} B/frame"
        );
    }
}

// ---- H.264 size-limited slices (packetization mode 0) ----------------------------------------

#[test]
fn h264_nal_units_fit_mode_0() {
    // The brief's case (640x480 at 1.5 Mbit/s, keyframe first), then a heavy one: 5 Mbit/s
    // of noisy content, over a hundred slices per picture.
    for (bps, noise, min_psnr) in [(1_500_000, 6, 30.0), (5_000_000, 40, 20.0)] {
        let mut rng = XorShift(7);
        let sources: Vec<Picture> = (0..8)
            .map(|i| noisy_scene(W, H, i, noise, &mut rng))
            .collect();
        let mut cfg = config(W, H, bps);
        cfg.max_nal_bytes = Some(MAX_PAYLOAD);
        let mut enc = H264Encoder::new(&cfg).unwrap();
        let (frames, _) = encode_all(&mut enc, &sources, |_| false);
        assert!(frames[0].keyframe);
        // Mode 0 refuses any NAL unit over the payload size, so packetizing checks it too.
        let packetizer = H264Packetizer::new(PacketizationMode::SingleNal, MAX_PAYLOAD);
        let mut depack = H264Depacketizer::new();
        let mut dec = H264Decoder::new().unwrap();
        let mut out = Picture::new(2, 2).unwrap();
        let mut seq = 0u16;
        for f in &frames {
            let sizes: Vec<usize> = h264::nal_units(&f.data).map(<[u8]>::len).collect();
            let largest = sizes.iter().max().copied().unwrap_or(0);
            println!(
                "{bps} bit/s, frame {} ({}): {} bytes in {} NAL units, largest {largest}",
                f.index,
                if f.keyframe { "IDR" } else { "P" },
                f.data.len(),
                sizes.len()
            );
            assert!(
                largest <= MAX_PAYLOAD,
                "frame {}: NAL unit of {largest} bytes",
                f.index
            );
            let mut payloads = Vec::new();
            packetizer.packetize(&f.data, &mut payloads).unwrap();
            for p in &payloads {
                seq += 1;
                let ts = f.index * TICKS;
                if let Depacketized::Frame(frame) = depack.push(seq, ts, p.marker, &p.data) {
                    assert!(dec.decode(&frame.data, &mut out).unwrap());
                    let quality = psnr_y(&sources[f.index as usize], &out).unwrap();
                    assert!(quality >= min_psnr, "frame {}: {quality:.2} dB", f.index);
                }
            }
        }
        let keyframe_slices = h264::nal_units(&frames[0].data)
            .filter(|n| h264::nal_type(n) == NAL_IDR)
            .count();
        println!("{bps} bit/s: the keyframe has {keyframe_slices} IDR slices");
        assert!(
            keyframe_slices > 1,
            "the keyframe must have been cut into slices"
        );
    }
}

// ---- 7. Scaling -----------------------------------------------------------------------------

#[test]
fn scaler_round_trip_and_sizes() {
    // Smooth content: the scene without its texture and rectangle, i.e. gradients.
    let mut big = Picture::new(1280, 720).unwrap();
    let (ys, uvs) = (big.y_stride(), big.uv_stride());
    let (y, u, v) = big.planes_mut();
    for row in 0..720 {
        for col in 0..1280 {
            let (x, yy) = (col as f64 / 1280.0, row as f64 / 720.0);
            y[row * ys + col] =
                (30.0 + 150.0 * x * (1.0 - yy) + 40.0 * (6.0 * yy).sin().abs()) as u8;
        }
    }
    for row in 0..360 {
        for col in 0..640 {
            u[row * uvs + col] = (100 + col / 10) as u8;
            v[row * uvs + col] = (160 - row / 6) as u8;
        }
    }
    let mut small = Picture::new(640, 360).unwrap();
    let mut back = Picture::new(1280, 720).unwrap();
    let mut scaler = Scaler::new();
    let start = Instant::now();
    scaler.scale(&big, &mut small);
    let down = start.elapsed();
    scaler.scale(&small, &mut back);
    let (quality_y, quality) = (psnr_y(&big, &back).unwrap(), psnr(&big, &back).unwrap());
    println!(
        "1280x720 -> 640x360 -> 1280x720: Y {quality_y:.2} dB, all planes {quality:.2} dB; \
         downscale {:.1} ms (unoptimised test build)",
        down.as_secs_f64() * 1000.0
    );
    assert!(quality_y >= 40.0, "{quality_y:.2} dB");
    assert!(quality >= 40.0, "{quality:.2} dB");
    // The scene at half size is the half-size scene, give or take the filter.
    let scene_big = scene(1280, 720, 0);
    let mut scene_small = Picture::new(640, 360).unwrap();
    scale_into(&scene_big, &mut scene_small);
    let direct = scene(640, 360, 0);
    let similarity = psnr_y(&direct, &scene_small).unwrap();
    println!("scene scaled to 640x360 against the scene drawn at 640x360: {similarity:.2} dB");
    assert!(similarity >= 20.0, "{similarity:.2} dB");

    // Geometry: shrinking a ramp (value = column) by 4 puts output column i at the centre
    // of source columns 4i..4i+3, i.e. at 4i + 1.5; a half-sample misalignment shows here.
    let mut ramp = Picture::new(256, 8).unwrap();
    let stride = ramp.y_stride();
    for (i, s) in ramp.y_mut().iter_mut().enumerate() {
        *s = (i % stride) as u8;
    }
    let mut quarter = Picture::new(64, 8).unwrap();
    scale_into(&ramp, &mut quarter);
    for (i, &s) in quarter.y()[..63].iter().enumerate().skip(1) {
        let expected = 4.0 * i as f64 + 1.5;
        assert!(
            (f64::from(s) - expected).abs() <= 0.6,
            "column {i}: {s}, not {expected}"
        );
    }

    // Odd, zero and oversized sizes are errors, never panics.
    for (w, h) in [
        (641, 360),
        (640, 361),
        (0, 360),
        (640, 0),
        (MAX_DIMENSION + 2, 360),
    ] {
        assert_eq!(
            Picture::new(w, h).unwrap_err(),
            VideoCodecError::InvalidSize {
                width: w,
                height: h
            }
        );
        assert!(small.resize(w, h).is_err());
        let mut cfg = config(w, h, 1_000_000);
        assert!(Vp8Encoder::new(&cfg).is_err());
        assert!(H264Encoder::new(&cfg).is_err());
        cfg.width = 640;
        cfg.height = 360;
        assert!(Vp8Encoder::new(&cfg).is_ok());
    }
    assert_eq!((small.width(), small.height()), (640, 360));
    assert_eq!(psnr(&big, &small), Err(VideoCodecError::SizeMismatch));
}

#[test]
fn encoders_scale_larger_sources() {
    // A 1280x720 source into encoders configured for 640x360 (what a receiver's level or
    // imageattr might allow).
    let sources: Vec<Picture> = (0..20).map(|i| scene(1280, 720, i)).collect();
    for codec in CODECS {
        let mut enc = encoder(codec, &config(640, 360, 800_000));
        let (frames, _) = encode_all(enc.as_mut(), &sources, |_| false);
        let mut dec = decoder(codec);
        let mut out = Picture::new(2, 2).unwrap();
        let mut expected = Picture::new(640, 360).unwrap();
        let mut psnrs = Vec::new();
        for f in &frames {
            assert!(dec.decode(&f.data, &mut out).unwrap());
            assert_eq!((out.width(), out.height()), (640, 360), "{codec:?}");
            scale_into(&sources[f.index as usize], &mut expected);
            psnrs.push(psnr_y(&expected, &out).unwrap());
        }
        println!(
            "{codec:?} 1280x720 scaled to 640x360: mean Y PSNR {:.2} dB",
            mean(&psnrs)
        );
        assert!(mean(&psnrs) >= 30.0, "{codec:?}: {:.2} dB", mean(&psnrs));
    }
}

#[test]
fn invalid_encoder_configs_are_errors() {
    let good = config(W, H, 1_000_000);
    let mut bad = Vec::new();
    let mut c = good.clone();
    c.bitrate_bps = 0;
    bad.push(c);
    let mut c = good.clone();
    c.max_fps = 0;
    bad.push(c);
    for c in &bad {
        assert!(matches!(
            Vp8Encoder::new(c),
            Err(VideoCodecError::InvalidConfig(_))
        ));
        assert!(matches!(
            H264Encoder::new(c),
            Err(VideoCodecError::InvalidConfig(_))
        ));
    }
    let mut c = good.clone();
    c.max_nal_bytes = Some(10);
    assert!(matches!(
        H264Encoder::new(&c),
        Err(VideoCodecError::InvalidConfig(_))
    ));
    let mut vp8 = Vp8Encoder::new(&good).unwrap();
    assert!(vp8.set_bitrate(0).is_err());
    assert_eq!(vp8.config().bitrate_bps, 1_000_000);
}

#[test]
fn codecs_can_move_to_a_worker_thread() {
    // The pool runs each channel on a worker thread: every codec must be Send.
    fn assert_send<T: Send>() {}
    assert_send::<Vp8Encoder>();
    assert_send::<Vp8Decoder>();
    assert_send::<H264Encoder>();
    assert_send::<H264Decoder>();
    assert_send::<Picture>();
    assert_send::<Scaler>();
}
