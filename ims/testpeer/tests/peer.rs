//! The built-in test peer on a virtual clock: what a gateway sends it and what it must answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_rtp::{Pt, RtpHeader, RtpPacket, SeqNo, Ssrc};
use estuary_sip::{Message, Response};
use estuary_testpeer::{Behaviour, CallMedia, MediaPorts, Output, PeerConfig, TestPeer, VideoEcho, VideoStream, VideoUpdate};
use estuary_transcoder::Law;

const GW: &str = "127.0.0.1:5080";

struct Ports(u16);
impl MediaPorts for Ports {
    fn open(&mut self) -> Option<u16> {
        self.0 += 2;
        Some(self.0)
    }
}

struct Harness {
    now: Instant,
    peer: TestPeer,
    ports: Ports,
    sip: Vec<Message>,
    media: Vec<(u16, Box<CallMedia>)>,
    stops: Vec<u16>,
    updates: Vec<(u16, estuary_testpeer::Stream)>,
    /// Video echoes started (at the answer or by a re-offer): (call's audio port, video port).
    videos: Vec<(u16, u16, Box<VideoEcho>)>,
    /// Every video change a MediaUpdate carried, by the call's audio port.
    video_updates: Vec<(u16, Seen)>,
}

/// A MediaUpdate's video change as the harness saw it (a started echo goes to `videos`).
#[derive(Debug, PartialEq)]
enum Seen {
    Unchanged,
    Start(u16),
    Stream(VideoStream),
    Stop(u16),
}

impl Harness {
    fn new() -> Harness {
        Harness {
            now: Instant::now(),
            peer: TestPeer::new(PeerConfig::new("127.0.0.1:5999".parse().unwrap()), 7),
            ports: Ports(40000),
            sip: Vec::new(),
            media: Vec::new(),
            stops: Vec::new(),
            updates: Vec::new(),
            videos: Vec::new(),
            video_updates: Vec::new(),
        }
    }

    fn drain(&mut self) -> Vec<Message> {
        let mut sent = Vec::new();
        while let Some(o) = self.peer.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    assert_eq!(to, GW.parse::<SocketAddr>().unwrap());
                    let m = Message::parse(&data).unwrap_or_else(|e| panic!("peer sent unparseable SIP ({e:?}):\n{}", String::from_utf8_lossy(&data)));
                    sent.push(m.clone());
                    self.sip.push(m);
                }
                Output::MediaStart { port, media, video } => {
                    self.media.push((port, media));
                    if let Some(v) = video {
                        self.videos.push((port, v.port, v.echo));
                    }
                }
                Output::MediaStop { port } => self.stops.push(port),
                Output::MediaUpdate { port, stream, video } => {
                    self.updates.push((port, stream));
                    let seen = match video {
                        VideoUpdate::Unchanged => Seen::Unchanged,
                        VideoUpdate::Start(v) => {
                            self.videos.push((port, v.port, v.echo));
                            Seen::Start(v.port)
                        }
                        VideoUpdate::Stream(s) => Seen::Stream(s),
                        VideoUpdate::Stop { port } => Seen::Stop(port),
                    };
                    self.video_updates.push((port, seen));
                }
            }
        }
        sent
    }

    fn send(&mut self, text: &str) -> Vec<Message> {
        let data = text.replace('\n', "\r\n");
        self.peer.handle_sip(self.now, GW.parse().unwrap(), data.as_bytes(), &mut self.ports);
        self.drain()
    }

    fn tick(&mut self, d: Duration) -> Vec<Message> {
        let end = self.now + d;
        let mut sent = Vec::new();
        while let Some(t) = self.peer.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.peer.handle_timeout(self.now);
            sent.extend(self.drain());
        }
        self.now = end;
        sent
    }
}

fn resp(m: &Message) -> &Response {
    match m {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {:?}", r.method),
    }
}

fn codes(msgs: &[Message]) -> Vec<u16> {
    msgs.iter().filter_map(|m| if let Message::Response(r) = m { Some(r.code) } else { None }).collect()
}

const OFFER: &str = "v=0\no=gw 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 30002 RTP/AVP 0 8 101\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=sendrecv\n";

fn invite(user: &str, call_id: &str, branch: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:{user}@ims.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: <sip:alice@ims.test>;tag=gw1\nTo: <sip:{user}@ims.test>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:gw@127.0.0.1:5080>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        sdp.replace('\n', "\r\n").len(),
        sdp
    )
}

fn in_dialog(method: &str, call_id: &str, to_tag: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:echo@127.0.0.1:5999 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: <sip:alice@ims.test>;tag=gw1\nTo: <sip:echo@ims.test>;tag={to_tag}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"
    )
}

fn to_tag(r: &Response) -> String {
    r.headers.to().unwrap().tag().unwrap().to_owned()
}

#[test]
fn register_is_accepted_with_the_contact_and_its_expiry() {
    let mut h = Harness::new();
    let out = h.send("REGISTER sip:ims.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr1\nMax-Forwards: 70\nFrom: <sip:alice@ims.test>;tag=r1\nTo: <sip:alice@ims.test>\nCall-ID: reg1\nCSeq: 1 REGISTER\nContact: <sip:alice@127.0.0.1:5080;ob>;expires=600\nContent-Length: 0\n\n");
    assert_eq!(codes(&out), [200]);
    let r = resp(&out[0]);
    assert_eq!(r.headers.get("Contact"), Some("<sip:alice@127.0.0.1:5080;ob>;expires=600"));
    assert_eq!(r.headers.get("P-Associated-URI"), Some("<sip:alice@ims.test>"));
    // A retransmission gets the same answer, not a second registration.
    let again = h.send("REGISTER sip:ims.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr1\nMax-Forwards: 70\nFrom: <sip:alice@ims.test>;tag=r1\nTo: <sip:alice@ims.test>\nCall-ID: reg1\nCSeq: 1 REGISTER\nContact: <sip:alice@127.0.0.1:5080;ob>;expires=600\nContent-Length: 0\n\n");
    assert_eq!(again, out);
}

#[test]
fn echo_call_answers_pcmu_and_sends_back_what_it_gets_as_its_own_stream() {
    let mut h = Harness::new();
    let out = h.send(&invite("echo", "c1", "i1", OFFER));
    assert_eq!(codes(&out), [100, 180, 200]);
    let ok = resp(&out[2]);
    let body = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(body.contains("m=audio 40002 RTP/AVP 0 101\r\n"), "{body}");
    assert!(body.contains("a=rtpmap:0 PCMU/8000\r\n") && body.contains("a=rtcp:40002\r\n"), "{body}");
    assert_eq!(ok.headers.get("Contact"), Some("<sip:echo@127.0.0.1:5999>"));
    assert_eq!(h.media.len(), 1);
    let (port, media) = &mut h.media[0];
    assert_eq!((*port, media.behaviour()), (40002, Behaviour::Echo));

    // The gateway's RTP comes back from the peer's own SSRC with its own continuous numbering.
    let gw: SocketAddr = "127.0.0.1:30002".parse().unwrap();
    let mut seqs = Vec::new();
    for i in 0..5u16 {
        let mut buf = [0u8; 256];
        let hdr = RtpHeader { marker: i == 0, pt: Pt(0), seq: SeqNo(1000 + i), timestamp: 5000 + 160 * u32::from(i), ssrc: Ssrc(0xabcd) };
        let len = hdr.write_with_payload(&[0x55; 160], &mut buf).unwrap();
        let (to, n) = media.handle_datagram(gw, &mut buf, len).expect("echoed");
        assert_eq!((to, n), (gw, len));
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_ne!(p.ssrc(), Ssrc(0xabcd));
        assert_eq!(p.payload(), &[0x55; 160][..]);
        seqs.push((p.seq().0, p.timestamp()));
    }
    for w in seqs.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1));
        assert_eq!(w[1].1, w[0].1.wrapping_add(160), "timestamp spacing kept");
    }
    // RTCP on the same port is consumed.
    let mut rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
    assert_eq!(media.handle_datagram(gw, &mut rr, 8), None);

    // 2xx retransmitted until ACK, then quiet.
    let tag = to_tag(ok);
    let re = h.tick(Duration::from_millis(1600));
    assert_eq!(codes(&re), [200, 200], "T1, 2*T1 retransmissions of the 200");
    h.send(&in_dialog("ACK", "c1", &tag, 1, "a1"));
    assert!(h.tick(Duration::from_secs(10)).is_empty());
    // BYE ends it and stops the media.
    let out = h.send(&in_dialog("BYE", "c1", &tag, 2, "b1"));
    assert_eq!(codes(&out), [200]);
    assert_eq!(h.stops, [40002]);
    assert_eq!(h.peer.active_calls(), 0);
}

#[test]
fn tone_is_1khz_at_minus_10_dbfs_every_20ms_in_the_negotiated_law() {
    let mut h = Harness::new();
    let pcma = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 8 101");
    let out = h.send(&invite("tone", "c2", "i2", &pcma));
    assert_eq!(codes(&out), [100, 180, 200]);
    let (_, media) = &mut h.media[0];
    assert_eq!(media.behaviour(), Behaviour::Tone);
    let start = h.now;
    // The driver learns when to start from the deadline alone.
    assert_eq!(media.poll_timeout(), Some(start), "the first tone packet is due at the answer");
    let mut now = start;
    let mut packets = Vec::new();
    let mut buf = [0u8; 256];
    // One simulated second driven by the media's own deadlines.
    while now < start + Duration::from_secs(1) {
        if let Some((to, n)) = media.poll_transmit(now, &mut buf) {
            assert_eq!(to, "127.0.0.1:30002".parse::<SocketAddr>().unwrap());
            packets.push(buf[..n].to_vec());
        }
        now = media.poll_timeout().unwrap().max(now + Duration::from_micros(1));
    }
    assert!((49..=51).contains(&packets.len()), "{} packets in 1 s", packets.len());
    let mut pcm = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let p = RtpPacket::parse(p).unwrap();
        assert_eq!(p.pt(), Pt(8));
        assert_eq!(p.marker(), i == 0);
        assert_eq!(p.payload().len(), 160);
        let mut s = [0i16; 160];
        Law::A.decode(p.payload(), &mut s);
        pcm.extend_from_slice(&s);
    }
    // Frequency: 2 zero crossings per period -> 2000 per second at 1 kHz.
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64 / (pcm.len() as f64 / 8000.0);
    assert!((1990.0..=2010.0).contains(&crossings), "{crossings} zero crossings/s");
    // Level: RMS of a sine at -10 dBFS peak is -13 dBFS.
    let rms = (pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    let dbfs = 20.0 * (rms / 32768.0).log10();
    assert!((-13.5..=-12.5).contains(&dbfs), "{dbfs:.2} dBFS RMS");
}

#[test]
fn unknown_users_and_codecs_are_refused() {
    let mut h = Harness::new();
    let out = h.send(&invite("nobody", "c3", "i3", OFFER));
    assert_eq!(codes(&out), [100, 404]);
    let opus = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 111").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2");
    let out = h.send(&invite("echo", "c4", "i4", &opus));
    assert_eq!(codes(&out), [100, 180, 488]);
    assert!(resp(&out[2]).headers.get("Warning").is_some_and(|w| w.contains("PCMU or PCMA")));
    let savp = OFFER.replace("RTP/AVP", "RTP/SAVP");
    assert_eq!(codes(&h.send(&invite("echo", "c5", "i5", &savp))), [100, 180, 488]);
    assert!(h.media.is_empty(), "no media for refused calls");
    assert_eq!(h.peer.active_calls(), 0);
}

#[test]
fn ring_rings_until_cancel() {
    let mut h = Harness::new();
    let out = h.send(&invite("ring", "c6", "i6", OFFER));
    assert_eq!(codes(&out), [100, 180]);
    assert!(h.tick(Duration::from_secs(30)).is_empty(), "no answer, no retransmitted 180");
    let cancel = "CANCEL sip:ring@ims.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKi6\nMax-Forwards: 70\nFrom: <sip:alice@ims.test>;tag=gw1\nTo: <sip:ring@ims.test>\nCall-ID: c6\nCSeq: 1 CANCEL\nContent-Length: 0\n\n";
    let out = h.send(cancel);
    assert_eq!(codes(&out), [200, 487]);
    assert_eq!(h.peer.active_calls(), 0);
    // A CANCEL for nothing.
    assert_eq!(codes(&h.send(&cancel.replace("Call-ID: c6", "Call-ID: zz").replace("bKi6", "bKz6"))), [481]);
}

#[test]
fn an_unacknowledged_200_ends_the_call_with_bye() {
    let mut h = Harness::new();
    let out = h.send(&invite("echo", "c7", "i7", OFFER));
    let tag = to_tag(resp(&out[2]));
    let later = h.tick(Duration::from_secs(40));
    let bye = later.iter().find_map(|m| if let Message::Request(r) = m { Some(r) } else { None }).expect("BYE after 64*T1 without ACK");
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(bye.uri.to_string(), "sip:gw@127.0.0.1:5080", "to the INVITE's Contact");
    assert!(bye.headers.get("From").unwrap().contains(&format!("tag={tag}")));
    assert_eq!(h.stops, [40002]);
    assert_eq!(h.peer.active_calls(), 0);
}

#[test]
fn delayed_offer_and_hold() {
    let mut h = Harness::new();
    let out = h.send(&invite("echo", "c8", "i8", ""));
    assert_eq!(codes(&out), [100, 180, 200]);
    let ok = resp(&out[2]);
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 40002 RTP/AVP 0 8 101"), "our offer");
    let tag = to_tag(ok);
    let ack = in_dialog("ACK", "c8", &tag, 1, "a8").replace("Content-Length: 0\n\n", "");
    let answer = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 8");
    h.send(&format!("{ack}Content-Type: application/sdp\nContent-Length: {}\n\n{answer}", answer.replace('\n', "\r\n").len()));
    assert_eq!(h.updates.len(), 1);
    assert_eq!((h.updates[0].1.pt, h.updates[0].1.law), (8, Law::A));
    // Hold: a sendonly re-INVITE is answered recvonly and the peer stops sending.
    let held = OFFER.replace("a=sendrecv", "a=sendonly");
    let reinvite = in_dialog("INVITE", "c8", &tag, 2, "r8").replace("Content-Length: 0\n\n", "");
    let out = h.send(&format!("{reinvite}Content-Type: application/sdp\nContent-Length: {}\n\n{held}", held.replace('\n', "\r\n").len()));
    assert_eq!(codes(&out), [200]);
    assert!(String::from_utf8_lossy(&resp(&out[0]).body).contains("a=recvonly"));
    assert!(String::from_utf8_lossy(&resp(&out[0]).body).contains("o=estuary-testpeer ") , "version bumped");
    assert!(!h.updates.last().unwrap().1.send);
}

#[test]
fn garbage_never_panics_and_broken_requests_get_400() {
    let mut h = Harness::new();
    let good = invite("echo", "c9", "i9", &format!("{OFFER}{VIDEO}"));
    for cut in 0..good.len() {
        h.peer.handle_sip(h.now, GW.parse().unwrap(), &good.as_bytes()[..cut], &mut h.ports);
        h.drain();
    }
    let mut x: u64 = 0x1234_5678;
    for _ in 0..2000 {
        let mut bytes = good.clone().into_bytes();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bytes.len();
            bytes[i] = (x >> 32) as u8;
        }
        h.peer.handle_sip(h.now, GW.parse().unwrap(), &bytes, &mut h.ports);
        h.drain();
    }
    let out = h.send("OPTIONS sip:ims.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKo1\nFrom: <sip:a@ims.test>;tag=1\nTo: <sip:ims.test>\nCall-ID: o1\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    assert_eq!(codes(&out), [400], "CSeq method mismatch");
}

/// The gateway's offer for a VP8-only browser's video: H.264 in two payload types, packetization
/// mode 0 listed first, so the peer must look for mode 1 rather than take the first.
const VIDEO: &str = "m=video 30004 RTP/AVP 97 96\na=rtpmap:97 H264/90000\na=fmtp:97 profile-level-id=42e01f;packetization-mode=0\na=rtpmap:96 H264/90000\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\na=sendrecv\n";

fn with_sdp(request: &str, sdp: &str) -> String {
    format!("{}Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}", request.replace("Content-Length: 0\n\n", ""), sdp.replace('\n', "\r\n").len())
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&resp(m).body).into_owned()
}

/// The `m=video` section of an SDP body.
fn video_section(sdp: &str) -> &str {
    sdp.find("m=video").map_or("", |i| &sdp[i..])
}

/// A video RTP packet from the gateway, with a header extension and a CSRC (theirs, not to be
/// echoed), into `buf`; returns its length.
fn video_packet(buf: &mut [u8], seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> usize {
    // V=2, X=1, CC=1.
    buf[0] = 0x91;
    buf[1] = u8::from(marker) << 7 | 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..16].copy_from_slice(&0xc5c5_c5c5u32.to_be_bytes());
    // One-byte-header extension, one word.
    buf[16..24].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    buf[24..24 + payload.len()].copy_from_slice(payload);
    24 + payload.len()
}

#[test]
fn echo_call_answers_h264_video_on_a_second_port_and_echoes_it_as_its_own_stream() {
    let mut h = Harness::new();
    let out = h.send(&invite("echo", "v1", "iv1", &format!("{OFFER}{VIDEO}")));
    assert_eq!(codes(&out), [100, 180, 200]);
    let sdp = body(&out[2]);
    assert!(sdp.contains("m=audio 40002 RTP/AVP 0 101\r\n"), "{sdp}");
    let video = video_section(&sdp);
    assert!(video.starts_with("m=video 40004 RTP/AVP 96\r\n"), "H.264 with packetization-mode 1 only, on its own port: {sdp}");
    assert!(video.contains("a=rtpmap:96 H264/90000\r\n") && !video.contains("97"), "{sdp}");
    assert!(video.contains("a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n"), "{sdp}");
    assert!(video.contains("a=rtcp:40004\r\n") && video.contains("a=sendrecv\r\n"), "{sdp}");
    assert_eq!(h.media.len(), 1, "one task for the call");
    assert_eq!(h.videos.len(), 1);
    let (call_port, video_port, echo) = &mut h.videos[0];
    assert_eq!((*call_port, *video_port), (40002, 40004));
    assert_eq!(echo.stream(), VideoStream { remote: Some("127.0.0.1:30004".parse().unwrap()), pt: 96, send: true });

    // Every packet comes back to where it came from, from our SSRC, our numbering, our clock.
    let gw: SocketAddr = "127.0.0.1:30050".parse().unwrap();
    let frame = [0x65u8; 900];
    let mut echoed = Vec::new();
    for i in 0..6u16 {
        let mut buf = [0u8; 2048];
        // Two packets per frame, 3000 ticks (30 fps) apart.
        let ts = 0xffff_f000u32.wrapping_add(3000 * u32::from(i / 2));
        let len = video_packet(&mut buf, 65534u16.wrapping_add(i), ts, 0xabcd, i % 2 == 1, &frame);
        let (to, n) = echo.handle_datagram(gw, &mut buf, len).expect("echoed");
        assert_eq!(to, gw, "symmetric RTP: back to the source");
        assert_eq!(n, 12 + frame.len(), "our fixed header and their payload only");
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!((p.ssrc(), p.csrc_count(), p.has_extension(), p.pt()), (echo.ssrc(), 0, false, Pt(96)));
        assert_eq!(p.marker(), i % 2 == 1, "the frame boundary is kept");
        assert_eq!(p.payload(), &frame[..]);
        echoed.push((p.seq().0, p.timestamp()));
    }
    assert_ne!(echo.ssrc(), Ssrc(0xabcd));
    for (i, w) in echoed.windows(2).enumerate() {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "our own continuous sequence numbers");
        let step = if i % 2 == 1 { 3000 } else { 0 };
        assert_eq!(w[1].1, w[0].1.wrapping_add(step), "timestamp spacing kept across the wrap");
    }
    // A new source (the gateway's encoder restarted) goes on in our timeline, no jump back.
    let mut buf = [0u8; 2048];
    let len = video_packet(&mut buf, 7, 123, 0x1234, true, &frame);
    let (_, n) = echo.handle_datagram(gw, &mut buf, len).expect("echoed");
    let p = RtpPacket::parse(&buf[..n]).unwrap();
    assert_eq!((p.seq().0, p.timestamp()), (echoed[5].0.wrapping_add(1), echoed[5].1.wrapping_add(3000)));
    // RTCP (a PLI here) and garbage are dropped.
    let mut pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0xab, 0xcd];
    assert_eq!(echo.handle_datagram(gw, &mut pli, 12), None);
    for len in 0..12 {
        let mut short = [0x80u8; 12];
        assert_eq!(echo.handle_datagram(gw, &mut short, len), None, "shorter than an RTP header");
    }
    assert_eq!(echo.handle_datagram(gw, &mut [0x40u8; 20], 20), None, "not RTP version 2");
    assert_eq!(echo.handle_datagram(gw, &mut [0u8; 4], 100), None, "a length past the buffer");
    assert_eq!(echo.sent, 7);

    // BYE ends the call: one stop for its task, which owns both sockets.
    let tag = to_tag(resp(&out[2]));
    h.send(&in_dialog("ACK", "v1", &tag, 1, "av1"));
    assert_eq!(codes(&h.send(&in_dialog("BYE", "v1", &tag, 2, "bv1"))), [200]);
    assert_eq!(h.stops, [40002]);
}

#[test]
fn video_is_refused_without_h264_and_on_calls_other_than_echo() {
    let mut h = Harness::new();
    let vp8 = "m=video 30004 RTP/AVP 120\na=rtpmap:120 VP8/90000\na=sendrecv\n";
    let out = h.send(&invite("echo", "v2", "iv2", &format!("{OFFER}{vp8}")));
    assert_eq!(codes(&out), [100, 180, 200], "the call goes on with audio");
    assert!(video_section(&body(&out[2])).starts_with("m=video 0 RTP/AVP 120\r\n"), "{}", body(&out[2]));
    let out = h.send(&invite("tone", "v3", "iv3", &format!("{OFFER}{VIDEO}")));
    assert_eq!(codes(&out), [100, 180, 200]);
    assert!(video_section(&body(&out[2])).starts_with("m=video 0 "), "a tone has no video: {}", body(&out[2]));
    let savp = VIDEO.replace("RTP/AVP", "RTP/SAVP");
    let out = h.send(&invite("echo", "v4", "iv4", &format!("{OFFER}{savp}")));
    assert!(video_section(&body(&out[2])).starts_with("m=video 0 "), "no SRTP keys: {}", body(&out[2]));
    assert!(h.videos.is_empty());
    assert_eq!(h.media.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [40002, 40004, 40006], "one port per call");
}

#[test]
fn a_reoffer_adds_video_changes_its_direction_and_removes_it() {
    let mut h = Harness::new();
    let out = h.send(&invite("echo", "v5", "iv5", OFFER));
    let tag = to_tag(resp(&out[2]));
    h.send(&in_dialog("ACK", "v5", &tag, 1, "av5"));
    assert!(h.videos.is_empty());

    // The Video button: a re-INVITE with the camera.
    let reinvite = |cseq: u32, sdp: &str| with_sdp(&in_dialog("INVITE", "v5", &tag, cseq, &format!("r{cseq}")), sdp);
    let out = h.send(&reinvite(2, &format!("{OFFER}{VIDEO}")));
    assert_eq!(codes(&out), [200]);
    let sdp = body(&out[0]);
    assert!(sdp.contains("m=audio 40002 ") && video_section(&sdp).starts_with("m=video 40004 RTP/AVP 96\r\n"), "{sdp}");
    assert_eq!(h.video_updates.last(), Some(&(40002, Seen::Start(40004))), "the call's task gets the video socket");
    assert_eq!(h.videos.len(), 1);
    h.send(&in_dialog("ACK", "v5", &tag, 2, "a2"));

    // The same video, now only sent by the gateway: answered recvonly, the echo stops sending.
    let out = h.send(&reinvite(3, &format!("{OFFER}{}", VIDEO.replace("a=sendrecv", "a=sendonly"))));
    let sdp = body(&out[0]);
    assert!(video_section(&sdp).starts_with("m=video 40004 ") && video_section(&sdp).contains("a=recvonly\r\n"), "{sdp}");
    let stream = VideoStream { remote: Some("127.0.0.1:30004".parse().unwrap()), pt: 96, send: false };
    assert_eq!(h.video_updates.last(), Some(&(40002, Seen::Stream(stream))));
    let (_, _, echo) = &mut h.videos[0];
    echo.set_stream(stream);
    let mut buf = [0u8; 64];
    let len = video_packet(&mut buf, 1, 1, 1, true, &[1, 2, 3]);
    assert_eq!(echo.handle_datagram("127.0.0.1:30004".parse().unwrap(), &mut buf, len), None, "the far end does not want it");
    h.send(&in_dialog("ACK", "v5", &tag, 3, "a3"));

    // Camera off by UPDATE with video port 0: the echo stops and its socket closes.
    let removed = format!("{OFFER}{}", VIDEO.replace("m=video 30004", "m=video 0"));
    let out = h.send(&with_sdp(&in_dialog("UPDATE", "v5", &tag, 4, "u4"), &removed));
    assert_eq!(codes(&out), [200]);
    assert!(video_section(&body(&out[0])).starts_with("m=video 0 "), "{}", body(&out[0]));
    assert_eq!(h.video_updates.last(), Some(&(40002, Seen::Stop(40004))));
    // An audio-only re-offer after that changes nothing for video.
    h.send(&reinvite(5, OFFER));
    assert_eq!(h.video_updates.last(), Some(&(40002, Seen::Unchanged)));
    h.send(&in_dialog("ACK", "v5", &tag, 5, "a5"));

    // Camera on again: a new socket.
    let out = h.send(&reinvite(6, &format!("{OFFER}{VIDEO}")));
    assert!(video_section(&body(&out[0])).starts_with("m=video 40006 "), "{}", body(&out[0]));
    assert_eq!(h.video_updates.last(), Some(&(40002, Seen::Start(40006))));
    h.send(&in_dialog("ACK", "v5", &tag, 6, "a6"));
    assert_eq!(codes(&h.send(&in_dialog("BYE", "v5", &tag, 7, "b7"))), [200]);
    assert_eq!(h.stops, [40002], "the call's task, and both its sockets, end");
}

#[test]
fn no_port_for_video_refuses_only_the_video() {
    struct OnePort(Option<u16>);
    impl MediaPorts for OnePort {
        fn open(&mut self) -> Option<u16> {
            self.0.take()
        }
    }
    let mut peer = TestPeer::new(PeerConfig::new("127.0.0.1:5999".parse().unwrap()), 7);
    let data = invite("echo", "v6", "iv6", &format!("{OFFER}{VIDEO}")).replace('\n', "\r\n");
    peer.handle_sip(Instant::now(), GW.parse().unwrap(), data.as_bytes(), &mut OnePort(Some(41000)));
    let mut ok = None;
    while let Some(o) = peer.poll_output() {
        match o {
            Output::Transmit { data, .. } => ok = Some(String::from_utf8_lossy(&data).into_owned()),
            Output::MediaStart { port, video, .. } => assert_eq!((port, video.is_none()), (41000, true)),
            other => panic!("{other:?}"),
        }
    }
    let ok = ok.unwrap();
    assert!(ok.starts_with("SIP/2.0 200") && ok.contains("m=audio 41000 ") && ok.contains("m=video 0 "), "{ok}");
}
