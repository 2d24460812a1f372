//! Diameter connections toward the policy peers (`rx.peers`), driven by the core's
//! `Output::Diameter` transmits: one tokio task per open connection, reporting back to the
//! engine task as [`Event::Diameter`].
//!
//! The sans-IO peer set decides when to connect, what to write and when to close; this module
//! only does it. Every connection attempt gets a new generation number, and the engine drops
//! reports from an older one, so a slow task of a connection the peer set has already given up
//! on can never feed a newer connection's state machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_config::{RxConfig, RxPeer};
use estuary_core::policy::{OnFailure, PolicySettings};
use estuary_core::{DiameterInput, DiameterTransmit, Policy};
use estuary_diameter::{Peer, PeerConfig, PeerSet};
use estuary_rx::{RxClient, UplinkFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::events::Event;

/// How long resolving and opening one connection may take; the peer set has its own, longer
/// deadline and reconnects with back-off after it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes queued toward one connection before it counts as stuck and is closed.
const WRITE_QUEUE: usize = 1024;
/// Read chunk: most Rx messages fit (an AAR is about 2 KB).
const READ_CHUNK: usize = 8192;

/// What a connection task reports.
#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    ConnectFailed,
    Bytes(Vec<u8>),
    Closed,
}

enum Command {
    Write(Vec<u8>),
    Close,
}

struct Link {
    target: RxPeer,
    generation: u64,
    writer: Option<mpsc::Sender<Command>>,
    /// A reload took the peer out of `rx.peers` (the peer set retired its index).
    retired: bool,
}

/// The connections, by peer index in the policy function's peer set (the order of `rx.peers`
/// at start; a reload adds peers at the end and retires those it no longer names).
pub struct DiameterLinks {
    ctx: Arc<Ctx>,
    links: Vec<Link>,
    /// How a peer added by a reload is set up (the `[rx]` in force at start).
    maker: Option<PeerMaker>,
}

/// A reload's `rx.peers` as changes to the peer set (see `Policy::reconfigure_peers`).
pub struct PeerPlan {
    pub retire: Vec<usize>,
    pub add: Vec<(Peer, String)>,
    pub order: Vec<usize>,
    added: Vec<RxPeer>,
}

impl DiameterLinks {
    pub fn new(ctx: Arc<Ctx>, peers: &[RxPeer], maker: Option<PeerMaker>) -> DiameterLinks {
        let links = peers.iter().map(|p| Link { target: p.clone(), generation: 0, writer: None, retired: false }).collect();
        DiameterLinks { ctx, links, maker }
    }

    /// What `next` (a reloaded `rx.peers`) changes: peers no longer named retire, new ones
    /// take the next indices, and `next`'s order becomes the priority. `None` without Rx.
    pub fn plan(&self, next: &[RxPeer]) -> Option<PeerPlan> {
        let maker = self.maker.as_ref()?;
        let in_service = |t: &RxPeer| self.links.iter().position(|l| !l.retired && l.target == *t);
        let retire: Vec<usize> = (0..self.links.len()).filter(|&i| !self.links[i].retired && !next.contains(&self.links[i].target)).collect();
        let mut added = Vec::new();
        let mut order = Vec::new();
        for t in next {
            match in_service(t) {
                Some(i) => order.push(i),
                None if !added.contains(t) => {
                    order.push(self.links.len() + added.len());
                    added.push(t.clone());
                }
                None => {}
            }
        }
        let add = added.iter().map(|t| (maker.peer(), t.to_string())).collect();
        Some(PeerPlan { retire, add, order, added })
    }

    /// Records a plan the peer set took: its new peers' connections, its retired ones.
    pub fn commit(&mut self, plan: &PeerPlan) {
        for &i in &plan.retire {
            if let Some(l) = self.links.get_mut(i) {
                l.retired = true;
            }
        }
        for t in &plan.added {
            self.links.push(Link { target: t.clone(), generation: 0, writer: None, retired: false });
        }
    }

    /// Carries out one transmit of the core's peer set.
    pub fn transmit(&mut self, peer: usize, transmit: DiameterTransmit) {
        let Some(link) = self.links.get_mut(peer) else {
            warn!(peer, "Diameter transmit for an unknown peer");
            return;
        };
        match transmit {
            DiameterTransmit::Connect => {
                link.generation += 1;
                // Dropping the old writer ends its task, if any is left.
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                link.writer = Some(tx);
                tokio::spawn(run(self.ctx.clone(), peer, link.generation, link.target.clone(), rx));
            }
            DiameterTransmit::Bytes(data) => match &link.writer {
                Some(w) => {
                    if let Err(e) = w.try_send(Command::Write(data)) {
                        warn!(peer = %link.target, error = %e, "Diameter connection not draining; closing it");
                        let _ = w.try_send(Command::Close);
                        link.writer = None;
                    }
                }
                None => debug!(peer = %link.target, "Diameter bytes for a closed connection"),
            },
            DiameterTransmit::Disconnect => {
                if let Some(w) = link.writer.take() {
                    // After what was queued before it.
                    let _ = w.try_send(Command::Close);
                }
            }
        }
    }

    /// Whether a report belongs to the current connection of `peer`; a final one (closed,
    /// failed) also forgets the connection.
    pub fn is_current(&mut self, peer: usize, generation: u64, event: &LinkEvent) -> bool {
        let Some(link) = self.links.get_mut(peer) else { return false };
        if link.generation != generation {
            return false;
        }
        if matches!(event, LinkEvent::Closed | LinkEvent::ConnectFailed) {
            link.writer = None;
        }
        true
    }
}

/// One connection's life: resolve, connect, then read and write until either side closes.
async fn run(ctx: Arc<Ctx>, peer: usize, generation: u64, target: RxPeer, mut commands: mpsc::Receiver<Command>) {
    let report = |event: LinkEvent| {
        let ctx = ctx.clone();
        async move {
            let _ = ctx.events.send(Event::Diameter { peer, generation, event }).await;
        }
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(peer = %target, error = %e, "Diameter connect failed");
            return report(LinkEvent::ConnectFailed).await;
        }
        Err(_) => {
            debug!(peer = %target, "Diameter connect timed out");
            return report(LinkEvent::ConnectFailed).await;
        }
    };
    let _ = stream.set_nodelay(true);
    report(LinkEvent::Connected).await;
    let (mut read, mut write) = stream.into_split();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Write(data)) => {
                    if let Err(e) = write.write_all(&data).await {
                        debug!(peer = %target, error = %e, "Diameter write failed");
                        break;
                    }
                }
                // Close, or the engine replaced this connection.
                Some(Command::Close) | None => {
                    let _ = write.shutdown().await;
                    break;
                }
            },
            n = read.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => report(LinkEvent::Bytes(buf[..n].to_vec())).await,
            },
        }
    }
    report(LinkEvent::Closed).await;
}

async fn connect(target: &RxPeer) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((target.host.as_str(), target.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

/// The engine's input for a current connection's report.
pub fn input(peer: usize, event: &LinkEvent) -> DiameterInput<'_> {
    match event {
        LinkEvent::Connected => DiameterInput::Connected { peer },
        LinkEvent::ConnectFailed => DiameterInput::ConnectFailed { peer },
        LinkEvent::Bytes(data) => DiameterInput::Bytes { peer, data },
        LinkEvent::Closed => DiameterInput::Closed { peer },
    }
}

/// Sets up one policy peer from `[rx]` (the same for every peer, those a reload adds too).
pub struct PeerMaker {
    cfg: RxConfig,
    advertised_ip: std::net::IpAddr,
    /// Seconds since the epoch at start: Origin-State-Id and the identifiers' seed.
    boot: u64,
}

impl PeerMaker {
    pub fn new(cfg: &RxConfig, advertised_ip: std::net::IpAddr) -> PeerMaker {
        let boot = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PeerMaker { cfg: cfg.clone(), advertised_ip, boot }
    }

    fn peer(&self) -> Peer {
        let cfg = &self.cfg;
        let mut c = PeerConfig::new(cfg.origin_host.clone(), cfg.origin_realm.clone());
        c.host_ip_addresses.push(self.advertised_ip);
        c.product_name = "Estuary".to_owned();
        c.applications.push(estuary_rx::RX_APPLICATION);
        c.validator = estuary_rx::rx_validator();
        c.watchdog_interval = cfg.watchdog;
        // RFC 6733 Tx: half the Rx deadline, so a request a silent peer holds is failed over
        // to the next one (T flag) while the call can still wait for its answer.
        c.request_timeout = cfg.timeout / 2;
        c.origin_state_id = self.boot as u32;
        Peer::new(c, self.boot, &mut rand::rng())
    }
}

/// The policy function from `[rx]`, or `None` when Rx is off. `advertised_ip` goes into CER
/// (Host-IP-Address); `web_media_ip` is the browser-facing end of every described flow.
pub fn policy(cfg: &RxConfig, now: Instant, advertised_ip: std::net::IpAddr, web_media_ip: std::net::IpAddr) -> Option<Policy> {
    if !cfg.enabled {
        return None;
    }
    let mut rng = rand::rng();
    let maker = PeerMaker::new(cfg, advertised_ip);
    let boot = maker.boot;
    let peers: Vec<Peer> = cfg.peers.iter().map(|_| maker.peer()).collect();
    let set = PeerSet::new(peers, boot, &mut rng);
    let mut rx_config = estuary_rx::RxConfig::new(cfg.origin_host.clone(), cfg.origin_realm.clone(), cfg.destination_realm.clone());
    rx_config.destination_host = cfg.destination_host.clone();
    rx_config.timeout = cfg.timeout;
    if !cfg.out_of_credit {
        rx_config.specific_actions.retain(|a| *a != estuary_rx::SpecificAction::IndicationOfOutOfCredit);
    }
    rx_config.uplink_filter = match cfg.uplink_filter {
        estuary_config::RxUplinkFilter::In => UplinkFilter::In,
        estuary_config::RxUplinkFilter::Out => UplinkFilter::Out,
    };
    let settings = PolicySettings {
        on_failure: match cfg.on_failure {
            estuary_config::RxOnFailure::Open => OnFailure::Open,
            estuary_config::RxOnFailure::Closed => OnFailure::Closed,
        },
        web_media_ip,
        peer_names: cfg.peers.iter().map(ToString::to_string).collect(),
    };
    info!(peers = ?settings.peer_names, on_failure = ?cfg.on_failure, "Rx toward the PCRF enabled");
    // Session-Ids must differ across restarts (RFC 6733 §8.8): boot seconds in the high half.
    Some(Policy::new(now, RxClient::new(rx_config, boot << 32), set, settings))
}
