//! `diameter`: Diameter messages per second per core through the codec and the peer, for a
//! typical initial Rx AAR (encode + decode) and its AAA.
//!
//! 1. The codec: the initial AAR of one call as the P-CSCF sends it (built by
//!    [`RxClient::start`]: an audio and a video component, each with one IP flow and Codec-Data
//!    for offer and answer, a SIP URI subscription, a framed IPv4 address, the ICID), encoded
//!    (`Message::to_bytes`, one exactly sized buffer per message as the peer's transmit queue
//!    does), decoded alone (`Message::decode`: the header and the top-level AVPs; grouped
//!    AVPs stay raw), and decoded then validated with [`rx_validator`] (which walks every
//!    grouped AVP against the dictionary and the AAR's required AVPs), as a peer does with a
//!    request it receives.
//! 2. The peer: two [`Peer`]s back to back in memory, an initiator (the P-CSCF) and a
//!    [`Peer::accept`] responder (the PCRF), both advertising [`RX_APPLICATION`] and
//!    validating with [`rx_validator`]. After CER/CEA, each round trip is: a copy of the AAR
//!    (`send_request` takes it by value) through `send_request`, its bytes into the
//!    responder's `handle_bytes` (framing, decode, validation), `PeerEvent::Request`, an AAA
//!    through `send_answer` (the answer the TEST
//!    FACILITY `Pcrf` gives, built with the message API so that the PCRF's bookkeeping stays
//!    out of the figure: Session-Id, Auth-Application-Id, Origin-Host, Origin-Realm,
//!    Result-Code 2001), its bytes into the initiator's `handle_bytes` (framing, decode,
//!    Hop-by-Hop matching), `PeerEvent::Answer`, and the AAA validated with [`rx_validator`]
//!    as `RxClient::handle_answer` does (the peer itself does not validate answers). Two
//!    messages, each encoded, decoded and validated once. Time in the engines is virtual:
//!    `now` advances 2 µs per round trip, and due timers are handed to `handle_timeout`.
//!
//! Everything runs on one thread, so the figures are per core. Each measurement is timed on
//! this thread's CPU clock (what the work cost, whatever else the shared machine is doing,
//! as `video` does) and on the wall clock; a warm-up round comes first, then
//! `BENCH_DIAMETER_ROUNDS` rounds, and the median round by CPU time gives the figure. The
//! bench fails (exit 1) when a decoded AAR differs from the one encoded, when a round trip
//! yields anything but one request at the PCRF and one answer for that request at the
//! P-CSCF, or when the AAA is not a valid 2001.
//!
//! Environment: `BENCH_DIAMETER_ITERS` (iterations per round: messages for each codec
//! measurement, round trips for the peer; 150,000), `BENCH_DIAMETER_ROUNDS` (5), `BENCH_OUT`
//! (`target/bench/diameter.json`).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use estuary_bench::{env_or, print_table, write_json};
use estuary_diameter::dictionary as dict;
use estuary_diameter::message::{application, command};
use estuary_diameter::{result_code, Avp, Message, Peer, PeerConfig, PeerEvent, Transmit, Validator};
use estuary_rx::pcrf::Pcrf;
use estuary_rx::{
    codec_data, rx_validator, Bandwidth, CallKey, Direction, IpFlow, MediaComponent, MediaType, RxClient, RxConfig, SdpRole, SdpSource,
    SessionParams, Subscription, SubscriptionKind, RX_APPLICATION,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const AF_HOST: &str = "pcscf1.ims.mnc001.mcc001.3gppnetwork.org";
const AF_REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";
const PCRF_HOST: &str = "pcrf1.epc.mnc001.mcc001.3gppnetwork.org";
const PCRF_REALM: &str = "epc.mnc001.mcc001.3gppnetwork.org";
/// Unix seconds for the End-to-End identifiers and the Session-Id counter.
const START_TIME: u64 = 1_765_000_000;
/// Virtual time per peer round trip.
const STEP: Duration = Duration::from_micros(2);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diameter: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One timed round.
#[derive(Clone, Copy, Debug)]
struct Round {
    cpu: Duration,
    wall: Duration,
}

/// What one measurement gave: the median round by CPU time, and every round's CPU and wall
/// time for the JSON.
#[derive(Clone, Debug)]
struct Measured {
    median: Round,
    rounds: Vec<Round>,
}

impl Measured {
    /// Operations per CPU-second in the median round.
    fn per_s(&self, ops: u64) -> f64 {
        ops as f64 / self.median.cpu.as_secs_f64().max(1e-12)
    }

    /// CPU nanoseconds per operation in the median round.
    fn ns_per(&self, ops: u64) -> f64 {
        self.median.cpu.as_secs_f64() * 1e9 / ops.max(1) as f64
    }

    fn json(&self, ops: u64) -> serde_json::Value {
        serde_json::json!({
            "ns_per_op": self.ns_per(ops),
            "rounds_cpu_ms": self.rounds.iter().map(|r| r.cpu.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "rounds_wall_ms": self.rounds.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        })
    }
}

/// Runs `round(iters)` once as a warm-up with a tenth of the iterations, then `rounds` times
/// timed.
fn measure(rounds: usize, iters: u64, mut round: impl FnMut(u64) -> Result<(), String>) -> Result<Measured, String> {
    round((iters / 10).max(1))?;
    let mut timed = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (cpu0, wall0) = (thread_cpu(), Instant::now());
        round(iters)?;
        timed.push(Round { cpu: thread_cpu() - cpu0, wall: wall0.elapsed() });
    }
    let mut sorted = timed.clone();
    sorted.sort_by_key(|r| r.cpu);
    Ok(Measured { median: sorted[sorted.len() / 2], rounds: timed })
}

fn sa(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// One media component with one flow and the browser's offer and the network's answer as
/// Codec-Data.
fn component(number: u32, media_type: MediaType, bandwidth: u32, flow: IpFlow, offer: &[&str], answer: &[&str]) -> Result<MediaComponent, String> {
    let cd = |source, role, lines: &[&str]| codec_data(source, role, lines.iter().copied()).map_err(|e| e.to_string());
    Ok(MediaComponent {
        number,
        media_type,
        direction: Direction::SendRecv,
        bandwidth: Bandwidth { ul: Some(bandwidth), dl: Some(bandwidth) },
        codec_data: vec![cd(SdpSource::Uplink, SdpRole::Offer, offer)?, cd(SdpSource::Downlink, SdpRole::Answer, answer)?],
        flows: vec![flow],
        removed: false,
    })
}

/// The initial AAR of a browser's audio + video call, as the P-CSCF's `RxClient` builds it.
fn typical_aar() -> Result<Message, String> {
    let ue: IpAddr = "203.0.113.57".parse().map_err(|e| format!("{e}"))?;
    let audio = component(
        1,
        MediaType::Audio,
        64_000,
        IpFlow::udp(sa("203.0.113.57:51234")?, sa("198.51.100.10:40000")?),
        &[
            "m=audio 51234 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:63 red/48000/2",
            "a=rtpmap:9 G722/8000",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:13 CN/8000",
            "a=rtpmap:110 telephone-event/48000",
            "a=rtpmap:126 telephone-event/8000",
            "a=ptime:20",
            "a=sendrecv",
        ],
        &["m=audio 40000 UDP/TLS/RTP/SAVPF 111 110", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:110 telephone-event/48000", "a=ptime:20"],
    )?;
    let video = component(
        2,
        MediaType::Video,
        1_500_000,
        IpFlow::udp(sa("203.0.113.57:51236")?, sa("198.51.100.10:40002")?),
        &[
            "m=video 51236 UDP/TLS/RTP/SAVPF 96 97 102 103",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack pli",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
            "a=rtpmap:102 H264/90000",
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            "a=rtpmap:103 rtx/90000",
            "a=fmtp:103 apt=102",
        ],
        &["m=video 40002 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack pli"],
    )?;
    let params = SessionParams {
        af_charging_id: "pcscf1-2f9c1d7e5a3b4c60-000000000042".to_string(),
        subscription: Some(Subscription { kind: SubscriptionKind::SipUri, data: "sip:+15551234567@ims.mnc001.mcc001.3gppnetwork.org".to_string() }),
        framed_ip: ue,
        af_application_id: None,
        components: vec![audio, video],
        service_urn: None,
    };
    let mut rx = RxClient::new(RxConfig::new(AF_HOST, AF_REALM, PCRF_REALM), START_TIME << 32);
    // The engine's `now`: only the AAR's answer deadline reads it.
    let now = Instant::now();
    rx.start(now, CallKey(42), params).map_err(|e| format!("RxClient::start: {e}"))?;
    let (_, aar) = rx.poll_request().ok_or("RxClient::start queued no AAR")?;
    Ok(aar)
}

/// The AAA the TEST FACILITY `Pcrf` gives to a successful initial AAR, without its session
/// bookkeeping.
fn aaa_for(aar: &Message) -> Message {
    Message::answer_to(aar)
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::identity(dict::ORIGIN_HOST, PCRF_HOST))
        .with(Avp::identity(dict::ORIGIN_REALM, PCRF_REALM))
        .with(Avp::unsigned32(dict::RESULT_CODE, result_code::SUCCESS))
}

/// The codec checks: the AAR survives encode + decode unchanged, re-encodes to the same
/// bytes and validates; the AAA built here has the same AVPs as the `Pcrf`'s.
fn check_codec(aar: &Message, bytes: &[u8], validator: &Validator) -> Result<(), String> {
    if aar.command_code != command::AA || aar.application_id != application::RX || !aar.is_request() {
        return Err(format!("not an Rx AAR: command {} application {}", aar.command_code, aar.application_id));
    }
    let decoded = Message::decode(bytes).map_err(|e| format!("the AAR does not decode: {e}"))?;
    if &decoded != aar {
        return Err("the decoded AAR differs from the one encoded".into());
    }
    let again = decoded.to_bytes().map_err(|e| format!("the decoded AAR does not encode: {e}"))?;
    if again != bytes {
        return Err("the decoded AAR re-encodes to other bytes".into());
    }
    validator.validate(&decoded).map_err(|r| format!("the AAR fails validation: {} {}", r.result_code, r.error_message))?;
    let reference = Pcrf::new(PCRF_HOST, PCRF_REALM).handle_request(&decoded).ok_or("the Pcrf did not answer the AAR")?;
    if reference.result_code() != Some(result_code::SUCCESS) {
        return Err(format!("the Pcrf answered the AAR with {:?}", reference.result_code()));
    }
    let keys = |m: &Message| {
        let mut k: Vec<(u32, Option<u32>)> = m.avps.iter().map(|a| (a.code, a.vendor)).collect();
        k.sort_unstable();
        k
    };
    if keys(&reference) != keys(&aaa_for(aar)) {
        return Err(format!("the bench's AAA is not shaped like the Pcrf's: {:?} vs {:?}", keys(&aaa_for(aar)), keys(&reference)));
    }
    Ok(())
}

/// An Rx peer configuration: the application advertised, the Rx rules validated.
fn peer_config(host: &str, realm: &str, ip: &str) -> Result<PeerConfig, String> {
    let mut c = PeerConfig::new(host, realm);
    c.host_ip_addresses.push(ip.parse().map_err(|e| format!("{ip}: {e}"))?);
    c.applications.push(RX_APPLICATION);
    c.validator = rx_validator();
    Ok(c)
}

/// The P-CSCF's initiator and the PCRF's responder, wired in memory on a virtual clock.
struct BackToBack {
    now: Instant,
    client: Peer,
    server: Peer,
    validator: Validator,
    round_trips: u64,
}

impl BackToBack {
    /// Both peers, with CER/CEA done.
    fn open() -> Result<BackToBack, String> {
        let mut rng = StdRng::seed_from_u64(0x0d1a_3e7e);
        // The origin of the peers' virtual time; the clock is not read for them again.
        let now = Instant::now();
        let mut client = Peer::new(peer_config(AF_HOST, AF_REALM, "198.51.100.10")?, START_TIME, &mut rng);
        let server = Peer::accept(peer_config(PCRF_HOST, PCRF_REALM, "192.0.2.20")?, START_TIME, &mut rng, now);
        client.connect(now);
        if client.poll_transmit() != Some(Transmit::Connect) {
            return Err("the initiator did not ask to connect".into());
        }
        client.handle_connected(now);
        let mut b = BackToBack { now, client, server, validator: rx_validator(), round_trips: 0 };
        b.shuttle()?;
        let up = |p: &mut Peer, who: &str| match p.poll_event() {
            Some(PeerEvent::Up(_)) if p.is_open() => Ok(()),
            other => Err(format!("{who}: expected Up after CER/CEA, got {other:?}")),
        };
        up(&mut b.client, "P-CSCF peer")?;
        up(&mut b.server, "PCRF peer")?;
        Ok(b)
    }

    /// Moves bytes both ways until neither peer has anything to send.
    fn shuttle(&mut self) -> Result<(), String> {
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Bytes(bytes) => self.server.handle_bytes(now, &bytes),
                    other => return Err(format!("P-CSCF peer: unexpected {other:?}")),
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Bytes(bytes) => self.client.handle_bytes(now, &bytes),
                    other => return Err(format!("PCRF peer: unexpected {other:?}")),
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// One AAR/AAA round trip, checked.
    fn round_trip(&mut self, aar: &Message) -> Result<(), String> {
        let now = self.now;
        let id = self.client.send_request(now, aar.clone()).map_err(|e| format!("send_request: {e}"))?;
        let mut requests = 0;
        let mut answers = 0;
        // The AAR's bytes to the PCRF, then (after its answer) the AAA's bytes back; anything
        // a timer queued (DWR/DWA) rides along.
        self.shuttle()?;
        while let Some(event) = self.server.poll_event() {
            match event {
                PeerEvent::Request(request) => {
                    requests += 1;
                    if request.command_code != command::AA || request.session_id() != aar.session_id() {
                        return Err(format!("the PCRF peer got the wrong request: command {} session {:?}", request.command_code, request.session_id()));
                    }
                    self.server.send_answer(now, aaa_for(&request)).map_err(|e| format!("send_answer: {e}"))?;
                }
                other => return Err(format!("PCRF peer: unexpected event {other:?}")),
            }
        }
        self.shuttle()?;
        while let Some(event) = self.client.poll_event() {
            match event {
                PeerEvent::Answer { id: answered, answer } => {
                    answers += 1;
                    if answered != id || answer.command_code != command::AA || answer.session_id() != aar.session_id() {
                        return Err(format!("answer {answered:?} to request {id:?}: command {} session {:?}", answer.command_code, answer.session_id()));
                    }
                    // What RxClient::handle_answer does first.
                    self.validator.validate(&answer).map_err(|r| format!("the AAA fails validation: {} {}", r.result_code, r.error_message))?;
                    if answer.flags.error || answer.result_code() != Some(result_code::SUCCESS) {
                        return Err(format!("the AAA carries Result-Code {:?}", answer.result_code()));
                    }
                }
                other => return Err(format!("P-CSCF peer: unexpected event {other:?}")),
            }
        }
        if requests != 1 || answers != 1 {
            return Err(format!("round trip {}: {requests} requests at the PCRF, {answers} answers at the P-CSCF", self.round_trips + 1));
        }
        self.round_trips += 1;
        self.now += STEP;
        for peer in [&mut self.client, &mut self.server] {
            if peer.poll_timeout().is_some_and(|at| at <= self.now) {
                peer.handle_timeout(self.now);
            }
        }
        Ok(())
    }
}

/// The CPU model, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_default()
}

fn run() -> Result<(), String> {
    let iters: u64 = env_or("BENCH_DIAMETER_ITERS", 150_000)?;
    let rounds: usize = env_or("BENCH_DIAMETER_ROUNDS", 5)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/diameter.json"))?;
    if iters == 0 || rounds == 0 {
        return Err("BENCH_DIAMETER_ITERS and BENCH_DIAMETER_ROUNDS must be at least 1".into());
    }

    // 1. The codec.
    let aar = typical_aar()?;
    let bytes = aar.to_bytes().map_err(|e| format!("the AAR does not encode: {e}"))?;
    let validator = rx_validator();
    check_codec(&aar, &bytes, &validator)?;

    let encode = measure(rounds, iters, |n| {
        let mut len = 0;
        for _ in 0..n {
            let b = black_box(&aar).to_bytes().map_err(|e| e.to_string())?;
            len = black_box(b).len();
        }
        if len != bytes.len() {
            return Err(format!("encoded {len} bytes, expected {}", bytes.len()));
        }
        Ok(())
    })?;
    let decode = measure(rounds, iters, |n| {
        let mut last = None;
        for _ in 0..n {
            last = Some(black_box(Message::decode(black_box(&bytes)).map_err(|e| e.to_string())?));
        }
        if last.as_ref() != Some(&aar) {
            return Err("the decoded AAR differs from the one encoded".into());
        }
        Ok(())
    })?;
    let decode_validate = measure(rounds, iters, |n| {
        let mut last = None;
        for _ in 0..n {
            let m = Message::decode(black_box(&bytes)).map_err(|e| e.to_string())?;
            let accepted = validator.validate(&m).map_err(|r| format!("the AAR fails validation: {} {}", r.result_code, r.error_message))?;
            black_box(accepted);
            last = Some(black_box(m));
        }
        if last.as_ref() != Some(&aar) {
            return Err("the decoded AAR differs from the one encoded".into());
        }
        Ok(())
    })?;

    // 2. The peers.
    let mut b2b = BackToBack::open()?;
    let peer = measure(rounds, iters, |n| {
        for _ in 0..n {
            b2b.round_trip(black_box(&aar))?;
        }
        Ok(())
    })?;
    let expected = iters / 10 + rounds as u64 * iters;
    if b2b.round_trips != expected || b2b.client.pending_requests() != 0 {
        return Err(format!("{} round trips of {expected}, {} requests still pending", b2b.round_trips, b2b.client.pending_requests()));
    }

    let aaa_bytes = aaa_for(&aar).to_bytes().map_err(|e| e.to_string())?.len();
    let encode_per_s = encode.per_s(iters);
    let decode_per_s = decode.per_s(iters);
    let decode_validate_per_s = decode_validate.per_s(iters);
    // One message encoded and decoded + validated.
    let codec_messages_per_s = 1.0 / (1.0 / encode_per_s + 1.0 / decode_validate_per_s);
    let peer_round_trips_per_s = peer.per_s(iters);
    let peer_messages_per_s = 2.0 * peer_round_trips_per_s;
    let wall: f64 = [&encode, &decode, &decode_validate, &peer].iter().flat_map(|m| m.rounds.iter()).map(|r| r.wall.as_secs_f64()).sum();
    let cpu: f64 = [&encode, &decode, &decode_validate, &peer].iter().flat_map(|m| m.rounds.iter()).map(|r| r.cpu.as_secs_f64()).sum();
    let model = cpu_model();

    print_table(
        "Diameter Rx AAR through the codec and the peer (one core, CPU time, median of rounds)",
        &[
            ("aar_bytes", format!("{} ({} AVPs at top level; the AAA {aaa_bytes} bytes)", bytes.len(), aar.avps.len())),
            ("encode_per_s", format!("{encode_per_s:.0} ({:.2} µs per AAR)", encode.ns_per(iters) / 1e3)),
            ("decode_per_s", format!("{decode_per_s:.0} ({:.2} µs per AAR, top-level AVPs only)", decode.ns_per(iters) / 1e3)),
            ("decode_validate_per_s", format!("{decode_validate_per_s:.0} ({:.2} µs per AAR, with rx_validator)", decode_validate.ns_per(iters) / 1e3)),
            ("codec_messages_per_s", format!("{codec_messages_per_s:.0} (encode + decode + validate of one AAR)")),
            ("peer_round_trips_per_s", format!("{peer_round_trips_per_s:.0} ({:.2} µs per AAR/AAA through both peers)", peer.ns_per(iters) / 1e3)),
            ("peer_messages_per_s", format!("{peer_messages_per_s:.0} (2 per round trip)")),
            ("iterations", format!("{iters} per round, {rounds} rounds after a warm-up of {}", iters / 10)),
            ("wall / CPU", format!("{:.2} (above 1: the thread waited for a core)", wall / cpu.max(1e-12))),
            ("cpu_model", model.clone()),
        ],
    );
    let json = serde_json::json!({
        "aar_bytes": bytes.len(),
        "aaa_bytes": aaa_bytes,
        "encode_per_s": encode_per_s,
        "decode_per_s": decode_per_s,
        "decode_validate_per_s": decode_validate_per_s,
        "codec_messages_per_s": codec_messages_per_s,
        "peer_round_trips_per_s": peer_round_trips_per_s,
        "peer_messages_per_s": peer_messages_per_s,
        "iterations": iters,
        "rounds": rounds,
        "timing": "thread CPU time, median round",
        "wall_over_cpu": wall / cpu.max(1e-12),
        "cpu_model": model,
        "detail": {
            "encode": encode.json(iters),
            "decode": decode.json(iters),
            "decode_validate": decode_validate.json(iters),
            "peer_round_trip": peer.json(iters),
        },
    });
    write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}
