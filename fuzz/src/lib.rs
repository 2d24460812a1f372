//! Fuzz entry points for every Estuary parser that reads untrusted bytes (STYLE R11).
//!
//! One plain function per target, `fn NAME(data: &[u8])`: it drives the public API of one
//! crate with the bytes and checks the invariants that are cheap to check (a parsed message
//! prints and parses again, lengths agree, an engine only emits what it can itself parse). A
//! panic is a bug. The libFuzzer binaries in `fuzz_targets/` are one line each around these
//! functions; `tests/seeds.rs` calls the same functions on stable over the seed corpus, the
//! saved regressions and a bounded deterministic mutation pass, so `make test` needs no
//! nightly.
//!
//! Nothing here reads the wall clock except [`epoch`], a fixed origin for the engines'
//! `Instant`s: every deadline is an offset from it, so a run depends on the bytes alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The origin of every virtual clock in this crate. `Instant` has no constructor but `now`, so
/// it is read once; engines only ever see offsets from it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)] // The one clock read, fixed for the process.
    *EPOCH.get_or_init(Instant::now)
}

/// `ESTUARY_FUZZ_TRACE=1` prints what the b2bua target feeds and what the engine sends, to
/// read a crash input or check that a seed gets as far as it should.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("ESTUARY_FUZZ_TRACE").is_some())
}

fn addr(s: &str) -> SocketAddr {
    // Only called with the literals in this file.
    s.parse().expect("literal socket address")
}

/// Splits `data` in up to `max` pieces on `sep`.
fn pieces(data: &[u8], sep: u8, max: usize) -> impl Iterator<Item = &[u8]> {
    data.splitn(max, move |&b| b == sep)
}

// ---------------------------------------------------------------------------------------------
// sip_message

/// SIP syntax: [`estuary_sip::Message::parse`], the typed header accessors, print and
/// re-parse, the 400/505 salvage of unparseable requests, and the stream framer fed the same
/// bytes in chunks whose size the first byte picks.
pub fn sip_message(data: &[u8]) {
    use estuary_sip::{
        response_to, salvage_for_400, salvage_response, Frame, Message, NameAddr, StreamFramer,
        Uri, Via,
    };

    // The stream framer: chunk boundaries anywhere, every frame parsed as a datagram would be.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut framer = StreamFramer::new(16 * 1024);
    let mut framed = 0;
    for part in data.chunks(chunk) {
        framer.push(part);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    assert!(m.len() <= 16 * 1024 + 4, "frame above the size limit");
                    framed += m.len();
                    let _ = Message::parse(&m);
                }
                Ok(Some(Frame::Ping)) => framed += 4,
                Ok(None) => break,
                // A framing error ends the stream, as the transport closes it.
                Err(_) => break,
            }
        }
        assert!(
            framed <= data.len(),
            "framer produced more than it was given"
        );
    }

    let msg = match Message::parse(data) {
        Ok(msg) => msg,
        Err(err) => {
            // The answers to a broken request must themselves be valid responses.
            if let Some(r) = salvage_for_400(data) {
                assert_eq!(r.code, 400);
                Message::parse(&r.to_bytes()).expect("salvaged 400 does not parse");
            }
            if let Some(r) = salvage_response(data) {
                assert_eq!(
                    Some(r.code),
                    err.status_code(),
                    "salvage disagrees with parse"
                );
                Message::parse(&r.to_bytes()).expect("salvaged response does not parse");
            }
            return;
        }
    };
    let valid = msg.validate().is_ok();
    let h = msg.headers();
    let _ = (
        h.call_id(),
        h.cseq(),
        h.from(),
        h.to(),
        h.vias(),
        h.top_via(),
    );
    let _ = (
        h.max_forwards(),
        h.contacts(),
        h.record_routes(),
        h.routes(),
        h.paths(),
    );
    let _ = (h.content_length(), h.expires(), h.content_type());
    for header in h.iter() {
        let _ = (NameAddr::parse(&header.value), Uri::parse(&header.value));
        let _ = Via::parse(&header.value);
    }
    if !valid {
        // A request failing validation is answered with its error's status.
        let _ = salvage_response(data);
    }

    let printed = msg.to_bytes();
    let again = match Message::parse(&printed) {
        Ok(m) => m,
        Err(e) => panic!("printed message does not parse again: {e}"),
    };
    assert_eq!(again.body(), msg.body(), "body changed by print/parse");
    assert_eq!(
        again.validate().is_ok(),
        valid,
        "validity changed by print/parse"
    );
    assert_eq!(again.to_bytes(), printed, "printing is not a fixed point");
    if let Message::Request(req) = &msg {
        for code in [100, 400, 481] {
            let r = response_to(req, code, "Fuzz");
            Message::parse(&r.to_bytes()).expect("response_to output does not parse");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sdp

/// A port allocator that always has ports: web 40000, IMS 30000, 30002, ...
struct Ports(u16);

impl estuary_sdp::PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(40000)
    }
    fn ims_port(&mut self, _index: usize) -> Option<u16> {
        self.0 = self.0.wrapping_add(2);
        Some(self.0)
    }
}

/// SDP: [`estuary_sdp::parse::parse`] and print, then an offer from each side through a fresh
/// [`estuary_sdp::SdpSession`]; when the offer is taken, the same bytes come back as the answer
/// from the other side, and a second offer (a re-offer) from the same side.
pub fn sdp(data: &[u8]) {
    use estuary_sdp::{parse, SdpPolicy, SdpSession, Side};

    if let Ok(sd) = parse::parse(data) {
        let printed = parse::print(&sd);
        parse::parse(printed.as_bytes()).expect("printed SDP does not parse again");
    }
    for (from, other) in [(Side::Web, Side::Ims), (Side::Ims, Side::Web)] {
        let mut session = SdpSession::new(SdpPolicy::default(), 0x5EED, estuary_keys::KeySource::os());
        let mut ports = Ports(30000);
        let Ok(out) = session.offer(from, data, &mut ports) else {
            continue;
        };
        // What the gateway writes, it can read.
        parse::parse(out.as_bytes()).expect("gateway offer does not parse");
        assert_eq!(session.pending_offer(), Some(from));
        if let Ok(answer) = session.answer(other, data) {
            parse::parse(answer.as_bytes()).expect("gateway answer does not parse");
            let _ = session.plan().map(|p| p.to_string());
            let _ = session.offered_codecs();
            if let Ok(out) = session.offer(from, data, &mut ports) {
                parse::parse(out.as_bytes()).expect("gateway re-offer does not parse");
            }
        } else {
            session.reject_pending();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stun

/// The RFC 5769 §2.1 request's credentials, so the vector (a seed) authenticates: the
/// USERNAME `evtj:h6vY` is `<our ufrag>:<their ufrag>`, signed with our password.
const STUN_LOCAL_UFRAG: &str = "evtj";
const STUN_REMOTE_UFRAG: &str = "h6vY";
const STUN_PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// ICE-lite and STUN: the bytes, split on `0xFE` into up to 8 datagrams, arrive at an agent
/// that knows both sides' credentials, from one of two browser addresses, with the clock moving
/// by a few seconds between them. Every answer goes back where its request came from, is STUN,
/// and echoes the transaction id.
pub fn stun(data: &[u8]) {
    use estuary_ice::{is_stun, Credentials, IceConfig, IceError, IceLite, Input, Output};

    let local = Credentials::new(STUN_LOCAL_UFRAG, STUN_PWD).expect("valid ice-chars");
    let remote =
        Credentials::new(STUN_REMOTE_UFRAG, "browserPasswordOf24+/abc").expect("valid ice-chars");
    let mut config = IceConfig::new(local);
    config.remote = Some(remote);
    let mut now = epoch();
    let mut ice = IceLite::new(config, now);
    let gw = addr("203.0.113.10:40000");
    let sources = [addr("198.51.100.7:50000"), addr("[2001:db8::7]:50001")];

    for (i, datagram) in pieces(data, 0xFE, 8).enumerate() {
        // The whole input first, then its pieces: the whole is what a seed file holds.
        let source = sources[i % 2];
        let input = Input::Receive {
            local: gw,
            source,
            data: datagram,
        };
        match ice.handle_input(now, input) {
            Ok(()) => assert!(is_stun(datagram), "accepted a non-STUN datagram"),
            Err(IceError::NotStun) => assert!(!is_stun(datagram), "refused a STUN datagram"),
        }
        while let Some(out) = ice.poll_output() {
            if let Output::Transmit(t) = out {
                assert_eq!((t.from, t.to), (gw, source), "answer not symmetric");
                assert!(is_stun(&t.data), "answer is not STUN");
                assert_eq!(
                    t.data.get(8..20),
                    datagram.get(8..20),
                    "transaction id changed"
                );
            }
        }
        if ice.selected().is_some() {
            let _ = ice.is_consented(source);
        }
        // Let the timers run now and then: consent and initial timeouts, teardown.
        now += Duration::from_secs(u64::from(datagram.len() as u8 % 8) * 4);
        while ice.poll_timeout().is_some_and(|t| t <= now) {
            ice.handle_timeout(now);
            while ice.poll_output().is_some() {}
        }
    }
    let _ = (ice.state(), ice.counters());
}

// ---------------------------------------------------------------------------------------------
// rtp_rtcp

/// RTP and RTCP syntax: [`estuary_rtp::RtpPacket`] with its header extension elements and the
/// header rewrite round trip, the RTCP compound walk with every packet type's accessors, the
/// RFC 7983 classifier, RFC 4733 telephone events and their rescaling between clocks.
pub fn rtp_rtcp(data: &[u8]) {
    use estuary_rtp::rtcp::{Compound, RtcpPacket};
    use estuary_rtp::{
        classify, rescale_telephone_event, strip_extension, ClockRate, PacketKind, RtpHeader,
        RtpPacket, TelephoneEvent, TimestampScaler,
    };

    let kind = classify(data);
    if matches!(kind, PacketKind::Rtp | PacketKind::Rtcp) {
        assert!(
            data.len() >= 2 && data[0] >> 6 == 2,
            "classified as RTP/RTCP: {kind:?}"
        );
    }

    if let Ok(p) = RtpPacket::parse(data) {
        assert_eq!(p.version(), 2);
        let header_len = p.header_len();
        let range = p.payload_range();
        assert!(
            header_len <= range.start && range.end <= data.len(),
            "payload out of packet"
        );
        assert_eq!(
            range.end + p.padding_len(),
            data.len(),
            "payload + padding != packet"
        );
        assert_eq!(p.payload(), &data[range.clone()]);
        assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
        if let Some(ext) = p.extension() {
            let _ = (ext.profile(), ext.form(), ext.data().len());
            for e in ext.elements().take(256) {
                let Ok(e) = e else { break };
                assert!(ext.find(e.id).is_some(), "element not found by its id");
            }
        }
        // Rewriting the fixed header and the payload into a fresh buffer gives a packet that
        // parses to the same header.
        let header = RtpHeader::of(&p);
        let mut buf = vec![0u8; data.len() + 64];
        if let Ok(n) = header.write_with_payload(p.payload(), &mut buf) {
            let q = RtpPacket::parse(&buf[..n]).expect("written RTP does not parse");
            assert_eq!(
                (q.seq(), q.timestamp(), q.ssrc()),
                (p.seq(), p.timestamp(), p.ssrc())
            );
            assert_eq!(q.payload(), p.payload());
        }
        let mut copy = data.to_vec();
        if let Ok(n) = strip_extension(&mut copy) {
            let q = RtpPacket::parse(&copy[..n]).expect("stripped RTP does not parse");
            assert!(q.extension().is_none());
            assert_eq!(q.payload(), p.payload());
        }
        let _ = TelephoneEvent::parse(p.payload());
    }

    for (from, to) in [(48_000, 8_000), (8_000, 48_000), (8_000, 16_000)] {
        let mut scaler = TimestampScaler::new(ClockRate(from), ClockRate(to));
        let mut copy = data.to_vec();
        if let Ok(ev) = rescale_telephone_event(&mut copy, &mut scaler) {
            assert_eq!(copy.len(), data.len(), "rescaling changed the length");
            let _ = ev.end;
        }
    }

    // Every packet of a compound, each accessor walked to its end.
    for packet in Compound::new(data).take(1024) {
        let Ok(packet) = packet else { break };
        let _ = packet.packet_type();
        match packet {
            RtcpPacket::SenderReport(sr) => {
                let _ = (sr.info(), sr.ssrc(), sr.profile_extension().len());
                let _ = sr.report_blocks().count();
            }
            RtcpPacket::ReceiverReport(rr) => {
                let _ = (
                    rr.ssrc(),
                    rr.report_blocks().count(),
                    rr.profile_extension().len(),
                );
            }
            RtcpPacket::Sdes(sdes) => {
                let _ = sdes.cname();
                for chunk in sdes.chunks().take(64) {
                    let _ = chunk.items().take(256).count();
                }
            }
            RtcpPacket::Bye(bye) => {
                let _ = (bye.ssrcs().count(), bye.reason());
            }
            RtcpPacket::Nack(nack) => {
                let _ = nack.pairs().count();
                let _ = nack.lost().take(1 << 16).count();
            }
            RtcpPacket::Fir(fir) => {
                let _ = fir.entries().count();
            }
            RtcpPacket::TransportCc(fb) | RtcpPacket::Afb(fb) => {
                let _ = fb.remb().map(|r| r.ssrcs().count());
            }
            RtcpPacket::Tmmbr(t) | RtcpPacket::Tmmbn(t) => {
                let _ = t.entries().count();
            }
            RtcpPacket::App(_) | RtcpPacket::Pli(_) | RtcpPacket::Other(_) => {}
        }
    }
    let _ = Compound::is_reduced_size(data);
}

// ---------------------------------------------------------------------------------------------
// sdes_fingerprint

/// SDES and DTLS fingerprints: [`estuary_srtp::CryptoAttribute`] and
/// [`estuary_srtp::Fingerprint`] (and the SDP crate's own `a=crypto`/`a=fingerprint` readers)
/// over the bytes as text, each printed and re-parsed; then SRTP/SRTCP unprotect of the bytes
/// under a fixed key of each profile (authentication fails, the length, version, replay and
/// trailer checks before it run), and a protect/unprotect round trip of the bytes as RTP.
pub fn sdes_fingerprint(data: &[u8]) {
    use estuary_srtp::{CryptoAttribute, Fingerprint, SrtpContext, SrtpMasterKey, SrtpProfile};

    let text = String::from_utf8_lossy(data);
    for line in text.lines().take(16) {
        if let Ok(c) = CryptoAttribute::parse(line) {
            let printed = c.to_string();
            let again = CryptoAttribute::parse(&printed).expect("printed a=crypto does not parse");
            assert_eq!(again, c, "a=crypto changed by print/parse");
            if let Ok(mut ctx) = c.context() {
                let mut p = data.to_vec();
                let _ = ctx.unprotect_rtp(&mut p);
            }
        }
        if let Ok(f) = Fingerprint::parse(line) {
            assert_eq!(f.value().len(), f.hash_function().output_len());
            let again = Fingerprint::parse(&f.to_string()).expect("printed fingerprint");
            assert_eq!(again, f, "fingerprint changed by print/parse");
            let _ = f.matches(data);
        }
        if let Ok(c) = estuary_sdp::Crypto::parse(line) {
            estuary_sdp::Crypto::parse(&c.to_string()).expect("printed sdp Crypto");
        }
        if let Ok(f) = estuary_sdp::Fingerprint::parse(line) {
            estuary_sdp::Fingerprint::parse(&f.to_string()).expect("printed sdp Fingerprint");
        }
    }

    for profile in SrtpProfile::ALL {
        let key = vec![0x2b; profile.master_key_len()];
        let salt = vec![0x4c; profile.master_salt_len()];
        let master = SrtpMasterKey::new(profile, &key, &salt).expect("right lengths");
        let mut rx = SrtpContext::new(&master);
        let mut p = data.to_vec();
        if rx.unprotect_rtp(&mut p).is_ok() {
            assert!(p.len() < data.len());
        }
        let mut p = data.to_vec();
        if rx.unprotect_rtcp(&mut p).is_ok() {
            assert!(p.len() < data.len());
        }
        // Round trip: what we protect, the peer's context unprotects to the same bytes.
        let mut tx = SrtpContext::new(&master);
        let mut rx = SrtpContext::new(&master);
        let mut p = data.to_vec();
        if tx.protect_rtp(&mut p).is_ok() {
            assert_eq!(p.len(), data.len() + profile.rtp_overhead());
            rx.unprotect_rtp(&mut p)
                .expect("own SRTP does not unprotect");
            assert_eq!(p, data, "SRTP round trip changed the packet");
        }
        let mut p = data.to_vec();
        if tx.protect_rtcp(&mut p).is_ok() {
            rx.unprotect_rtcp(&mut p)
                .expect("own SRTCP does not unprotect");
            assert_eq!(p, data, "SRTCP round trip changed the packet");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pcap

/// Captures: [`estuary_pcap::CaptureReader`] over the bytes (classic pcap or pcapng, any byte
/// order), every record decoded and classified, TCP reassembled and WebSocket-deframed per
/// connection; then the bytes as a raw stream into both kinds of [`estuary_pcap::WsStream`].
pub fn pcap(data: &[u8]) {
    use estuary_pcap::{
        classify, decode, CaptureReader, FlowClassifier, LinkType, Protocol, TcpReassembler,
        WsConnection, WsDirection, WsStream,
    };

    if let Ok(mut reader) = CaptureReader::new(data) {
        let mut tcp = TcpReassembler::new();
        let mut flows = FlowClassifier::new();
        let mut ws: HashMap<(SocketAddr, SocketAddr), WsConnection> = HashMap::new();
        let drain = |tcp: &mut TcpReassembler, ws: &mut HashMap<_, WsConnection>| {
            while let Some(ev) = tcp.poll() {
                let flow = ev.flow();
                let key = if flow.src <= flow.dst {
                    (flow.src, flow.dst)
                } else {
                    (flow.dst, flow.src)
                };
                // The first direction seen is taken as the client's.
                let conn = ws
                    .entry(key)
                    .or_insert_with(|| WsConnection::new(flow.src, flow.dst));
                let _ = conn.push(&ev);
                while let Some(m) = conn.poll() {
                    assert!(m.message.payload.len() as u64 <= estuary_pcap::MAX_MESSAGE_LEN);
                }
            }
        };
        for _ in 0..4096 {
            let record = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            assert!(record.data.len() <= estuary_pcap::MAX_PACKET_LEN as usize);
            let ts = record.timestamp;
            let _ = record.comment.map(str::len);
            if let Ok(packet) = record.decode() {
                assert!(packet.payload.len() <= record.data.len());
                let _ = classify(packet.payload);
                flows.push(ts, &packet);
                if matches!(packet.protocol, Protocol::Tcp(_)) {
                    tcp.push(ts, &packet);
                    drain(&mut tcp, &mut ws);
                }
            }
        }
        tcp.finish();
        drain(&mut tcp, &mut ws);
        let _ = (flows.untracked_packets(), flows.finish());
    }

    // The bytes as one link-layer frame of each type.
    for lt in [
        LinkType::ETHERNET,
        LinkType::RAW,
        LinkType::LINUX_SLL,
        LinkType::LINUX_SLL2,
        LinkType::NULL,
    ] {
        if let Ok(p) = decode(lt, data) {
            assert!(p.payload.len() <= data.len());
        }
    }

    // The bytes as a TCP stream carrying WebSocket, in chunks the first byte sizes.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for mut stream in [
        WsStream::new(WsDirection::ClientToServer),
        WsStream::new(WsDirection::ServerToClient),
        WsStream::without_handshake(WsDirection::ClientToServer),
        WsStream::without_handshake(WsDirection::ServerToClient),
    ] {
        let mut out = 0usize;
        for part in data.chunks(chunk) {
            if stream.push(part).is_err() {
                break;
            }
            while let Some(m) = stream.poll() {
                out += m.payload.len();
            }
        }
        assert!(out <= data.len(), "deframed more than the stream held");
        let _ = (stream.protocol(), stream.is_upgraded());
    }
}

// ---------------------------------------------------------------------------------------------
// b2bua

/// The signalling engine: the bytes are a script of steps separated by NUL bytes, each one
/// naming what happens in its first byte:
///
/// - `W<sip>`: a message arrives on the browser's WebSocket; `I<sip>`: a datagram from the
///   IMS next hop; any other first byte: the whole step as a browser message.
/// - `T<seconds>`: the virtual clock moves on that far, up to an hour (default: to the next
///   deadline),
///   firing every deadline on the way.
/// - `C`: the WebSocket closes; `O`: a new one opens (and becomes the browser's);
///   `U`: the IMS next hop is unreachable; `M<n>`: the media plane fails call `n`.
///
/// So the fuzzer can talk back, a message may quote what the gateway last sent to that side:
/// `$V` the Via, From, Call-ID and CSeq lines of the last request, `$F`, `$T`, `$C` the From,
/// To and Call-ID values of the last message, `$U` the last Contact URI, `$B` the last branch.
///
/// Invariants: nothing panics, everything the gateway transmits parses as SIP, a deadline that
/// fires moves on. After the script the clock runs two hours on, so every transaction,
/// registration and call timer fires.
pub fn b2bua(data: &[u8]) {
    /// Enough for two hours of every RFC 3261 timer of a few calls, few enough to stay fast.
    const MAX_TIMEOUTS_PER_STEP: usize = 20_000;

    use estuary_b2bua::{
        B2bua, B2buaConfig, ConnId, Flow, Input, Output, ReleaseCause, Side, Transport,
    };

    struct Echo {
        request_lines: Vec<u8>,
        from: Vec<u8>,
        to: Vec<u8>,
        call_id: Vec<u8>,
        contact: Vec<u8>,
        branch: Vec<u8>,
    }

    impl Echo {
        fn new() -> Self {
            Echo {
                request_lines: Vec::new(),
                from: Vec::new(),
                to: Vec::new(),
                call_id: Vec::new(),
                contact: Vec::new(),
                branch: Vec::new(),
            }
        }

        fn learn(&mut self, msg: &estuary_sip::Message) {
            let h = msg.headers();
            if msg.is_request() {
                self.request_lines.clear();
                for header in h.iter() {
                    if ["Via", "From", "Call-ID", "CSeq"]
                        .iter()
                        .any(|n| header.is(n))
                    {
                        self.request_lines.extend_from_slice(header.name.as_bytes());
                        self.request_lines.extend_from_slice(b": ");
                        self.request_lines
                            .extend_from_slice(header.value.as_bytes());
                        self.request_lines.extend_from_slice(b"\r\n");
                    }
                }
                // No trailing CRLF: the script writes its own line end after `$V`.
                self.request_lines
                    .truncate(self.request_lines.len().saturating_sub(2));
            }
            let raw = |name: &str| h.get(name).unwrap_or_default().as_bytes().to_vec();
            self.from = raw("From");
            self.to = raw("To");
            self.call_id = raw("Call-ID");
            if let Some(c) = h.get("Contact") {
                let inner = c
                    .split('<')
                    .nth(1)
                    .and_then(|r| r.split('>').next())
                    .unwrap_or(c);
                self.contact = inner.as_bytes().to_vec();
            }
            if let Ok(via) = h.top_via() {
                self.branch = via.branch().unwrap_or_default().as_bytes().to_vec();
            }
        }

        fn expand(&self, step: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(step.len() + 256);
            let mut i = 0;
            while i < step.len() {
                let quoted = match (step[i], step.get(i + 1)) {
                    (b'$', Some(b'V')) => Some(&self.request_lines),
                    (b'$', Some(b'F')) => Some(&self.from),
                    (b'$', Some(b'T')) => Some(&self.to),
                    (b'$', Some(b'C')) => Some(&self.call_id),
                    (b'$', Some(b'U')) => Some(&self.contact),
                    (b'$', Some(b'B')) => Some(&self.branch),
                    _ => None,
                };
                match quoted {
                    Some(v) => {
                        out.extend_from_slice(v);
                        i += 2;
                    }
                    None => {
                        out.push(step[i]);
                        i += 1;
                    }
                }
            }
            out
        }
    }

    struct Driver {
        gw: B2bua,
        now: Instant,
        web: Echo,
        ims: Echo,
        calls: Vec<u64>,
        /// The next media port to "bind" for the engine; a small range, so that running
        /// out of ports is exercised too.
        next_port: u16,
    }

    impl Driver {
        fn input(&mut self, input: Input<'_>) {
            if trace() {
                let at = self.now - epoch();
                match &input {
                    Input::Receive { flow, data, .. } => {
                        eprintln!("--- {at:?} in {flow:?}\n{}", String::from_utf8_lossy(data))
                    }
                    other => eprintln!("--- {at:?} {other:?}"),
                }
            }
            self.gw.handle_input(self.now, input);
            self.drain();
            // As the daemon does: bind and grant what the engine asks for, within the range.
            let n = self.gw.ports_wanted(self.now).min(usize::from((20_400 - self.next_port) / 2)) as u16;
            let first = self.next_port;
            self.next_port += 2 * n;
            self.gw.grant_ports((0..n).map(|i| first + 2 * i));
        }

        fn drain(&mut self) {
            let mut n = 0;
            while let Some(out) = self.gw.poll_output() {
                n += 1;
                assert!(n < 100_000, "poll_output does not run dry");
                match out {
                    Output::Transmit { flow, data } => {
                        let msg = match estuary_sip::Message::parse(&data) {
                            Ok(m) => m,
                            Err(e) => panic!(
                                "gateway sent unparseable SIP ({e}):\n{}",
                                String::from_utf8_lossy(&data)
                            ),
                        };
                        if trace() {
                            eprintln!(">>> out {flow:?}\n{}", String::from_utf8_lossy(&data));
                        }
                        match flow {
                            Flow::Web { .. } => self.web.learn(&msg),
                            Flow::Ims { .. } => self.ims.learn(&msg),
                        }
                    }
                    Output::CallStarted { call, .. } => self.calls.push(call),
                    Output::Media { .. }
                    | Output::MediaEnd { .. }
                    | Output::CallEnded { .. }
                    | Output::KeyframeRequested { .. }
                    | Output::SignallingPath(_)
                    | Output::RegistrationShared(_)
                    | Output::RegistrationRemoved { .. }
                    | Output::CallShared(_)
                    | Output::CallUnshared { .. }
                    | Output::HandOverWanted { .. }
                    | Output::StateQuery { .. }
                    | Output::CallAdopted { .. }
                    | Output::Close { .. } => {}
                }
            }
        }

        /// Moves the clock to `until`, firing each deadline at its time. A deadline that
        /// stays put after firing is a bug; many deadlines are not (an established call keeps
        /// a 5 s sweep alive for as long as it lasts), so past a budget the clock just jumps.
        fn run_until(&mut self, until: Instant) {
            let mut fired = 0;
            let mut same_instant = 0;
            while let Some(t) = self.gw.poll_timeout() {
                if t > until || fired == MAX_TIMEOUTS_PER_STEP {
                    break;
                }
                fired += 1;
                if t <= self.now {
                    same_instant += 1;
                    assert!(same_instant < 1000, "a deadline fires again without moving");
                } else {
                    same_instant = 0;
                }
                self.now = t.max(self.now);
                self.input(Input::Timeout);
            }
            self.now = until.max(self.now);
        }
    }

    let cfg = B2buaConfig::default();
    let next_hop = cfg.next_hop;
    let ims_flow = Flow::Ims {
        transport: Transport::Udp,
        remote: next_hop,
    };
    let browser = addr("127.0.0.1:40000");
    let mut d = Driver {
        gw: B2bua::new(cfg, 7, estuary_keys::KeySource::os()),
        now: epoch(),
        web: Echo::new(),
        ims: Echo::new(),
        calls: Vec::new(),
        next_port: 20_000,
    };
    let mut conn = ConnId(1);
    let open = |conn| Input::ConnectionOpened {
        conn,
        side: Side::Web,
        transport: Transport::Wss,
        local: addr("127.0.0.1:8443"),
        remote: browser,
    };
    d.input(open(conn));

    for step in pieces(data, 0, 64) {
        let Some((&op, rest)) = step.split_first() else {
            continue;
        };
        match op {
            b'I' => {
                let msg = d.ims.expand(rest);
                d.input(Input::Receive {
                    flow: ims_flow,
                    conn: None,
                    remote: next_hop,
                    data: &msg,
                });
            }
            b'T' => {
                let secs = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                match secs {
                    Some(s) => {
                        let until = d.now + Duration::from_secs(s.min(3600));
                        d.run_until(until);
                    }
                    None => {
                        if let Some(t) = d.gw.poll_timeout() {
                            d.run_until(t);
                        }
                    }
                }
            }
            b'C' => d.input(Input::ConnectionClosed { conn }),
            b'O' => {
                conn = ConnId(conn.0 + 1);
                d.input(open(conn));
            }
            b'U' => d.input(Input::Unreachable { flow: ims_flow }),
            b'M' => {
                let n = usize::from(rest.first().copied().unwrap_or(0));
                let call = d
                    .calls
                    .get(n % d.calls.len().max(1))
                    .copied()
                    .unwrap_or(n as u64);
                let cause = if n % 2 == 0 {
                    ReleaseCause::RtpTimeout
                } else {
                    ReleaseCause::MediaBearerLoss
                };
                d.input(Input::MediaFailed {
                    call,
                    reason: "fuzz",
                    cause,
                });
            }
            b'W' => {
                let msg = d.web.expand(rest);
                d.input(Input::Receive {
                    flow: Flow::Web { conn },
                    conn: Some(conn),
                    remote: browser,
                    data: &msg,
                });
            }
            _ => {
                let msg = d.web.expand(step);
                d.input(Input::Receive {
                    flow: Flow::Web { conn },
                    conn: Some(conn),
                    remote: browser,
                    data: &msg,
                });
            }
        }
    }
    // Two hours on: every transaction, call and registration timer has its say.
    let end = d.now + Duration::from_secs(7200);
    d.run_until(end);
    let _ = d.gw.poll_timeout();
}
