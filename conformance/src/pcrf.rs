//! TEST FACILITY: a PCRF on a real TCP socket, for the daemon's Rx tests.
//!
//! [`PcrfServer`] listens on 127.0.0.1 (a free port), accepts any number of Diameter
//! connections, and serves each with an estuary-diameter responder [`Peer`] (CER/CEA, DWR/DWA,
//! DPR/DPA) on a real clock, one std thread per connection. Every request goes to one shared
//! [`Pcrf`] (estuary-rx's test PCRF): AARs are answered as [`PcrfServer::set_aar_answer`]
//! says, STRs with 2001, both recorded in decoded form; RARs and ASRs go out on command on
//! the connection the session's AAR came in on. Every byte either way is kept per
//! connection, so a test can write the exchange as a pcap ([`PcrfServer::write_pcap`]) and
//! have Wireshark's dissector check it.
//!
//! [`PcrfServer::kill`] (also on drop) closes the listener and every connection without a
//! DPR, as when a PCRF process dies: the gateway sees its TCP connection close and the port
//! refuse new ones.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estuary_diameter::{Message, Peer, PeerConfig, PeerEvent, Transmit};
use estuary_pcap::{LinkType, PcapWriter, TcpConversation};
use estuary_rx::pcrf::Pcrf;
pub use estuary_rx::pcrf::{AarAnswer, AarSummary, StrSummary};
use estuary_rx::{rx_validator, AbortCause, SpecificAction, RX_APPLICATION};

/// The PCRF's Origin-Realm.
pub const PCRF_REALM: &str = "ims.test";

/// How often a connection thread looks at its socket, its timers and its outbox.
const TICK: Duration = Duration::from_millis(10);

/// A running PCRF. See the module docs.
pub struct PcrfServer {
    label: String,
    addr: SocketAddr,
    origin_host: String,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
}

struct State {
    pcrf: Pcrf,
    conns: Vec<Conn>,
    /// Session-Id -> index in `conns` of the connection its requests came on.
    sessions: HashMap<String, usize>,
}

/// One accepted connection.
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    /// Wall-clock time of the accept.
    opened: Duration,
    /// (wall-clock time, from the client, bytes), in order.
    segments: Vec<(Duration, bool, Vec<u8>)>,
    /// A handle on the socket, to close it from outside.
    stream: Option<TcpStream>,
    /// Requests (RAR, ASR) waiting for the connection's thread.
    outbox: Vec<Message>,
    /// Capabilities exchanged and not closed since.
    up: bool,
    thread: Option<JoinHandle<()>>,
}

fn wall_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PcrfServer {
    /// Binds 127.0.0.1 on a free port and starts accepting. `label` names the PCRF in logs
    /// and in its Origin-Host (`pcrf-LABEL.ims.test`).
    pub fn start(label: &str) -> PcrfServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the PCRF's TCP listener on 127.0.0.1");
        let addr = listener.local_addr().expect("PCRF listener address");
        listener.set_nonblocking(true).expect("non-blocking PCRF listener");
        let clean: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let origin_host = format!("pcrf-{clean}.{PCRF_REALM}");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(State { pcrf: Pcrf::new(origin_host.clone(), PCRF_REALM), conns: Vec::new(), sessions: HashMap::new() }),
        });
        let thread = {
            let shared = shared.clone();
            let label = label.to_owned();
            let host = origin_host.clone();
            std::thread::Builder::new()
                .name(format!("pcrf-{clean}"))
                .spawn(move || accept_loop(listener, shared, label, host))
                .expect("spawn the PCRF's accept thread")
        };
        eprintln!("pcrf[{label}]: listening on {addr} as {origin_host}");
        PcrfServer { label: label.to_owned(), addr, origin_host, shared, listener: Some(thread) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `rx.peers` entry for it, `127.0.0.1:PORT`.
    pub fn peer_entry(&self) -> String {
        self.addr.to_string()
    }

    /// Its Origin-Host.
    pub fn origin_host(&self) -> &str {
        &self.origin_host
    }

    /// How later AARs are answered.
    pub fn set_aar_answer(&self, answer: AarAnswer) {
        self.shared.lock().pcrf.set_aar_answer(answer);
    }

    /// AARs received so far, in order.
    pub fn aars(&self) -> Vec<AarSummary> {
        self.shared.lock().pcrf.aars().cloned().collect()
    }

    /// STRs received so far, in order.
    pub fn strs(&self) -> Vec<StrSummary> {
        self.shared.lock().pcrf.strs().cloned().collect()
    }

    /// Answers (RAA, ASA) received so far, in order.
    pub fn answers(&self) -> Vec<Message> {
        self.shared.lock().pcrf.answers().to_vec()
    }

    /// Connections accepted so far (open or not).
    pub fn connections_accepted(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Connections whose capabilities exchange completed and that are still open.
    pub fn connections_up(&self) -> usize {
        self.shared.lock().conns.iter().filter(|c| c.up).count()
    }

    /// Polls (every 20 ms, for at most `timeout`) until `done` holds; whether it did.
    fn wait_for(&self, timeout: Duration, mut done: impl FnMut(&PcrfServer) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The AARs once there are at least `n`, or those there are after `timeout`: the caller
    /// asserts on what it got.
    pub fn wait_aars(&self, n: usize, timeout: Duration) -> Vec<AarSummary> {
        self.wait_for(timeout, |p| p.aars().len() >= n);
        self.aars()
    }

    /// The STRs once there are at least `n`, or those there are after `timeout`.
    pub fn wait_strs(&self, n: usize, timeout: Duration) -> Vec<StrSummary> {
        self.wait_for(timeout, |p| p.strs().len() >= n);
        self.strs()
    }

    /// The answers (RAA, ASA) once there are at least `n`, or those there are after `timeout`.
    pub fn wait_answers(&self, n: usize, timeout: Duration) -> Vec<Message> {
        self.wait_for(timeout, |p| p.answers().len() >= n);
        self.answers()
    }

    /// Whether a connection with capabilities exchanged is open within `timeout`.
    pub fn wait_up(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |p| p.connections_up() > 0)
    }

    /// Sends a RAR with Specific-Action INDICATION_OF_LOSS_OF_BEARER for media component 1
    /// of `session_id` (TS 29.214 §5.6.3), on the connection the session's requests came on.
    pub fn send_rar_loss_of_bearer(&self, session_id: &str) {
        let rar = self.shared.lock().pcrf.rar(session_id, &[SpecificAction::IndicationOfLossOfBearer], &[1]);
        self.send(session_id, rar);
    }

    /// Sends an ASR (Abort-Cause BEARER_RELEASED) for `session_id` (TS 29.214 §5.6.7).
    pub fn send_asr(&self, session_id: &str) {
        let asr = self.shared.lock().pcrf.asr(session_id, AbortCause::BearerReleased);
        self.send(session_id, asr);
    }

    /// Queues `request` on the session's connection, or the newest open one.
    fn send(&self, session_id: &str, request: Message) {
        let mut st = self.shared.lock();
        let index = st
            .sessions
            .get(session_id)
            .copied()
            .filter(|&i| st.conns[i].up)
            .or_else(|| st.conns.iter().rposition(|c| c.up))
            .unwrap_or_else(|| panic!("pcrf[{}]: no open connection to send {} for {session_id}", self.label, request.command_code));
        eprintln!("pcrf[{}]: sending command {} for {session_id} on connection {index}", self.label, request.command_code);
        st.conns[index].outbox.push(request);
    }

    /// Closes the listener and every connection at once, without DPR; waits for the
    /// threads. Idempotent.
    pub fn kill(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        let threads: Vec<JoinHandle<()>> = {
            let mut st = self.shared.lock();
            for c in st.conns.iter_mut() {
                if let Some(s) = c.stream.take() {
                    let _ = s.shutdown(Shutdown::Both);
                }
                c.up = false;
            }
            st.conns.iter_mut().filter_map(|c| c.thread.take()).collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }

    /// Writes every connection so far as TCP on loopback (raw IP, a synthetic three-way
    /// handshake, then one segment per read or write, at the times they happened) into a
    /// classic pcap: `tshark -d tcp.port==PORT,diameter` dissects it.
    pub fn write_pcap(&self, path: &Path) {
        let mut packets: Vec<(Duration, Vec<u8>)> = Vec::new();
        {
            let st = self.shared.lock();
            for c in &st.conns {
                let (mut tcp, handshake) = TcpConversation::open(c.client, c.server).expect("TCP handshake packets");
                for (i, p) in handshake.into_iter().enumerate() {
                    packets.push((c.opened + Duration::from_micros(i as u64), p));
                }
                for (t, from_client, bytes) in &c.segments {
                    for chunk in bytes.chunks(32 * 1024) {
                        packets.push((*t, tcp.segment(*from_client, chunk).expect("TCP segment")));
                    }
                }
            }
        }
        // Stable: the order within a connection stays.
        packets.sort_by_key(|(t, _)| *t);
        let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let mut w = PcapWriter::new(file, LinkType::RAW).expect("pcap header");
        for (t, p) in &packets {
            w.write_packet(*t, p).expect("pcap packet");
        }
        w.flush().expect("flush the pcap");
    }
}

impl Drop for PcrfServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, label: String, host: String) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, client)) => {
                let server = stream.local_addr().unwrap_or(client);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let handle = stream.try_clone().ok();
                let index = {
                    let mut st = shared.lock();
                    st.conns.push(Conn {
                        client,
                        server,
                        opened: wall_clock(),
                        segments: Vec::new(),
                        stream: handle,
                        outbox: Vec::new(),
                        up: false,
                        thread: None,
                    });
                    st.conns.len() - 1
                };
                eprintln!("pcrf[{label}]: connection {index} from {client}");
                let thread = {
                    let shared = shared.clone();
                    let label = label.clone();
                    let host = host.clone();
                    std::thread::Builder::new()
                        .name(format!("pcrf-conn-{index}"))
                        .spawn(move || serve(stream, index, shared, label, host))
                        .expect("spawn a PCRF connection thread")
                };
                shared.lock().conns[index].thread = Some(thread);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                eprintln!("pcrf[{label}]: accept failed: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
    // Dropping the listener here closes the port: connects are refused from now on.
}

fn peer_config(host: &str) -> PeerConfig {
    let mut c = PeerConfig::new(host, PCRF_REALM);
    c.host_ip_addresses.push(Ipv4Addr::LOCALHOST.into());
    c.product_name = "estuary-conformance PCRF".to_owned();
    c.applications.push(RX_APPLICATION);
    c.validator = rx_validator();
    c
}

/// One connection's life: the responder peer on a real clock until either side closes.
fn serve(mut stream: TcpStream, index: usize, shared: Arc<Shared>, label: String, host: String) {
    let _ = stream.set_read_timeout(Some(TICK));
    let start = wall_clock().as_secs();
    let mut peer = Peer::accept(peer_config(&host), start, &mut rand::rng(), Instant::now());
    let mut buf = vec![0u8; 16 * 1024];
    let mut closed = false;
    while !closed && !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        match stream.read(&mut buf) {
            Ok(0) => {
                eprintln!("pcrf[{label}]: connection {index} closed by the client");
                peer.handle_closed(now);
                closed = true;
            }
            Ok(n) => {
                shared.lock().conns[index].segments.push((wall_clock(), true, buf[..n].to_vec()));
                peer.handle_bytes(now, &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                eprintln!("pcrf[{label}]: connection {index}: read failed: {e}");
                peer.handle_closed(now);
                closed = true;
            }
        }
        let outbox = std::mem::take(&mut shared.lock().conns[index].outbox);
        for request in outbox {
            if let Err(e) = peer.send_request(now, request) {
                eprintln!("pcrf[{label}]: connection {index}: cannot send: {e}");
            }
        }
        if peer.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        // Drain after every input, answering requests (which queues more) until quiet.
        loop {
            let mut moved = false;
            while let Some(t) = peer.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Bytes(bytes) => {
                        shared.lock().conns[index].segments.push((wall_clock(), false, bytes.clone()));
                        if let Err(e) = stream.write_all(&bytes) {
                            eprintln!("pcrf[{label}]: connection {index}: write failed: {e}");
                            closed = true;
                        }
                    }
                    Transmit::Disconnect => {
                        let _ = stream.shutdown(Shutdown::Both);
                        closed = true;
                    }
                    Transmit::Connect => eprintln!("pcrf[{label}]: a responder asked to connect"),
                }
            }
            while let Some(event) = peer.poll_event() {
                moved = true;
                let mut st = shared.lock();
                match event {
                    PeerEvent::Up(info) => {
                        eprintln!("pcrf[{label}]: connection {index} up: CER from {} ({})", info.host, info.realm);
                        st.conns[index].up = true;
                    }
                    PeerEvent::Down(reason) => {
                        eprintln!("pcrf[{label}]: connection {index} down: {reason:?}");
                        closed = true;
                    }
                    PeerEvent::Request(request) => {
                        if let Some(sid) = request.session_id() {
                            st.sessions.insert(sid.to_owned(), index);
                        }
                        let before = st.pcrf.received().len();
                        let answer = st.pcrf.handle_request(&request);
                        for r in &st.pcrf.received()[before..] {
                            eprintln!("pcrf[{label}]: received {r:#?}");
                        }
                        match answer {
                            Some(a) => {
                                eprintln!("pcrf[{label}]: answering command {} with {:?}", a.command_code, a.result_code().or(a.experimental_result_code()));
                                if let Err(e) = peer.send_answer(now, a) {
                                    eprintln!("pcrf[{label}]: connection {index}: cannot answer: {e}");
                                }
                            }
                            None => eprintln!("pcrf[{label}]: not answering command {} (silent)", request.command_code),
                        }
                    }
                    PeerEvent::Answer { answer, .. } => {
                        eprintln!("pcrf[{label}]: answer to command {}: {:?}", answer.command_code, answer.result_code());
                        st.pcrf.handle_answer(&answer);
                    }
                    PeerEvent::TimedOut { request, .. } | PeerEvent::Undelivered { request, .. } => {
                        eprintln!("pcrf[{label}]: command {} got no answer", request.command_code);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    let mut st = shared.lock();
    st.conns[index].up = false;
    if let Some(s) = st.conns[index].stream.take() {
        let _ = s.shutdown(Shutdown::Both);
    }
}
