//! The engine task: the only owner of the [`Core`] (the signalling machine, and the media hub
//! as its media plane), so it needs no locks. It turns socket events into [`Input`]s, carries
//! out every [`Output`], and feeds [`Input::Timeout`] when `poll_timeout` comes due.
//!
//! Each `handle_input` plus the drain of its outputs runs under `catch_unwind`: a bug in the
//! engine costs the event that triggered it (counted in `estuary_engine_panics_total`), not
//! the process (STYLE.md R6).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_core::{ConnId, Core, DiameterInput, Flow, Input, MediaPlane, Output, Sample, Side, Transport};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::ctx::Ctx;
use crate::diameter::DiameterLinks;
use crate::events::{Event, Writer};
use crate::recorder::Lane;
use crate::ims;
use crate::metrics::Metric;

/// Safety valve against an engine that never stops producing output for one input.
const MAX_OUTPUTS_PER_INPUT: usize = 100_000;

/// The sans-IO surface the driver needs: the composed [`Core`], whose media plane is the
/// media threads' hub. A trait so the driver's own behaviour (panic isolation, output
/// routing) is testable with a fake engine.
pub trait Machine {
    fn handle_input(&mut self, now: Instant, input: Input<'_>);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn metrics(&self, now: Instant) -> Vec<Sample>;
    /// How many more bound media ports the machine wants (see [`Core::ports_wanted`]).
    fn ports_wanted(&self, now: Instant) -> usize;
    fn grant_ports(&mut self, ports: Vec<u16>);
    /// The transcoder's current figure for a video stream, in audio channels.
    fn set_video_channel_cost(&mut self, units: usize);
    /// Input from a policy peer's Diameter connection.
    fn handle_diameter(&mut self, _now: Instant, _input: DiameterInput<'_>) {}
    /// A media thread's ICE agent selected the browser's address for a call.
    fn handle_media_path(&mut self, _now: Instant, _call: u64, _remote: SocketAddr) {}
    /// Stop taking new calls (a graceful stop).
    fn drain(&mut self) {}
    /// A reloaded signalling configuration.
    fn reconfigure(&mut self, _cfg: estuary_b2bua::B2buaConfig) {}
    /// The next hop's targets, resolved again.
    fn set_next_hops(&mut self, _targets: Vec<estuary_b2bua::next_hops::HopTarget>) {}
    /// A reloaded `rx.peers` (see `Policy::reconfigure_peers`); `false` without Rx.
    fn reconfigure_rx_peers(&mut self, _now: Instant, _retire: &[usize], _add: Vec<(estuary_diameter::Peer, String)>, _order: &[usize]) -> bool {
        false
    }
}

impl<P: MediaPlane> Machine for Core<P> {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        Core::handle_input(self, now, input)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Core::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Core::poll_timeout(self)
    }
    fn metrics(&self, now: Instant) -> Vec<Sample> {
        Core::metrics(self, now)
    }
    fn ports_wanted(&self, now: Instant) -> usize {
        Core::ports_wanted(self, now)
    }
    fn grant_ports(&mut self, ports: Vec<u16>) {
        Core::grant_ports(self, ports)
    }
    fn set_video_channel_cost(&mut self, units: usize) {
        Core::set_video_channel_cost(self, units)
    }
    fn handle_diameter(&mut self, now: Instant, input: DiameterInput<'_>) {
        Core::handle_diameter(self, now, input)
    }
    fn handle_media_path(&mut self, now: Instant, call: u64, remote: SocketAddr) {
        Core::handle_media_path(self, now, call, remote)
    }
    fn drain(&mut self) {
        Core::drain(self)
    }
    fn reconfigure(&mut self, cfg: estuary_b2bua::B2buaConfig) {
        Core::reconfigure(self, cfg)
    }
    fn set_next_hops(&mut self, targets: Vec<estuary_b2bua::next_hops::HopTarget>) {
        Core::set_next_hops(self, targets)
    }
    fn reconfigure_rx_peers(&mut self, now: Instant, retire: &[usize], add: Vec<(estuary_diameter::Peer, String)>, order: &[usize]) -> bool {
        Core::reconfigure_rx_peers(self, now, retire, add, order)
    }
}

struct Conn {
    side: Side,
    local: SocketAddr,
    remote: SocketAddr,
    writer: Writer,
}

pub struct Engine<M> {
    machine: M,
    ctx: Arc<Ctx>,
    /// The IMS UDP socket (a dup of the receiving one), non-blocking. Sent on directly:
    /// tokio's `try_send_to` reports WouldBlock until its reactor has seen the socket
    /// writable, which would drop early datagrams; the kernel only does so when its buffer
    /// is really full.
    udp: std::net::UdpSocket,
    /// Where SIP over UDP leaves from (also written for IMS TCP in captures).
    ims_local: SocketAddr,
    conns: HashMap<ConnId, Conn>,
    /// Open IMS TCP connection per remote, reused for every message to it (RFC 3261 §18.1.1).
    tcp_by_remote: HashMap<SocketAddr, ConnId>,
    /// Messages waiting for an outbound TCP connect to finish.
    connecting: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// Destinations found unreachable while executing outputs, fed back after the drain.
    unreachable: VecDeque<Flow>,
    /// The deadline most recently fed as Timeout, to stop a stuck deadline from spinning.
    last_fired: Option<Instant>,
    /// When a media port bind last failed for a reason other than a port in use.
    bind_error_logged: Option<Instant>,
    /// The video cost last given to the machine (0: none yet).
    video_cost: usize,
    /// Connections toward the policy peers (`rx.peers`).
    diameter: DiameterLinks,
}

impl<M: Machine> Engine<M> {
    pub fn new(machine: M, ctx: Arc<Ctx>, udp: std::net::UdpSocket, diameter: DiameterLinks) -> Self {
        let ims_local = udp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Engine {
            machine,
            ctx,
            udp,
            ims_local,
            conns: HashMap::new(),
            tcp_by_remote: HashMap::new(),
            connecting: HashMap::new(),
            unreachable: VecDeque::new(),
            last_fired: None,
            bind_error_logged: None,
            video_cost: 0,
            diameter,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let ctx = self.ctx.clone();
        // What the machine queued before its first input (the policy peers' connects).
        self.feed_with("start", |_, _| {});
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = ctx.shutting_down() => break,
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                () = sleep => {
                    self.last_fired = deadline;
                    self.feed(Input::Timeout);
                }
            }
        }
        debug!("engine task stopped");
    }

    /// Before a message that may carry an offer: the transcoder's figure for a video stream
    /// moves as the pool measures the first video calls; admission uses the latest.
    fn refresh_video_cost(&mut self) {
        let Some(t) = &self.ctx.transcoder else { return };
        let units = t.video_channel_cost();
        if units != self.video_cost {
            if self.video_cost != 0 {
                info!(audio_channels = units, "video transcoding cost measured");
            }
            self.video_cost = units;
            self.machine.set_video_channel_cost(units);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let machine = &mut self.machine;
        let deadline = match catch_unwind(AssertUnwindSafe(|| machine.poll_timeout())) {
            Ok(d) => d,
            Err(panic) => {
                self.count_panic("poll_timeout", &panic);
                // Retry later rather than never: timers must not die with one bad call.
                Some(now() + Duration::from_secs(1))
            }
        };
        // A deadline that does not move after firing would spin the loop; pace it.
        match (deadline, self.last_fired) {
            (Some(d), Some(fired)) if d <= fired => Some(d.max(now() + Duration::from_millis(1))),
            _ => deadline,
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Opened {
                conn,
                side,
                transport,
                local,
                remote,
                writer,
            } => {
                if side == Side::Ims {
                    // Keep the first connection to a remote; a second one still works for
                    // messages received on it, as responses go back by `conn`.
                    self.tcp_by_remote.entry(remote).or_insert(conn);
                    if let Some(queued) = self.connecting.remove(&remote) {
                        for data in queued {
                            self.send_conn_data(conn, &writer, data);
                        }
                    }
                }
                self.conns.insert(
                    conn,
                    Conn {
                        side,
                        local,
                        remote,
                        writer,
                    },
                );
                self.feed(Input::ConnectionOpened {
                    conn,
                    side,
                    transport,
                    local,
                    remote,
                });
            }
            Event::Received {
                flow,
                conn,
                remote,
                data,
            } => {
                let side = match flow {
                    Flow::Web { .. } => Metric::WebMessagesReceived,
                    Flow::Ims { .. } => Metric::ImsMessagesReceived,
                };
                self.ctx.stats.inc(side);
                self.refresh_video_cost();
                let record = self.ctx.recorder.records_sip().then(|| {
                    let local = conn.and_then(|c| self.conns.get(&c)).map_or(self.ims_local, |c| c.local);
                    (lane_of(flow), remote, local, &data[..])
                });
                self.feed_recorded(
                    Input::Receive {
                        flow,
                        conn,
                        remote,
                        data: &data,
                    },
                    record,
                );
            }
            Event::Closed { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    if c.side == Side::Ims && self.tcp_by_remote.get(&c.remote) == Some(&conn) {
                        self.tcp_by_remote.remove(&c.remote);
                    }
                }
                self.feed(Input::ConnectionClosed { conn });
            }
            Event::ConnectFailed { remote, transport } => {
                self.connecting.remove(&remote);
                self.unreachable.push_back(Flow::Ims { transport, remote });
                self.feed_unreachable();
            }
            Event::UdpUnreachable { remote } => {
                self.unreachable.push_back(Flow::Ims {
                    transport: Transport::Udp,
                    remote,
                });
                self.feed_unreachable();
            }
            Event::PictureFastUpdate { call } => self.feed(Input::PictureFastUpdate { call }),
            Event::MediaPath { call, remote } => self.feed_with("handle_media_path", |m, now| m.handle_media_path(now, call, remote)),
            Event::Diameter { peer, generation, event } => {
                if self.diameter.is_current(peer, generation, &event) {
                    self.feed_with("handle_diameter", |m, now| m.handle_diameter(now, crate::diameter::input(peer, &event)));
                }
            }
            Event::MediaFailed { call, reason, cause } => {
                self.feed(Input::MediaFailed { call, reason: &reason, cause });
            }
            Event::Metrics(reply) => {
                let machine = &mut self.machine;
                let samples = match catch_unwind(AssertUnwindSafe(|| machine.metrics(now()))) {
                    Ok(s) => s,
                    Err(panic) => {
                        self.count_panic("metrics", &panic);
                        Vec::new()
                    }
                };
                let _ = reply.send(samples);
            }
            Event::Drain => {
                tracing::info!("draining: new calls and the dispatcher's probes get 503");
                self.machine.drain();
            }
            Event::EndCalls => self.feed(Input::Shutdown),
            Event::Reconfigure(cfg) => self.machine.reconfigure(*cfg),
            Event::NextHops(targets) => self.machine.set_next_hops(targets),
            Event::StateAnswer { query, answer } => self.feed(Input::StateAnswer { query, answer }),
            Event::HandOverWanted { token } => self.feed(Input::HandOverWanted { token: &token }),
            Event::HandOver => self.feed(Input::HandOver),
            Event::RxPeers(peers) => {
                let Some(plan) = self.diameter.plan(&peers) else {
                    warn!("rx.peers reloaded, but Rx is off: nothing to change");
                    return;
                };
                // The connections first: the peer set's transmits for new peers name them.
                self.diameter.commit(&plan);
                let crate::diameter::PeerPlan { retire, add, order, .. } = plan;
                self.run_isolated("reconfigure_rx_peers", move |m, now| {
                    m.reconfigure_rx_peers(now, &retire, add, &order);
                });
            }
            Event::Stall(d) => {
                tracing::warn!(?d, "TEST HOOK: engine stalled on request");
                std::thread::sleep(d);
            }
        }
    }

    /// One input into the engine, then every output it produced, then any unreachable
    /// reports those outputs caused.
    fn feed(&mut self, input: Input<'_>) {
        self.feed_recorded(input, None);
    }

    /// As [`Self::feed`]; `inbound` is the received SIP message to record, written after the
    /// call it starts is known (so an initial INVITE lands in its call's capture) and before
    /// what the engine sent in reply.
    fn feed_recorded(&mut self, input: Input<'_>, inbound: Option<(Lane, SocketAddr, SocketAddr, &[u8])>) {
        let now = now();
        let machine = &mut self.machine;
        let result = catch_unwind(AssertUnwindSafe(|| {
            machine.handle_input(now, input);
            let mut outputs = Vec::new();
            while let Some(out) = machine.poll_output() {
                outputs.push(out);
                if outputs.len() >= MAX_OUTPUTS_PER_INPUT {
                    break;
                }
            }
            outputs
        }));
        match result {
            Ok(outputs) => {
                if outputs.len() >= MAX_OUTPUTS_PER_INPUT {
                    error!(
                        outputs = outputs.len(),
                        "engine output did not end; rest discarded"
                    );
                }
                {
                    let r = &self.ctx.recorder;
                    for out in &outputs {
                        if let Output::CallStarted { call, web_call_id, ims_call_id } = out {
                            r.call_started(*call, web_call_id.clone(), ims_call_id.clone());
                        }
                    }
                    if let Some((lane, src, dst, data)) = inbound {
                        r.sip(lane, src, dst, data);
                    }
                }
                // The core reports a call's end after the messages that ended it (the BYE's
                // 200 belongs in the call's capture).
                for out in outputs {
                    self.execute(out);
                }
            }
            Err(panic) => self.count_panic("handle_input", &panic),
        }
        self.feed_unreachable();
        self.grant_ports(now);
    }

    /// Bind before announce: the machine puts in SDP only ports bound here first, in batches
    /// when its spare ones run low (a few dozen binds now and then, not one per call).
    fn grant_ports(&mut self, now: Instant) {
        let want = self.machine.ports_wanted(now);
        if want == 0 {
            return;
        }
        let (ports, err) = self.ctx.media_ports.bind(want, now);
        if let Some(e) = err {
            crate::ports::log_bind_error(&e, &mut self.bind_error_logged, now);
        }
        if !ports.is_empty() {
            self.machine.grant_ports(ports);
        }
    }

    /// An input that is not SIP (a policy peer's bytes, a media path), then its outputs.
    fn feed_with(&mut self, what: &str, f: impl FnOnce(&mut M, Instant)) {
        self.run_isolated(what, f);
        self.feed_unreachable();
    }

    fn feed_unreachable(&mut self) {
        // Bounded by the outputs of each round; each report is one input.
        while let Some(flow) = self.unreachable.pop_front() {
            self.ctx.stats.inc(Metric::UnreachableReported);
            self.run_isolated("handle_input(Unreachable)", |m, now| m.handle_input(now, Input::Unreachable { flow }));
        }
    }

    /// One input given by `f`, under `catch_unwind`, then every output it produced, carried
    /// out. A panic costs this input only and is counted as `what`'s.
    fn run_isolated(&mut self, what: &str, f: impl FnOnce(&mut M, Instant)) {
        let now = now();
        let machine = &mut self.machine;
        let result = catch_unwind(AssertUnwindSafe(|| {
            f(machine, now);
            std::iter::from_fn(|| machine.poll_output()).take(MAX_OUTPUTS_PER_INPUT).collect::<Vec<_>>()
        }));
        match result {
            Ok(outputs) => outputs.into_iter().for_each(|o| self.execute(o)),
            Err(panic) => self.count_panic(what, &panic),
        }
    }

    fn count_panic(&self, call: &str, panic: &Box<dyn std::any::Any + Send>) {
        self.ctx.stats.inc(Metric::EnginePanics);
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string payload".into());
        error!(call, panic = %msg, "engine panicked; the event was dropped");
    }

    fn execute(&mut self, out: Output) {
        match out {
            Output::RegistrationShared(r) => {
                if let Some(c) = &self.ctx.cluster {
                    c.put_registration(&r);
                }
            }
            Output::RegistrationRemoved { token, web_call_id } => {
                if let Some(c) = &self.ctx.cluster {
                    c.remove_registration(&token, &web_call_id);
                }
            }
            Output::StateQuery { query, ask } => match &self.ctx.cluster {
                Some(c) => c.query(query, ask),
                // (The engine asks only with share_state, which cluster.enabled sets.)
                None => self.feed(Input::StateAnswer { query, answer: estuary_b2bua::StateAnswer::Unknown }),
            },
            Output::CallShared(call) => {
                if let Some(c) = &self.ctx.cluster {
                    c.put_call(&call);
                }
            }
            Output::CallUnshared { call, dialogs, binding } => {
                if let Some(c) = &self.ctx.cluster {
                    c.remove_call(call, &dialogs, binding.as_deref());
                }
            }
            Output::HandOverWanted { token } => {
                if let Some(c) = &self.ctx.cluster {
                    c.want_hand_over(&token);
                }
            }
            Output::Transmit {
                flow: Flow::Web { conn },
                data,
            } => {
                self.ctx.stats.inc(Metric::WebMessagesSent);
                if let Some(c) = self.conns.get(&conn) {
                    let r = &self.ctx.recorder;
                    r.sip(Lane::WebSip, c.local, c.remote, &data);
                }
                self.send_conn(conn, data);
            }
            Output::Transmit {
                flow:
                    Flow::Ims {
                        transport: Transport::Udp,
                        remote,
                    },
                data,
            } => {
                self.ctx.stats.inc(Metric::ImsMessagesSent);
                {
                    let r = &self.ctx.recorder;
                    r.sip(Lane::ImsSip, self.ims_local, remote, &data);
                }
                match self.udp.send_to(&data, remote) {
                    Ok(_) => {}
                    // The socket buffer is full: UDP is lossy and SIP retransmits (§17.1.1.2).
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.ctx.stats.inc(Metric::OutputsDropped);
                    }
                    Err(e) => {
                        debug!(%remote, error = %e, "UDP send failed");
                        self.unreachable.push_back(Flow::Ims {
                            transport: Transport::Udp,
                            remote,
                        });
                    }
                }
            }
            Output::Transmit {
                flow:
                    Flow::Ims {
                        transport: transport @ (Transport::Tcp | Transport::Tls),
                        remote,
                    },
                data,
            } => {
                self.ctx.stats.inc(Metric::ImsMessagesSent);
                {
                    let r = &self.ctx.recorder;
                    r.sip(Lane::ImsSip, self.ims_local, remote, &data);
                }
                if let Some(&conn) = self.tcp_by_remote.get(&remote) {
                    self.send_conn(conn, data);
                } else if let Some(queue) = self.connecting.get_mut(&remote) {
                    queue.push(data);
                } else {
                    self.connecting.insert(remote, vec![data]);
                    ims::spawn_connect(self.ctx.clone(), remote, transport);
                }
            }
            Output::Transmit {
                flow: Flow::Ims { transport, remote },
                ..
            } => {
                warn!(?transport, %remote, "engine asked for a transport the IMS side does not have");
                self.ctx.stats.inc(Metric::OutputsDropped);
            }
            Output::Close { conn } => match self.conns.get(&conn) {
                Some(c) => c.writer.close.notify_one(),
                None => debug!(?conn, "close for a connection already gone"),
            },
            // The media threads send their calls' media themselves.
            Output::Datagram { .. } => {
                debug!("datagram output from a plane the engine does not run inline; dropped");
                self.ctx.stats.inc(Metric::OutputsDropped);
            }
            // Reported to the recorder before the input's message (feed_recorded).
            Output::CallStarted { .. } => {}
            Output::CallEnded { call, summary, policy } => {
                {
                    let r = &self.ctx.recorder;
                    r.call_ended(call);
                }
                self.ctx.records.ended(call, summary, policy);
            }
            Output::Diameter { peer, transmit } => self.diameter.transmit(peer, transmit),
        }
    }

    fn send_conn(&mut self, conn: ConnId, data: Vec<u8>) {
        match self.conns.get(&conn) {
            Some(c) => self.send_conn_data(conn, &c.writer, data),
            None => {
                // The Closed event may still be in flight; the engine learns of it next.
                debug!(?conn, "transmit to a connection already gone");
                self.ctx.stats.inc(Metric::OutputsDropped);
            }
        }
    }

    fn send_conn_data(&self, conn: ConnId, writer: &Writer, data: Vec<u8>) {
        match writer.data.try_send(data) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(?conn, "connection not draining its queue; closing it");
                self.ctx.stats.inc(Metric::OutputsDropped);
                writer.close.notify_one();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.ctx.stats.inc(Metric::OutputsDropped),
        }
    }
}

/// The engine's clock: tokio's, so daemon tests may pause it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The capture interface a message of `flow` belongs on.
fn lane_of(flow: Flow) -> Lane {
    match flow {
        Flow::Web { .. } => Lane::WebSip,
        Flow::Ims { .. } => Lane::ImsSip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{watch, Notify};

    /// Panics on a message starting with "PANIC"; answers anything else on the same flow.
    struct Fake {
        out: VecDeque<Output>,
        handled: u64,
    }

    impl Machine for Fake {
        fn handle_input(&mut self, _now: Instant, input: Input<'_>) {
            self.handled += 1;
            if let Input::Receive { flow, data, .. } = input {
                assert!(!data.starts_with(b"PANIC"), "engine bug");
                self.out.push_back(Output::Transmit {
                    flow,
                    data: data.to_vec(),
                });
            }
        }
        fn poll_output(&mut self) -> Option<Output> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn set_video_channel_cost(&mut self, _units: usize) {}
        fn metrics(&self, _now: Instant) -> Vec<Sample> {
            Vec::new()
        }
        fn ports_wanted(&self, _now: Instant) -> usize {
            0
        }
        fn grant_ports(&mut self, _ports: Vec<u16>) {}
    }

    fn nonblocking_udp() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[tokio::test]
    async fn a_panicking_input_is_counted_and_the_engine_goes_on() {
        let (events, _rx) = mpsc::channel(8);
        let (_stop, shutdown) = watch::channel(false);
        let ctx = Arc::new(Ctx::new(
            events,
            shutdown,
            &estuary_config::Config::default(),
            None,
            crate::recorder::Recorder::off(),
            crate::records::CallRecords::start(&Default::default()).unwrap(),
        ));
        let udp = nonblocking_udp();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let remote = peer.local_addr().unwrap();
        let mut engine = Engine::new(
            Fake {
                out: VecDeque::new(),
                handled: 0,
            },
            ctx.clone(),
            udp,
            DiameterLinks::new(ctx.clone(), &[], None),
        );
        let flow = Flow::Ims {
            transport: Transport::Udp,
            remote,
        };

        engine.on_event(Event::Received {
            flow,
            conn: None,
            remote,
            data: b"PANIC now".to_vec(),
        });
        assert_eq!(ctx.stats.get(Metric::EnginePanics), 1);

        engine.on_event(Event::Received {
            flow,
            conn: None,
            remote,
            data: b"after".to_vec(),
        });
        let mut buf = [0u8; 16];
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(2), peer.recv_from(&mut buf))
                .await
                .expect("the engine still sends after a panic")
                .unwrap();
        assert_eq!(&buf[..n], b"after");
        assert_eq!(engine.machine.handled, 2);
    }

    #[tokio::test]
    async fn web_output_goes_to_its_connection_and_close_is_signalled() {
        let (events, _rx) = mpsc::channel(8);
        let (_stop, shutdown) = watch::channel(false);
        let ctx = Arc::new(Ctx::new(
            events,
            shutdown,
            &estuary_config::Config::default(),
            None,
            crate::recorder::Recorder::off(),
            crate::records::CallRecords::start(&Default::default()).unwrap(),
        ));
        let udp = nonblocking_udp();
        let mut engine = Engine::new(
            Fake {
                out: VecDeque::new(),
                handled: 0,
            },
            ctx.clone(),
            udp,
            DiameterLinks::new(ctx.clone(), &[], None),
        );
        let (tx, mut rx) = mpsc::channel(4);
        let close = Arc::new(Notify::new());
        let conn = ConnId(7);
        let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let writer = Writer {
            data: tx,
            close: close.clone(),
        };
        engine.on_event(Event::Opened {
            conn,
            side: Side::Web,
            transport: Transport::Ws,
            local: remote,
            remote,
            writer,
        });
        engine.on_event(Event::Received {
            flow: Flow::Web { conn },
            conn: Some(conn),
            remote,
            data: b"hi".to_vec(),
        });
        assert_eq!(rx.recv().await.unwrap(), b"hi");
        engine.execute(Output::Close { conn });
        tokio::time::timeout(std::time::Duration::from_secs(1), close.notified())
            .await
            .expect("close signalled");
        engine.on_event(Event::Closed { conn });
        engine.on_event(Event::Received {
            flow: Flow::Web { conn },
            conn: Some(conn),
            remote,
            data: b"late".to_vec(),
        });
        assert_eq!(ctx.stats.get(Metric::OutputsDropped), 1);
    }
}
