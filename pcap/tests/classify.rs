//! Payload classification on standard vectors and hand-made packets, and flow classification
//! of a capture holding what a gateway sees: SIP over UDP, TCP and WebSocket, media on one
//! BUNDLEd port, and traffic that is none of these.

mod common;
use common::XorShift;

use std::net::SocketAddr;
use std::time::Duration;

use estuary_pcap::{
    build_tcp, build_udp, classify, classify_capture, CaptureReader, Carries, FiveTuple,
    FlowClassifier, Kind, LinkType, PcapWriter, SipTransport, TcpFlags, TcpHeader, Transport,
};

#[path = "../../conformance/data/rfc5769.rs"]
mod rfc5769_vectors;
use rfc5769_vectors::{SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_REQUEST};

/// An RTP packet: version 2, payload type 111 (Opus), marker clear, no CSRC.
const RTP: [u8; 16] = [
    0x80, 0x6F, 0x1A, 0x2B, 0x00, 0x00, 0x03, 0xC0, 0x12, 0x34, 0x56, 0x78, 0xF8, 0xFF, 0xFE, 0x00,
];

/// An RTCP receiver report with one report block (length 7 → 32 bytes).
fn rtcp_rr() -> Vec<u8> {
    let mut p = vec![0x81, 201, 0x00, 0x07, 0x12, 0x34, 0x56, 0x78];
    p.extend([0; 24]);
    p
}

/// The first bytes of a DTLS 1.2 ClientHello record (content type 22, version 0xFEFD,
/// epoch 0, sequence 0, length 0x7C) followed by a stand-in body.
fn dtls_client_hello() -> Vec<u8> {
    let mut p = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7C];
    p.extend([1; 0x7C]);
    p
}

const OPTIONS: &[u8] = b"OPTIONS sip:gw.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n";

#[test]
fn rfc5769_vectors_are_stun() {
    for vector in [
        &SAMPLE_REQUEST[..],
        &SAMPLE_IPV4_RESPONSE,
        &SAMPLE_IPV6_RESPONSE,
    ] {
        assert_eq!(classify(vector), Kind::Stun);
        // Cut short, the length field no longer matches.
        assert_eq!(classify(&vector[..vector.len() - 4]), Kind::Unknown);
    }
    // Without the cookie it would be RFC 3489 STUN, which RFC 7983 demuxing cannot confirm.
    let mut classic = SAMPLE_REQUEST;
    classic[4..8].copy_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
    assert_eq!(classify(&classic), Kind::Unknown);
}

#[test]
fn hand_made_payloads_of_each_kind() {
    assert_eq!(classify(OPTIONS), Kind::Sip);
    assert_eq!(
        classify(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
        Kind::Sip
    );
    // RFC 3261 §7.5: leading CRLFs before the start line are ignored.
    let mut leading = b"\r\n\r\n".to_vec();
    leading.extend(OPTIONS);
    assert_eq!(classify(&leading), Kind::Sip);
    assert_eq!(classify(b"\r\n\r\n"), Kind::KeepAlive);
    assert_eq!(classify(b"\r\n"), Kind::KeepAlive);
    assert_eq!(classify(&RTP), Kind::Rtp);
    assert_eq!(classify(&rtcp_rr()), Kind::Rtcp);
    assert_eq!(classify(&dtls_client_hello()), Kind::Dtls);
    // PT byte 200 with version 2 looks like RTP with marker set and PT 72: it is an RTCP SR.
    let mut sr = vec![0x80, 200, 0x00, 0x06];
    sr.extend([0; 24]);
    assert_eq!(classify(&sr), Kind::Rtcp);
    // One byte is never enough, whatever it is.
    for b in [0x00, 0x16, 0x80, b'I', b'\r'] {
        assert_eq!(classify(&[b]), Kind::Unknown);
    }
    assert_eq!(classify(b""), Kind::Unknown);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const GW_UDP: &str = "198.51.100.1:5060";
const GW_TCP: &str = "198.51.100.1:5061";
const GW_WS: &str = "198.51.100.1:8443";
const GW_MEDIA: &str = "198.51.100.1:40000";
const CORE: &str = "203.0.113.5:5060";
const PHONE: &str = "192.0.2.30:5080";
const BROWSER: &str = "192.0.2.40:51000";
const BROWSER_MEDIA: &str = "192.0.2.40:62000";
const WEB: &str = "192.0.2.50:33000";

/// A writer that keeps per-direction TCP sequence numbers.
struct Capture {
    writer: PcapWriter<Vec<u8>>,
    ms: u64,
}

impl Capture {
    fn udp(&mut self, src: &str, dst: &str, payload: &[u8]) {
        let ip = build_udp(addr(src), addr(dst), payload).unwrap();
        self.write(&ip);
    }

    fn tcp(&mut self, src: &str, dst: &str, seq: u32, flags: TcpFlags, payload: &[u8]) {
        let h = TcpHeader {
            seq,
            ack: 0,
            flags,
            window: 1000,
        };
        self.write(&build_tcp(addr(src), addr(dst), &h, payload).unwrap());
    }

    /// A connection's SYN, then `stream` in segments of `seg` bytes.
    fn stream(&mut self, src: &str, dst: &str, isn: u32, stream: &[u8], seg: usize) {
        self.tcp(src, dst, isn, TcpFlags::SYN, b"");
        for (i, chunk) in stream.chunks(seg).enumerate() {
            self.tcp(src, dst, isn + 1 + (i * seg) as u32, TcpFlags::PSH, chunk);
        }
    }

    fn write(&mut self, ip: &[u8]) {
        self.ms += 1;
        self.writer
            .write_packet(Duration::from_millis(self.ms), ip)
            .unwrap();
    }
}

fn ws_text(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
    }
    f.extend(key);
    f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    f
}

#[test]
fn flows_of_a_gateway_capture() {
    let mut c = Capture {
        writer: PcapWriter::new(Vec::new(), LinkType::RAW).unwrap(),
        ms: 0,
    };
    // SIP over UDP from a phone, with a keep-alive, and the gateway's answer.
    c.udp(PHONE, GW_UDP, OPTIONS);
    c.udp(PHONE, GW_UDP, b"\r\n\r\n");
    c.udp(
        GW_UDP,
        PHONE,
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    );

    // SIP over TCP from the core: two messages, the first with a body, cut at 23 bytes.
    let mut sip_tcp =
        b"INVITE sip:alice@gw SIP/2.0\r\nContent-Length: 10\r\n\r\nv=0\r\no=-\r\n".to_vec();
    sip_tcp.extend(b"\r\n\r\n");
    sip_tcp.extend(b"BYE sip:alice@gw SIP/2.0\r\nl: 0\r\n\r\n");
    c.stream(CORE, GW_TCP, 1000, &sip_tcp, 23);

    // SIP over WebSocket from a browser, and the gateway's 101.
    let mut ws_up =
        b"GET /sip HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\nSec-WebSocket-Protocol: sip\r\n\
Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
    ws_up.extend(ws_text(
        b"REGISTER sip:gw SIP/2.0\r\nContent-Length: 0\r\n\r\n",
        [1, 2, 3, 4],
    ));
    ws_up.extend(ws_text(b"\r\n\r\n", [5, 6, 7, 8]));
    c.stream(BROWSER, GW_WS, 50, &ws_up, 40);
    c.stream(
        GW_WS,
        BROWSER,
        90,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Protocol: sip\r\n\r\n",
        1000,
    );

    // Media on one BUNDLEd port: STUN, DTLS, RTP, RTCP from the browser.
    c.udp(BROWSER_MEDIA, GW_MEDIA, &SAMPLE_REQUEST);
    c.udp(GW_MEDIA, BROWSER_MEDIA, &SAMPLE_IPV4_RESPONSE);
    c.udp(BROWSER_MEDIA, GW_MEDIA, &dtls_client_hello());
    for _ in 0..3 {
        c.udp(BROWSER_MEDIA, GW_MEDIA, &RTP);
    }
    c.udp(BROWSER_MEDIA, GW_MEDIA, &rtcp_rr());

    // Neither: plain HTTP over TCP and noise over UDP.
    c.stream(
        WEB,
        GW_WS,
        7,
        b"GET /index.html HTTP/1.1\r\nHost: gw\r\n\r\n",
        1000,
    );
    c.udp(WEB, GW_MEDIA, b"\x42\x42\x42");

    let file = c.writer.into_inner();
    let flows = classify_capture(&mut CaptureReader::new(&file[..]).unwrap()).unwrap();

    let find = |transport, src: &str, dst: &str| {
        let flow = FiveTuple {
            transport,
            src: addr(src),
            dst: addr(dst),
        };
        flows
            .iter()
            .find(|f| f.flow == flow)
            .unwrap_or_else(|| panic!("no flow {flow:?}"))
    };

    let udp_sip = find(Transport::Udp, PHONE, GW_UDP);
    assert_eq!(udp_sip.carries(), Carries::Sip(SipTransport::Udp));
    assert_eq!(
        (
            udp_sip.kinds.get(Kind::Sip),
            udp_sip.kinds.get(Kind::KeepAlive)
        ),
        (1, 1)
    );
    assert_eq!(udp_sip.packets, 2);
    assert_eq!(
        find(Transport::Udp, GW_UDP, PHONE).carries(),
        Carries::Sip(SipTransport::Udp)
    );

    let tcp_sip = find(Transport::Tcp, CORE, GW_TCP);
    assert_eq!(tcp_sip.carries(), Carries::Sip(SipTransport::Tcp));
    assert_eq!(
        (
            tcp_sip.kinds.get(Kind::Sip),
            tcp_sip.kinds.get(Kind::KeepAlive)
        ),
        (2, 1)
    );
    assert_eq!(tcp_sip.error, None);

    let ws = find(Transport::Tcp, BROWSER, GW_WS);
    assert_eq!(ws.carries(), Carries::Sip(SipTransport::WebSocket));
    assert_eq!(ws.websocket_protocol.as_deref(), Some("sip"));
    assert_eq!(
        (ws.kinds.get(Kind::Sip), ws.kinds.get(Kind::KeepAlive)),
        (1, 1)
    );
    let ws_down = find(Transport::Tcp, GW_WS, BROWSER);
    assert!(ws_down.websocket);
    assert_eq!(ws_down.carries(), Carries::WebSocket);

    let media = find(Transport::Udp, BROWSER_MEDIA, GW_MEDIA);
    assert_eq!(media.carries(), Carries::Media);
    let counts: Vec<_> = media.kinds.iter().collect();
    assert_eq!(
        counts,
        [
            (Kind::Stun, 1),
            (Kind::Dtls, 1),
            (Kind::Rtp, 3),
            (Kind::Rtcp, 1)
        ]
    );
    assert_eq!(
        find(Transport::Udp, GW_MEDIA, BROWSER_MEDIA).carries(),
        Carries::Media
    );

    let web = find(Transport::Tcp, WEB, GW_WS);
    assert_eq!(web.carries(), Carries::Unknown);
    assert!(
        web.error.as_deref().unwrap().contains("Upgrade"),
        "{:?}",
        web.error
    );
    assert_eq!(
        find(Transport::Udp, WEB, GW_MEDIA).carries(),
        Carries::Unknown
    );

    // "What entered the gateway": flows to its addresses, in order of first packet.
    let entered: Vec<_> = flows
        .iter()
        .filter(|f| f.flow.dst.ip() == addr(GW_UDP).ip())
        .map(|f| (f.flow.dst.port(), f.carries()))
        .collect();
    assert_eq!(
        entered,
        [
            (5060, Carries::Sip(SipTransport::Udp)),
            (5061, Carries::Sip(SipTransport::Tcp)),
            (8443, Carries::Sip(SipTransport::WebSocket)),
            (40000, Carries::Media),
            (8443, Carries::Unknown),
            (40000, Carries::Unknown),
        ]
    );
}

#[test]
fn random_payloads_never_panic() {
    let mut rng = XorShift(77);
    let mut classifier = FlowClassifier::new();
    let seeds: [&[u8]; 5] = [
        OPTIONS,
        &SAMPLE_REQUEST,
        &RTP,
        b"GET / HTTP/1.1\r\n",
        b"\r\n",
    ];
    for i in 0..20_000u64 {
        let base = seeds[(rng.next() % 5) as usize];
        let mut p = base.to_vec();
        for _ in 0..(rng.next() % 4) {
            if p.is_empty() {
                break;
            }
            let at = (rng.next() % p.len() as u64) as usize;
            match rng.next() % 3 {
                0 => p[at] = rng.next() as u8,
                1 => p.truncate(at),
                _ => p.insert(at, rng.next() as u8),
            }
        }
        let _ = classify(&p);
        // Through UDP and through a TCP stream on a few ports.
        let port = 1 + (rng.next() % 4) as u16;
        let src = SocketAddr::new(addr(PHONE).ip(), port);
        let ip = build_udp(src, addr(GW_UDP), &p).unwrap();
        let packet = estuary_pcap::decode(LinkType::RAW, &ip).unwrap();
        classifier.push(Duration::from_micros(i), &packet);
        let h = TcpHeader {
            seq: (rng.next() as u32) % 4096,
            ack: rng.next() as u32,
            flags: TcpFlags(rng.next() as u8 & !TcpFlags::RST.0),
            window: 0,
        };
        let ip = build_tcp(src, addr(GW_TCP), &h, &p).unwrap();
        let packet = estuary_pcap::decode(LinkType::RAW, &ip).unwrap();
        classifier.push(Duration::from_micros(i), &packet);
    }
    let flows = classifier.finish();
    assert_eq!(flows.len(), 8);
}
