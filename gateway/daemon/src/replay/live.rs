//! `estuary replay INPUT --expect EXPECTED --live`: the capture played against a running
//! daemon over loopback instead of through the engine on a virtual clock. The replayer is both
//! far ends: each browser of the capture becomes a WebSocket connection (subprotocol `sip`,
//! over TLS when the browser used WSS) to the daemon's listener, and the core a UDP socket on
//! the daemon's `ims.next_hop`. The daemon's addresses come from the same `--config`/`--set`
//! the daemon runs with.
//!
//! The daemon draws its own identifiers, so what the far ends echo (a branch in a response, a
//! To tag in an ACK, a Path token in a Route) is rewritten before it is sent: every message the
//! daemon sends is paired with the one the recording has at the same place on that side, their
//! variable words ([`normalize::words`]) paired line by line, and each recorded value is
//! replaced by the live one in later inputs. Addresses (the daemon's, the browsers', the
//! core's) are mapped the same way, and the live output is mapped back to the recorded
//! addresses before the usual semantic comparison.
//!
//! Pacing is causal: an input leaves at its recorded offset, but never before the daemon has
//! sent what it had sent by then in the recording (bounded by `wait`), so a busy daemon does
//! not see a response before it sent the request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use estuary_b2bua::Side;
use estuary_config::{Config, NextHop, NextHopTransport};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use super::{normalize, Message, SETTLE};

/// Where the daemon under test listens, and where the replayer plays the core.
pub struct Targets {
    ws: SocketAddr,
    wss: SocketAddr,
    gateway_ims: SocketAddr,
    core: SocketAddr,
}

impl Targets {
    pub fn from_config(cfg: &Config) -> Result<Targets, String> {
        let core = match &cfg.ims.next_hop {
            NextHop::Uri { host, port, transport: NextHopTransport::Udp, .. } => {
                let ip: IpAddr = host
                    .parse()
                    .map_err(|_| format!("ims.next_hop host {host} is not an IP address: live replay plays the core there"))?;
                SocketAddr::new(ip, *port)
            }
            NextHop::Uri { .. } => return Err("ims.next_hop uses TCP: live replay plays the core over UDP".into()),
            NextHop::Builtin => {
                return Err("ims.next_hop is the built-in test peer: run the daemon with ims.next_hop=sip:127.0.0.1:PORT \
                            and give the replay the same setting, where it plays the core"
                    .into())
            }
        };
        let ims = concrete("ims.listen", cfg.ims.listen)?;
        Ok(Targets { ws: cfg.web.ws_listen, wss: cfg.web.wss_listen, gateway_ims: ims, core })
    }
}

/// An address to connect to: the unspecified address means this host's loopback.
fn concrete(key: &str, a: SocketAddr) -> Result<SocketAddr, String> {
    if a.port() == 0 {
        return Err(format!("{key} has port 0: give the running daemon's address (--set {key}=IP:PORT)"));
    }
    Ok(match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        _ => a,
    })
}

/// What the live run produced: the daemon's messages (addresses mapped back to the
/// recording's) and, when it stopped early, why.
pub struct Outcome {
    pub emitted: Vec<Message>,
    pub stalled: Option<String>,
}

/// Plays `input` against the daemon at `targets`, pacing and mapping by `expected`.
pub fn play(targets: &Targets, input: &[Message], expected: &[Message], wait: Duration) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let core = UdpSocket::bind(targets.core)
            .await
            .map_err(|e| format!("binding the core's address {} (ims.next_hop): {e}", targets.core))?;
        let mut p = Player::new(targets, core, input, expected);
        p.run(input, wait).await?;
        Ok(p.finish())
    })
}

enum Event {
    /// A message from the daemon on the connection of the recorded browser at that address.
    Web(SocketAddr, Vec<u8>),
    Ims(SocketAddr, Vec<u8>),
    Closed(SocketAddr, String),
}

fn index(side: Side) -> usize {
    match side {
        Side::Web => 0,
        Side::Ims => 1,
    }
}

struct Player<'a> {
    targets: &'a Targets,
    start: Instant,
    t0: Duration,
    core: Arc<UdpSocket>,
    /// Recorded value -> live value, for inputs.
    map: HashMap<String, String>,
    /// Live address parts (IPs, ports) -> recorded ones, for the comparison.
    back: HashMap<String, String>,
    /// The expected messages per side, retransmissions folded, in order.
    expected: [Vec<&'a Message>; 2],
    /// What the daemon sent per side, retransmissions folded.
    seen: [Vec<Vec<u8>>; 2],
    emitted: Vec<Message>,
    conns: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// WebSocket closures seen, for the report.
    closed: Vec<String>,
    stalled: Option<String>,
}

impl<'a> Player<'a> {
    fn new(targets: &'a Targets, core: UdpSocket, input: &[Message], expected: &'a [Message]) -> Player<'a> {
        let mut folded: [Vec<&Message>; 2] = [Vec::new(), Vec::new()];
        for m in expected {
            let side = &mut folded[index(m.side)];
            if !side.iter().any(|e| e.data == m.data) {
                side.push(m);
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Arc::new(core);
        let recv = core.clone();
        let events = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = recv.recv_from(&mut buf).await {
                if events.send(Event::Ims(from, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        let mut p = Player {
            targets,
            start: Instant::now(),
            t0: input.first().map_or(Duration::ZERO, |m| m.at),
            core,
            map: HashMap::new(),
            back: HashMap::new(),
            expected: folded,
            seen: [Vec::new(), Vec::new()],
            emitted: Vec::new(),
            conns: HashMap::new(),
            tx,
            rx,
            closed: Vec::new(),
            stalled: None,
        };
        // The daemon's IMS address and the core's, as recorded -> as now.
        let core_live = p.core.local_addr().unwrap_or(targets.core);
        let ims_in = input.iter().find(|m| m.side == Side::Ims).map(|m| (m.dst, m.src));
        let ims_out = expected.iter().find(|m| m.side == Side::Ims).map(|m| (m.src, m.dst));
        if let Some((daemon, core)) = ims_in.or(ims_out) {
            p.seed(daemon, targets.gateway_ims);
            p.seed(core, core_live);
        }
        p
    }

    /// Maps a recorded address to a live one (IP and port, each a word in SIP text).
    fn seed(&mut self, recorded: SocketAddr, live: SocketAddr) {
        for (r, l) in [(recorded.ip().to_string(), live.ip().to_string()), (recorded.port().to_string(), live.port().to_string())] {
            if r != l {
                self.map.entry(r.clone()).or_insert_with(|| l.clone());
                self.back.entry(l).or_insert(r);
            }
        }
    }

    async fn run(&mut self, input: &[Message], wait: Duration) -> Result<(), String> {
        for (k, m) in input.iter().enumerate() {
            let due = self.start + m.at.saturating_sub(self.t0);
            // What the recorded daemon had sent on each side before this input arrived.
            let needed = [0, 1].map(|i| self.expected[i].iter().filter(|e| e.at < m.at).count());
            let deadline = due.max(Instant::now()) + wait;
            loop {
                let caught_up = (0..2).all(|i| self.seen[i].len() >= needed[i]);
                let now = Instant::now();
                if caught_up && now >= due {
                    break;
                }
                if now >= deadline {
                    self.stall(k, m, needed);
                    return Ok(());
                }
                let until = if caught_up { due } else { deadline };
                tokio::select! {
                    ev = self.rx.recv() => self.on_event(ev),
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
            self.send(m).await?;
        }
        // The rest of the expected output, then a moment for anything unexpected.
        let deadline = Instant::now() + wait.max(SETTLE);
        while (0..2).any(|i| self.seen[i].len() < self.expected[i].len()) && Instant::now() < deadline {
            tokio::select! {
                ev = self.rx.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        let grace = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(ev)) = tokio::time::timeout_at(grace, self.rx.recv()).await {
            self.on_event(Some(ev));
        }
        Ok(())
    }

    fn stall(&mut self, k: usize, m: &Message, needed: [usize; 2]) {
        let first = String::from_utf8_lossy(&m.data).lines().next().unwrap_or_default().to_owned();
        let mut why = format!(
            "stopped before input {} ({first}): the recorded gateway had sent {} message(s) to the browser side and {} to IMS by then; this one {} and {}",
            k + 1,
            needed[0],
            needed[1],
            self.seen[0].len(),
            self.seen[1].len()
        );
        for c in &self.closed {
            why.push_str("; ");
            why.push_str(c);
        }
        self.closed.clear();
        self.stalled = Some(why);
    }

    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Event::Web(browser, data)) => self.on_output(Side::Web, browser, data),
            Some(Event::Ims(from, data)) => self.on_output(Side::Ims, from, data),
            Some(Event::Closed(browser, why)) => self.closed.push(format!("the daemon closed {browser}'s WebSocket: {why}")),
            None => {}
        }
    }

    fn on_output(&mut self, side: Side, peer: SocketAddr, data: Vec<u8>) {
        let i = index(side);
        if !self.seen[i].contains(&data) {
            if let Some(e) = self.expected[i].get(self.seen[i].len()) {
                learn(&e.data, &data, &mut self.map);
            }
            self.seen[i].push(data.clone());
        }
        let at = self.t0 + self.start.elapsed();
        let daemon = if side == Side::Web { self.targets.ws } else { self.targets.gateway_ims };
        self.emitted.push(Message { at, side, src: daemon, dst: peer, data });
    }

    async fn send(&mut self, m: &Message) -> Result<(), String> {
        let data = substitute(&m.data, &self.map);
        match m.side {
            Side::Ims => {
                self.core
                    .send_to(&data, self.targets.gateway_ims)
                    .await
                    .map_err(|e| format!("sending to the daemon's IMS address {}: {e}", self.targets.gateway_ims))?;
            }
            Side::Web => {
                if !self.conns.contains_key(&m.src) {
                    self.connect(m).await?;
                }
                // A closed connection is reported as an event; the comparison shows the rest.
                let _ = self.conns[&m.src].send(data);
            }
        }
        Ok(())
    }

    /// Opens the WebSocket of the recorded browser at `m.src`, over TLS when its Via says WSS.
    async fn connect(&mut self, m: &Message) -> Result<(), String> {
        let secure = String::from_utf8_lossy(&m.data).contains("SIP/2.0/WSS ");
        let (key, target) = if secure { ("web.wss_listen", self.targets.wss) } else { ("web.ws_listen", self.targets.ws) };
        let target = concrete(key, target)?;
        let tcp = TcpStream::connect(target).await.map_err(|e| format!("connecting to the daemon's {key} {target}: {e}"))?;
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        self.seed(m.src, local);
        self.seed(m.dst, target);
        let scheme = if secure { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{target}/").into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let events = self.tx.clone();
        let browser = m.src;
        if secure {
            let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(target.ip().into());
            let tls = any_certificate()
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with the daemon's {key} {target}: {e}"))?;
            let (ws, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| format!("WebSocket handshake with {target}: {e}"))?;
            tokio::spawn(pump(ws, out_rx, events, browser));
        } else {
            let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| format!("WebSocket handshake with {target}: {e}"))?;
            tokio::spawn(pump(ws, out_rx, events, browser));
        }
        self.conns.insert(m.src, out_tx);
        Ok(())
    }

    /// The daemon's messages with live addresses mapped back to the recorded ones.
    fn finish(self) -> Outcome {
        let stalled = self.stalled.or_else(|| (!self.closed.is_empty()).then(|| self.closed.join("; ")));
        let back = self.back;
        let emitted = self.emitted.into_iter().map(|m| Message { data: substitute(&m.data, &back), ..m }).collect();
        Outcome { emitted, stalled }
    }
}

/// One browser's WebSocket: frames out from the player, SIP messages in to it.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    browser: SocketAddr,
) {
    loop {
        tokio::select! {
            next = out.recv() => match next {
                Some(data) => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Err(e) = ws.send(Frame::text(text)).await {
                        let _ = events.send(Event::Closed(browser, e.to_string()));
                        return;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
            frame = ws.next() => match frame {
                Some(Ok(Frame::Text(t))) => {
                    let _ = events.send(Event::Web(browser, t.as_bytes().to_vec()));
                }
                Some(Ok(Frame::Binary(b))) => {
                    let _ = events.send(Event::Web(browser, b.to_vec()));
                }
                Some(Ok(Frame::Close(c))) => {
                    let why = c.map_or_else(|| "no reason".to_owned(), |c| format!("{} {}", c.code, c.reason));
                    let _ = events.send(Event::Closed(browser, why));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = events.send(Event::Closed(browser, e.to_string()));
                    return;
                }
                None => {
                    let _ = events.send(Event::Closed(browser, "end of stream".into()));
                    return;
                }
            }
        }
    }
}

/// A TLS client for the daemon under test: its certificate is not verified (a lab daemon's is
/// self-signed; the replay tests the gateway's behaviour, not its PKI).
fn any_certificate() -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::{self, ClientConfig};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(unverified::AnyCertificate(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

mod unverified {
    use std::sync::Arc;

    use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use tokio_rustls::rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    /// Accepts the daemon's certificate, but still checks the handshake signatures with it.
    #[derive(Debug)]
    pub struct AnyCertificate(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// The lines of a SIP message keyed for pairing: the start line, headers by canonical name and
/// occurrence, SDP lines by type and attribute name and occurrence.
fn keyed_lines(text: &str) -> Vec<((String, usize), &str)> {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut key = |k: String, line, out: &mut Vec<_>| {
        let n = counts.entry(k.clone()).or_insert(0);
        out.push(((k, *n), line));
        *n += 1;
    };
    for (i, line) in head.split("\r\n").enumerate() {
        if i == 0 {
            key("start".into(), line, &mut out);
        } else if let Some((name, _)) = line.split_once(':') {
            key(normalize::canonical_name(name), line, &mut out);
        }
    }
    for line in body.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let end = line.find([':', ' ']).unwrap_or(line.len());
        key(format!("sdp {}", &line[..end]), line, &mut out);
    }
    out
}

/// Learns recorded -> live values from the message the recording expected and the one the
/// daemon sent at the same place: lines paired by key, their variable words paired by position
/// when every other word agrees. The first pairing of a value wins.
fn learn(expected: &[u8], live: &[u8], map: &mut HashMap<String, String>) {
    let e = String::from_utf8_lossy(expected);
    let l = String::from_utf8_lossy(live);
    let live_lines: HashMap<(String, usize), &str> = keyed_lines(&l).into_iter().collect();
    for (key, el) in keyed_lines(&e) {
        let Some(ll) = live_lines.get(&key) else { continue };
        let (ew, lw) = (normalize::words(el), normalize::words(ll));
        if ew.len() != lw.len() {
            continue;
        }
        let same_shape = ew.iter().zip(&lw).all(|((er, ev), (lr, lv))| ev == lv && (*ev || el[er.clone()] == ll[lr.clone()]));
        if !same_shape {
            continue;
        }
        for ((er, variable), (lr, _)) in ew.iter().zip(&lw) {
            let (rv, lv) = (&el[er.clone()], &ll[lr.clone()]);
            if *variable && rv != lv {
                map.entry(rv.to_owned()).or_insert_with(|| lv.to_owned());
            }
        }
    }
}

/// `data` with every variable word found in `map` replaced, and Content-Length set to the
/// body's new length.
fn substitute(data: &[u8], map: &HashMap<String, String>) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let mut out = String::with_capacity(text.len() + 32);
    let mut at = 0;
    for (range, variable) in normalize::words(&text) {
        if let Some(to) = map.get(&text[range.clone()]).filter(|_| variable) {
            out.push_str(&text[at..range.start]);
            out.push_str(to);
            at = range.end;
        }
    }
    out.push_str(&text[at..]);
    if out == text {
        return data.to_vec();
    }
    fix_content_length(&out).into_bytes()
}

fn fix_content_length(text: &str) -> String {
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return text.to_owned() };
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    for line in lines.iter_mut().skip(1) {
        let Some((name, _)) = line.split_once(':') else { continue };
        if normalize::canonical_name(name) == "content-length" {
            *line = format!("{}: {}", name.trim(), body.len());
        }
    }
    format!("{}\r\n\r\n{body}", lines.join("\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:15302;branch=z9hG4bKabcdefgh12345678\r\nFrom: <sip:alice@ims.test>;tag=k2j3h4g5f6d7s8a9\r\nTo: <sip:bob@ims.test>;tag=1234SIPpTag01\r\nCall-ID: q1w2e3r4t5y6u7i8@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn values_the_daemon_drew_are_learned_and_substituted() {
        let expected = "INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:15302;branch=z9hG4bKabcdefgh12345678\r\nFrom: <sip:alice@ims.test>;tag=k2j3h4g5f6d7s8a9\r\nCall-ID: q1w2e3r4t5y6u7i8@127.0.0.1\r\nUser-Agent: Estuary/0.1\r\n\r\n";
        let live = "INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKzzzzyyyy00001111\r\nFrom: <sip:alice@ims.test>;tag=0000aaaa1111bbbb\r\nCall-ID: 9999xxxx8888wwww@127.0.0.1\r\nUser-Agent: Estuary/0.2 (other build)\r\n\r\n";
        let mut map = HashMap::new();
        learn(expected.as_bytes(), live.as_bytes(), &mut map);
        assert_eq!(map.get("z9hG4bKabcdefgh12345678").map(String::as_str), Some("z9hG4bKzzzzyyyy00001111"));
        assert_eq!(map.get("15302").map(String::as_str), Some("5070"));
        let out = String::from_utf8(substitute(RECORDED.as_bytes(), &map)).unwrap();
        assert!(out.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKzzzzyyyy00001111\r\n"), "{out}");
        assert!(out.contains(";tag=0000aaaa1111bbbb\r\n") && out.contains("Call-ID: 9999xxxx8888wwww@127.0.0.1\r\n"), "{out}");
        // The far end's own tag and the lines whose shape differs (User-Agent) are left alone.
        assert!(out.contains("tag=1234SIPpTag01") && !map.contains_key("0.1"), "{out} {map:?}");
    }

    #[test]
    fn content_length_follows_a_changed_body() {
        let msg = "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 31\r\n\r\nv=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000\r\n";
        let map = HashMap::from([("10.0.0.1".to_owned(), "127.0.0.1".to_owned()), ("4000".to_owned(), "40000".to_owned())]);
        let out = String::from_utf8(substitute(msg.as_bytes(), &map)).unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1;
        assert!(out.contains(&format!("Content-Length: {}\r\n", body.len())) && body.contains("127.0.0.1") && body.contains("m=audio 40000"), "{out}");
    }
}
