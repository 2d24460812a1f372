//! The media engines against a real browser: headless Chromium sends its fake microphone
//! through an estuary-media session (ICE-lite, DTLS-SRTP with Chromium's certificate checked
//! against its SDP fingerprint, SRTP) to a UDP "IMS peer" that echoes RTP, and must receive
//! its audio back. No daemon: the test is the driver (plain sockets, real time), so this pins
//! the engines' interop with Chromium before the daemon wiring.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use estuary_conformance::browser::{Browser, Netns};
use estuary_conformance::net::in_loopback_netns;
use estuary_media::{Forward, MediaConfig, MediaEvent, MediaSession, Output};
use estuary_sdp::{PortAllocator, SdpPolicy, SdpSession, Side};
use estuary_srtp::Certificate;

struct Bound(u16, u16);

impl PortAllocator for Bound {
    fn web_port(&mut self) -> Option<u16> {
        Some(self.0)
    }
    fn ims_port(&mut self, _: usize) -> Option<u16> {
        Some(self.1)
    }
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

#[test]
fn chromium_audio_goes_through_the_media_session_and_comes_back() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium is needed (make deps installs it): {why}");
    }
    // Browser, sockets and "IMS peer" share one namespace that has only loopback.
    if !in_loopback_netns("chromium_audio_goes_through_the_media_session_and_comes_back") {
        return;
    }
    let mut b = Browser::start_in(Netns::Inherit);
    b.new_pc("a");
    let offer = b.offer_with_fake_media("a", &["audio"]).expect("Chromium offer");

    let web = udp();
    let ims = udp();
    let echo = udp();
    let (web_addr, ims_addr, echo_addr) = (web.local_addr().unwrap(), ims.local_addr().unwrap(), echo.local_addr().unwrap());
    let cert = Certificate::generate().unwrap();
    let policy = SdpPolicy {
        fingerprint: estuary_sdp::Fingerprint::parse(&cert.fingerprint().to_string()).unwrap(),
        ..SdpPolicy::default()
    };
    let mut sdp = SdpSession::new(policy, 5, estuary_keys::KeySource::os());
    sdp.offer(Side::Web, offer.as_bytes(), &mut Bound(web_addr.port(), ims_addr.port())).unwrap();
    let ims_answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        echo_addr.port()
    );
    let answer = sdp.answer(Side::Ims, ims_answer.as_bytes()).unwrap();
    b.remote_answer("a", &answer).unwrap_or_else(|e| panic!("Chromium refused: {e}\n{answer}"));
    let plan = sdp.plan().unwrap().clone();
    let mut session = MediaSession::new(MediaConfig::default(), &plan, &cert, Instant::now(), 3).unwrap();

    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let mut events = Vec::new();
    let (mut echoed, mut to_browser) = (0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && to_browser < 100 {
        let mut idle = true;
        for (sock, local) in [(&web, web_addr), (&ims, ims_addr)] {
            buf.resize(estuary_media::MIN_BUFFER, 0);
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                idle = false;
                buf.truncate(n);
                if let Forward::Send { from: out, to } = session.handle_datagram(Instant::now(), local, from, &mut buf) {
                    let s = if out == web_addr { &web } else { &ims };
                    if out == web_addr {
                        to_browser += 1;
                    }
                    let _ = s.send_to(&buf, to);
                }
            }
        }
        // The IMS peer echoes RTP to where it came from (sipp -rtp_echo does the same).
        let mut e = [0u8; 2048];
        if let Ok((n, from)) = echo.recv_from(&mut e) {
            idle = false;
            echoed += 1;
            let _ = echo.send_to(&e[..n], from);
        }
        session.handle_timeout(Instant::now());
        while let Some(o) = session.poll_output() {
            match o {
                Output::Transmit { from, to, data } => {
                    let s = if from == web_addr { &web } else { &ims };
                    let _ = s.send_to(&data, to);
                }
                Output::Event(ev) => events.push(ev),
                // A relayed call: no transcoder to ask.
                Output::Tap { .. } | Output::Encoder { .. } => {}
            }
        }
        if events.iter().any(|e| matches!(e, MediaEvent::Failed { .. })) {
            break;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let stats = b.stats("a").unwrap();
    if let Some(MediaEvent::IceConnected { remote }) = events.first() {
        assert!(remote.ip().is_loopback(), "traffic left 127.0.0.0/8: {remote}");
    }
    let summary = format!("events {events:?}\ncounters {:?}\nechoed {echoed} to_browser {to_browser}\nstats {stats:#}", session.counters());
    println!("{summary}");
    assert!(events.iter().any(|e| matches!(e, MediaEvent::DtlsConnected { .. })), "{summary}");
    assert!(echoed >= 20, "Chromium's audio reached the IMS peer: {summary}");
    let inbound = stats["rtp"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "inbound-rtp"))
        .and_then(|x| x["packets"].as_f64())
        .unwrap_or(0.0);
    assert!(inbound >= 20.0, "Chromium decrypted its echoed audio: {summary}");
    b.close("a");
}
