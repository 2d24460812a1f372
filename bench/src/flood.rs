//! A hostile source for the flood test (issue 12): one address sending about ten times a busy
//! node's signalling for a bounded time, on loopback only.
//!
//! - a SIP storm over WebSocket: REGISTER and INVITE alternately, at `ws_requests_per_s`
//!   spread over a few connections, answers read and counted;
//! - garbage datagrams to the IMS listener, from the same (untrusted) address;
//! - `idle_ws` WebSockets upgraded and then left silent;
//! - `half_open` TCP connections to the WSS listener that never start their TLS handshake.
//!
//! Everything stops by itself after `duration` (plus a second to close); nothing is sent to
//! any address but the daemon's listeners.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What the flooder does.
#[derive(Clone, Debug)]
pub struct Flood {
    /// The flooding host: a loopback address other than the legitimate clients'.
    pub source: IpAddr,
    pub duration: Duration,
    pub ws_requests_per_s: u32,
    /// WebSocket connections the storm is spread over.
    pub storm_connections: usize,
    pub garbage_per_s: u32,
    pub idle_ws: usize,
    pub half_open: usize,
}

impl Flood {
    /// The figures: ~10x nominal load for 10 s.
    pub fn tenfold(source: IpAddr) -> Flood {
        Flood {
            source,
            duration: Duration::from_secs(10),
            ws_requests_per_s: 2000,
            storm_connections: 4,
            garbage_per_s: 2000,
            idle_ws: 200,
            half_open: 200,
        }
    }
}

/// What the flooder saw.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    pub requests_sent: u64,
    /// Answers to the storm, by class: 503 (throttled), other finals, provisionals.
    pub answered_503: u64,
    pub answered_other: u64,
    /// Storm and idle WebSockets that completed their upgrade / were refused.
    pub ws_upgraded: u64,
    pub ws_refused: u64,
    pub half_open_connected: u64,
    pub garbage_sent: u64,
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    answered_503: AtomicU64,
    answered_other: AtomicU64,
    ws_upgraded: AtomicU64,
    ws_refused: AtomicU64,
    half_open_connected: AtomicU64,
    garbage_sent: AtomicU64,
}

/// Runs the flood against the daemon's listeners; returns when it is over.
pub async fn run(flood: Flood, ws: SocketAddr, wss: SocketAddr, ims: SocketAddr) -> FloodReport {
    let c = Arc::new(Counters::default());
    let end = tokio::time::Instant::now() + flood.duration;
    let mut tasks = Vec::new();
    // Upgraded connections first (idle ones, then the storm's), then the half-open ones: once
    // a source has its share of half-open connections, the daemon refuses every new one from
    // it until they time out, which would leave the request limits unexercised.
    let mut idle = Vec::new();
    for _ in 0..flood.idle_ws {
        match websocket_from(flood.source, ws).await {
            Some(w) => {
                c.ws_upgraded.fetch_add(1, Ordering::Relaxed);
                idle.push(w);
            }
            None => {
                c.ws_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let per_conn = flood.ws_requests_per_s / flood.storm_connections.max(1) as u32;
    for k in 0..flood.storm_connections {
        tasks.push(tokio::spawn(storm(flood.source, ws, k, per_conn, end, c.clone())));
    }
    // Let the storm connections upgrade before the half-open ones fill the source's share.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut half_open = Vec::new();
    for _ in 0..flood.half_open {
        if let Ok(s) = connect_from(flood.source, wss).await {
            c.half_open_connected.fetch_add(1, Ordering::Relaxed);
            half_open.push(s);
        }
    }
    tasks.push(tokio::spawn(garbage(flood.source, ims, flood.garbage_per_s, end, c.clone())));
    for t in tasks {
        let _ = t.await;
    }
    drop(idle);
    drop(half_open);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    FloodReport {
        requests_sent: get(&c.requests_sent),
        answered_503: get(&c.answered_503),
        answered_other: get(&c.answered_other),
        ws_upgraded: get(&c.ws_upgraded),
        ws_refused: get(&c.ws_refused),
        half_open_connected: get(&c.half_open_connected),
        garbage_sent: get(&c.garbage_sent),
    }
}

async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(Duration::from_secs(2), sock.connect(to)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn websocket_from(source: IpAddr, ws: SocketAddr) -> Option<Ws> {
    let stream = connect_from(source, ws).await.ok()?;
    let mut req = format!("ws://{ws}/").into_client_request().ok()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let handshake = tokio_tungstenite::client_async(req, stream);
    tokio::time::timeout(Duration::from_secs(3), handshake).await.ok()?.ok().map(|(w, _)| w)
}

/// One storm connection: `rate` requests a second until `end`, reading answers meanwhile.
async fn storm(source: IpAddr, ws: SocketAddr, k: usize, rate: u32, end: tokio::time::Instant, c: Arc<Counters>) {
    let Some(w) = websocket_from(source, ws).await else {
        c.ws_refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.ws_upgraded.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = w.split();
    let reader = {
        let c = c.clone();
        tokio::spawn(async move {
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end + Duration::from_secs(1), rx.next()).await {
                let Message::Text(t) = msg else { continue };
                match t.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) {
                    Some(503) => c.answered_503.fetch_add(1, Ordering::Relaxed),
                    Some(code) if code >= 200 => c.answered_other.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        })
    };
    let me = format!("{source}:{}", 40000 + k);
    let mut pace = Pace::new(rate, end);
    while let Some(n) = pace.next().await {
        let msg = if n.is_multiple_of(2) { register(&me, k, n) } else { invite(&me, k, n) };
        if tx.send(Message::text(msg)).await.is_err() {
            reader.abort();
            return;
        }
        c.requests_sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = tx.close().await;
    let _ = reader.await;
}

fn register(me: &str, k: usize, n: u64) -> String {
    format!(
        "REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/WS flood{k}.invalid;branch=z9hG4bKflood{k}x{n}\r\nMax-Forwards: 70\r\n\
         To: <sip:flood{n}@ims.test>\r\nFrom: <sip:flood{n}@ims.test>;tag=f{n}\r\nCall-ID: flood-{k}-{n}\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:flood@{me};transport=ws>;expires=600\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite(me: &str, k: usize, n: u64) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:victim@ims.test SIP/2.0\r\nVia: SIP/2.0/WS flood{k}.invalid;branch=z9hG4bKflood{k}y{n}\r\nMax-Forwards: 70\r\n\
         To: <sip:victim@ims.test>\r\nFrom: <sip:flood@ims.test>;tag=g{n}\r\nCall-ID: floodcall-{k}-{n}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{me};transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Datagrams of junk (and a few SIP-looking lines) to the IMS listener at `rate` a second.
async fn garbage(source: IpAddr, ims: SocketAddr, rate: u32, end: tokio::time::Instant, c: Arc<Counters>) {
    let Ok(sock) = UdpSocket::bind(SocketAddr::new(source, 0)).await else { return };
    let mut pace = Pace::new(rate, end);
    while let Some(n) = pace.next().await {
        let junk = if n.is_multiple_of(4) {
            format!("OPTIONS sip:gw SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKg{n}\r\nCSeq: 1 OPTIONS\r\n\r\n").into_bytes()
        } else {
            (0..(64 + n % 400)).map(|i| (n.wrapping_mul(2654435761).wrapping_add(i) >> 3) as u8).collect()
        };
        if sock.send_to(&junk, ims).await.is_ok() {
            c.garbage_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `rate` numbered events a second until `end`, released in 10 ms ticks.
struct Pace {
    tick: tokio::time::Interval,
    per_tick: u32,
    left_in_tick: u32,
    n: u64,
    end: tokio::time::Instant,
}

impl Pace {
    fn new(rate: u32, end: tokio::time::Instant) -> Pace {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Pace { tick, per_tick: (rate / 100).max(1), left_in_tick: 0, n: 0, end }
    }

    /// The next event's number (1, 2, ...), or `None` once `end` has passed.
    async fn next(&mut self) -> Option<u64> {
        if self.left_in_tick == 0 {
            if tokio::time::Instant::now() >= self.end {
                return None;
            }
            self.tick.tick().await;
            self.left_in_tick = self.per_tick;
        }
        self.left_in_tick -= 1;
        self.n += 1;
        Some(self.n)
    }
}
