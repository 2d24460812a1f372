//! TEST FACILITY: runs the built-in IMS test peer (`estuary-testpeer`) when
//! `ims.next_hop = "builtin"`. It binds its own UDP socket on the `ims.listen` address (an
//! ephemeral port) and the gateway sends every IMS-bound request there, exactly as it would to
//! a real P-CSCF: the gateway's code path is the production one. One task runs the SIP engine;
//! each answered call gets a task that owns its media sockets (audio, and video while an echo
//! call has it) and its echo or tone state.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use estuary_config::Config;
use estuary_testpeer::{CallMedia, MediaPorts, Output, PeerConfig, Stream, TestPeer, VideoEcho, VideoStart, VideoStream, VideoUpdate};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::DaemonError;

/// Re-offers queued per call before the peer's engine waits (a handful at most in practice).
const UPDATE_QUEUE: usize = 8;
/// A video datagram may be as large as UDP allows (loopback has a 64 KiB MTU); a truncated one
/// would be echoed corrupt.
const VIDEO_BUF: usize = 65_535;

/// What the engine tells a running call's task.
enum Change {
    Stream(Stream),
    VideoStart(UdpSocket, Box<VideoEcho>),
    VideoStream(VideoStream),
    VideoStop,
}

/// A call's video: its socket and its echo.
type Video = (UdpSocket, Box<VideoEcho>);

/// Starts the peer; returns the SIP address the gateway's next hop becomes.
pub async fn start(cfg: &Config) -> Result<SocketAddr, DaemonError> {
    let ip = match cfg.ims.listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let sip = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| DaemonError::setup("ims.next_hop", format!("built-in test peer: cannot bind {ip}: {e}")))?;
    let addr = sip
        .local_addr()
        .map_err(|e| DaemonError::setup("ims.next_hop", format!("built-in test peer: {e}")))?;
    warn!(
        %addr,
        "ims.next_hop = builtin: the built-in IMS TEST PEER answers every REGISTER and calls to \
         echo@, tone@ and ring@; it is a test facility, not for production"
    );
    let mut peer_cfg = PeerConfig::new(addr);
    peer_cfg.t1 = cfg.sip.t1;
    peer_cfg.t2 = cfg.sip.t2;
    tokio::spawn(run(TestPeer::new(peer_cfg, rand::random()), sip, ip));
    Ok(addr)
}

/// Media sockets bound for calls being answered, until the engine starts their media.
struct Binder {
    ip: IpAddr,
    bound: HashMap<u16, std::net::UdpSocket>,
}

impl MediaPorts for Binder {
    fn open(&mut self) -> Option<u16> {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(self.ip, 0)).ok()?;
        sock.set_nonblocking(true).ok()?;
        let port = sock.local_addr().ok()?.port();
        self.bound.insert(port, sock);
        Some(port)
    }
}

async fn run(mut peer: TestPeer, sip: UdpSocket, ip: IpAddr) {
    let mut ports = Binder { ip, bound: HashMap::new() };
    // Per call, by its audio port: the channel to its task (dropping it ends the task).
    let mut calls: HashMap<u16, mpsc::Sender<Change>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(o) = peer.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    if let Err(e) = sip.send_to(&data, to).await {
                        debug!(%to, error = %e, "test peer: send failed");
                    }
                }
                Output::MediaStart { port, media, video } => match ports.bound.remove(&port).map(UdpSocket::from_std) {
                    Some(Ok(sock)) => {
                        let video = video.and_then(|v| take_video(&mut ports, v));
                        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
                        calls.insert(port, tx);
                        tokio::spawn(run_media(sock, media, video, rx));
                    }
                    _ => {
                        warn!(port, "test peer: media socket missing");
                        if let Some(v) = video {
                            ports.bound.remove(&v.port);
                        }
                    }
                },
                Output::MediaUpdate { port, stream, video } => {
                    let video = match video {
                        VideoUpdate::Unchanged => None,
                        VideoUpdate::Start(v) => take_video(&mut ports, v).map(|(s, e)| Change::VideoStart(s, e)),
                        VideoUpdate::Stream(s) => Some(Change::VideoStream(s)),
                        VideoUpdate::Stop { port: vport } => {
                            ports.bound.remove(&vport);
                            Some(Change::VideoStop)
                        }
                    };
                    if let Some(tx) = calls.get(&port) {
                        for change in std::iter::once(Change::Stream(stream)).chain(video) {
                            let _ = tx.send(change).await;
                        }
                    }
                }
                // Dropping the sender ends the call's media task and closes its sockets.
                Output::MediaStop { port } => {
                    calls.remove(&port);
                    ports.bound.remove(&port);
                }
            }
        }
        let deadline = peer.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = sip.recv_from(&mut buf) => match r {
                Ok((n, from)) => peer.handle_sip(Instant::now(), from, &buf[..n], &mut ports),
                Err(e) => debug!(error = %e, "test peer: receive failed"),
            },
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => peer.handle_timeout(Instant::now()),
        }
    }
}

/// The bound socket of a video the engine started, as a tokio socket.
fn take_video(ports: &mut Binder, v: VideoStart) -> Option<Video> {
    match ports.bound.remove(&v.port).map(UdpSocket::from_std) {
        Some(Ok(sock)) => Some((sock, v.echo)),
        _ => {
            warn!(port = v.port, "test peer: video socket missing");
            None
        }
    }
}

/// A datagram on the call's video socket; never ready while the call has no video.
async fn recv_video(video: &Option<Video>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match video {
        Some((sock, _)) => sock.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run_media(sock: UdpSocket, mut media: Box<CallMedia>, mut video: Option<Video>, mut updates: mpsc::Receiver<Change>) {
    let mut buf = [0u8; 2048];
    // Allocated when the call first has video.
    let mut vbuf = Vec::new();
    loop {
        if video.is_some() && vbuf.is_empty() {
            vbuf = vec![0u8; VIDEO_BUF];
        }
        let deadline = media.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    if let Some((to, len)) = media.handle_datagram(from, &mut buf, n) {
                        let _ = sock.send_to(&buf[..len], to).await;
                    }
                }
            }
            r = recv_video(&video, &mut vbuf) => {
                if let (Ok((n, from)), Some((vsock, echo))) = (r, video.as_mut()) {
                    if let Some((to, len)) = echo.handle_datagram(from, &mut vbuf, n) {
                        let _ = vsock.send_to(&vbuf[..len], to).await;
                    }
                }
            }
            update = updates.recv() => match update {
                Some(Change::Stream(stream)) => media.set_stream(stream),
                Some(Change::VideoStart(vsock, echo)) => video = Some((vsock, echo)),
                Some(Change::VideoStream(stream)) => {
                    if let Some((_, echo)) = video.as_mut() {
                        echo.set_stream(stream);
                    }
                }
                // Dropping the socket closes it.
                Some(Change::VideoStop) => video = None,
                None => return,
            },
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                while let Some((to, len)) = media.poll_transmit(Instant::now(), &mut buf) {
                    let _ = sock.send_to(&buf[..len], to).await;
                }
            }
        }
    }
}
