//! A SIP-over-WebSocket user agent that behaves as JsSIP does (RFC 7118).
//!
//! What it copies from JsSIP, because the gateway must cope with exactly that: the
//! `df7jal23ls0d.invalid` Via host, a random Contact user at the same invalid host with
//! `transport=ws` (`;ob` on dialog requests), `+sip.instance`/`reg-id` on REGISTER, one SIP
//! message per text frame, digest authentication with qop=auth, and ACKs for non-2xx final
//! responses sent by the INVITE client transaction itself.
//!
//! It keeps every message it sent and received, for leak assertions, and every wait is
//! bounded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::digest;
use crate::msg::{addr_uri, param, SipMsg};

/// The Via host JsSIP writes (it cannot know its own address).
pub const JSSIP_VIA_HOST: &str = "df7jal23ls0d.invalid";

/// How long a single wait lasts unless a test says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Random [a-z0-9] token.
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The port of the first `m=` line of an SDP body.
pub fn media_port(sdp: &str) -> u16 {
    let m = sdp.lines().find(|l| l.starts_with("m=")).unwrap_or_else(|| panic!("no m= line:\n{sdp}"));
    m.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {m}"))
}

/// The lines of the first m-section of `kind` in an SDP body (its m= line first, up to the
/// next m= line); empty when there is none. CRLF or bare LF line ends.
pub fn m_section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let start = format!("m={kind} ");
    let mut lines = sdp.lines().skip_while(|l| !l.starts_with(&start));
    let first = lines.next();
    first.into_iter().chain(lines.take_while(|l| !l.starts_with("m="))).collect()
}

/// A browser's audio offer in Chromium's form (BUNDLE, ICE, DTLS fingerprint, rtcp-mux, Opus
/// first, G.711, telephone-event), with fresh ICE credentials. `port` goes in the host
/// candidate, so a test can check it never reaches IMS.
pub fn webrtc_offer(port: u16) -> String {
    let mut rng = rand::rng();
    let id: u64 = rng.random_range(1_000_000_000..9_999_999_999);
    format!(
        "v=0\r\no=- {id} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=audio {port} UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 127.0.0.1\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:0\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\n\
         a=msid:- {}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
         a=ssrc:{} cname:{}\r\n",
        random_token(4),
        random_token(24),
        fake_fingerprint(),
        random_token(12),
        rng.random::<u32>(),
        random_token(16)
    )
}

/// A browser's answer (Chromium's form, `a=setup:active`) to a WebRTC `offer`: G.711 and
/// telephone-event from what the offer lists, mid kept; `port` in its host candidate.
pub fn webrtc_answer(offer: &str, port: u16) -> String {
    let pts: Vec<&str> = offer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .map(|m| m.split(' ').skip(2).collect())
        .unwrap_or_default();
    let rtpmap = |pt: &str| {
        offer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{pt} ")).map(str::to_owned))
            .unwrap_or_else(|| if pt == "0" { "PCMU/8000".into() } else { "PCMA/8000".into() })
    };
    let chosen: Vec<&str> = pts
        .iter()
        .copied()
        .filter(|pt| matches!(rtpmap(pt).as_str(), "PCMU/8000" | "PCMA/8000" | "telephone-event/8000"))
        .collect();
    let mid = offer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or("0");
    let maps: String = chosen.iter().map(|pt| format!("a=rtpmap:{pt} {}\r\n", rtpmap(pt))).collect();
    let id: u64 = rand::rng().random_range(1_000_000_000..9_999_999_999);
    format!(
        "v=0\r\no=- {id} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\n\
         a=msid-semantic: WMS\r\nm=audio {port} UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 127.0.0.1\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:active\r\n\
         a=mid:{mid}\r\na=sendrecv\r\na=rtcp-mux\r\n{maps}a=ssrc:{} cname:{}\r\n",
        chosen.join(" "),
        random_token(4),
        random_token(24),
        fake_fingerprint(),
        rand::rng().random::<u32>(),
        random_token(16)
    )
}

/// Panic unless `body` is SDP in the IMS form the gateway sends toward the core: RTP/AVP and
/// nothing of WebRTC (the SDP engine's golden cases check the details).
pub fn assert_ims_sdp(body: &str, what: &str) {
    assert!(body.contains(" RTP/AVP ") || body.contains(" RTP/SAVP "), "{what}: not IMS SDP:\n{body}");
    for webrtc in ["ice-", "fingerprint", "setup:", "candidate", "SAVPF", "BUNDLE", "msid", "ssrc", "extmap", "opus"] {
        assert!(!body.contains(webrtc), "{what}: {webrtc} reached IMS:\n{body}");
    }
}

/// Panic unless `body` is SDP in the WebRTC form the gateway sends toward browsers.
pub fn assert_webrtc_sdp(body: &str, what: &str) {
    for want in ["a=ice-lite", "a=fingerprint:sha-256 ", "a=group:BUNDLE ", "UDP/TLS/RTP/SAVPF", "a=rtcp-mux", "a=candidate:"] {
        assert!(body.contains(want), "{what}: {want} missing:\n{body}");
    }
}

/// 32 random bytes as an SDP fingerprint value (no certificate behind it: signalling tests
/// carry no media).
fn fake_fingerprint() -> String {
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:02X}", rng.random::<u8>())).collect::<Vec<_>>().join(":")
}

/// One side's view of a dialog (RFC 3261 §12).
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Local URI as a name-addr without tag (From of our requests).
    pub local: String,
    /// Remote URI as a name-addr without tag (To of our requests).
    pub remote: String,
    /// Where in-dialog requests go (the peer's Contact).
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// CSeq number of the last INVITE we sent in this dialog (for its ACK).
    pub invite_cseq: u32,
    /// The INVITE that created the dialog (sent by us or received).
    pub invite: SipMsg,
}

impl Dialog {
    /// UAC side: learn the remote tag, target and route set from a response to our INVITE.
    pub fn update_from_response(&mut self, resp: &SipMsg) {
        if let Some(tag) = resp.to_tag() {
            self.remote_tag = Some(tag);
        }
        if let Some(target) = resp.contact_uri() {
            self.remote_target = target;
        }
        let mut rr = resp.header_values("Record-Route");
        if !rr.is_empty() || resp.status() / 100 == 2 {
            rr.reverse();
            self.route_set = rr;
        }
    }
}

/// A browser.
pub struct WsSipClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub user: String,
    pub domain: String,
    pub password: String,
    /// The random user part of our Contact.
    pub contact_user: String,
    /// `+sip.instance` URN.
    pub instance: String,
    reg_call_id: String,
    reg_from_tag: String,
    reg_cseq: u32,
    closed: bool,
    pending: VecDeque<SipMsg>,
    /// Every SIP message received, in order.
    pub received: Vec<SipMsg>,
    /// Every SIP message sent, in order.
    pub sent: Vec<SipMsg>,
}

impl WsSipClient {
    /// Open `ws://ADDR/` with subprotocol `sip` as `user@domain`.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        domain: &str,
        password: &str,
    ) -> WsSipClient {
        let mut req = format!("ws://{addr}/")
            .into_client_request()
            .expect("WebSocket request");
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        let (ws, resp) = tokio::time::timeout(DEFAULT_WAIT, tokio_tungstenite::connect_async(req))
            .await
            .unwrap_or_else(|_| panic!("WebSocket connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket connect to {addr}: {e}"));
        let proto = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            proto,
            Some("sip"),
            "the gateway must accept subprotocol sip (RFC 7118 §4)"
        );
        WsSipClient::over(ws, user, domain, password)
    }

    /// A client over an upgraded WebSocket, with fresh identifiers.
    fn over(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, user: &str, domain: &str, password: &str) -> WsSipClient {
        WsSipClient {
            ws,
            user: user.to_owned(),
            domain: domain.to_owned(),
            password: password.to_owned(),
            contact_user: random_token(8),
            instance: format!(
                "<urn:uuid:{}-{}-4{}-a{}-{}>",
                random_token(8),
                random_token(4),
                random_token(3),
                random_token(3),
                random_token(12)
            ),
            reg_call_id: random_token(22),
            reg_from_tag: random_token(10),
            reg_cseq: 0,
            closed: false,
            pending: VecDeque::new(),
            received: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// As [`WsSipClient::connect`], from a chosen local address (any 127.0.0.0/8 address on
    /// loopback), and fallible: a refused or closed connection is an Err. Returns the client
    /// and the local address it connected from.
    pub async fn connect_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        user: &str,
        domain: &str,
        password: &str,
    ) -> Result<(WsSipClient, SocketAddr), String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let mut req = format!("ws://{addr}/").into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        let (ws, _) = tokio::time::timeout(DEFAULT_WAIT, tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)))
            .await
            .map_err(|_| format!("WebSocket upgrade via {addr} timed out"))?
            .map_err(|e| format!("WebSocket upgrade via {addr}: {e}"))?;
        Ok((WsSipClient::over(ws, user, domain, password), local))
    }

    /// The same browser over a new WebSocket to `addr`, as JsSIP's UA after its transport
    /// reconnects: same Contact, instance, and REGISTER dialog (Call-ID, From tag, CSeq).
    /// The old connection is dropped without a close frame, as a dead node's would be.
    pub async fn reconnect(self, addr: SocketAddr) -> WsSipClient {
        let mut next = WsSipClient::connect(addr, &self.user, &self.domain, &self.password).await;
        next.contact_user = self.contact_user.clone();
        next.instance = self.instance.clone();
        next.reg_call_id = self.reg_call_id.clone();
        next.reg_from_tag = self.reg_from_tag.clone();
        next.reg_cseq = self.reg_cseq;
        next
    }

    /// The Call-ID of our REGISTER dialog.
    pub fn register_call_id(&self) -> &str {
        &self.reg_call_id
    }

    /// Our address of record.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// Our Contact URI as JsSIP writes it.
    pub fn contact_uri(&self) -> String {
        format!("sip:{}@{JSSIP_VIA_HOST};transport=ws", self.contact_user)
    }

    /// Strings that identify this browser and must never reach IMS: the invalid Via host,
    /// the Contact user, and the Call-IDs, tags and branches it generated.
    pub fn private_tokens(&self) -> Vec<String> {
        let mut t = vec![JSSIP_VIA_HOST.to_owned(), self.contact_user.clone()];
        for m in &self.sent {
            if m.is_request() {
                t.push(m.call_id().to_owned());
                t.extend(m.from_tag());
                t.extend(m.top_branch());
            } else {
                t.extend(m.to_tag());
            }
        }
        t.sort();
        t.dedup();
        t.retain(|s| !s.is_empty());
        t
    }

    /// Send one SIP message in one text frame.
    pub async fn send(&mut self, msg: &SipMsg) {
        let wire = msg.to_wire();
        tokio::time::timeout(DEFAULT_WAIT, self.ws.send(WsMessage::text(wire)))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send failed");
        self.sent.push(msg.clone());
    }

    /// The next message, queued or from the socket, within `limit`. `None` on timeout or
    /// when the connection closed.
    pub async fn next_message(&mut self, limit: Duration) -> Option<SipMsg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        self.read_frame(limit).await
    }

    async fn read_frame(&mut self, limit: Duration) -> Option<SipMsg> {
        if self.closed {
            return None;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed = true;
                    return None;
                }
                Ok(Some(Ok(f))) => f,
            };
            let text = match frame {
                WsMessage::Text(t) => t.to_string(),
                WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                WsMessage::Close(_) => {
                    self.closed = true;
                    return None;
                }
                // Pings are answered by tungstenite on the next read or write.
                _ => continue,
            };
            match SipMsg::parse_frame(&text) {
                Ok(m) => {
                    self.received.push(m.clone());
                    return Some(m);
                }
                Err(e) => {
                    panic!("the gateway sent a frame that is not a SIP message ({e}):\n{text}")
                }
            }
        }
    }

    /// Wait up to `limit` for a message matching `pred`; others stay queued for later waits.
    /// Panics on timeout, naming `what` and listing what did arrive.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> SipMsg {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("index in range");
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(m) if pred(&m) => return m,
                Some(m) => self.pending.push_back(m),
                None => panic!(
                    "browser: no {what} within {limit:?}{}; received so far:\n{}",
                    if self.closed {
                        " (WebSocket closed)"
                    } else {
                        ""
                    },
                    self.transcript_received()
                ),
            }
        }
    }

    /// Whether a message matching `pred` arrives within `limit` (no panic).
    pub async fn maybe_wait_for(
        &mut self,
        limit: Duration,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> Option<SipMsg> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(m) if pred(&m) => return Some(m),
                Some(m) => self.pending.push_back(m),
                None => return None,
            }
        }
    }

    /// The next response to `req` (same top Via branch and CSeq method), provisional or final.
    pub async fn wait_response(&mut self, req: &SipMsg, limit: Duration) -> SipMsg {
        let (branch, method) = (req.top_branch(), req.method());
        let what = format!("response to {method}");
        self.wait_for(limit, &what, |m| {
            m.is_response() && m.top_branch() == branch && m.method() == method
        })
        .await
    }

    /// The final response to `req`, with the provisional ones received before it.
    pub async fn wait_final(&mut self, req: &SipMsg, limit: Duration) -> (Vec<SipMsg>, SipMsg) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut provisional = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.wait_response(req, left).await;
            if r.status() >= 200 {
                return (provisional, r);
            }
            provisional.push(r);
        }
    }

    /// The next request with `method`.
    pub async fn wait_request(&mut self, method: &str, limit: Duration) -> SipMsg {
        let what = format!("{method} request");
        self.wait_for(limit, &what, |m| m.is_request() && m.method() == method)
            .await
    }

    /// Whether the gateway closed the WebSocket (checked by reading, bounded).
    pub async fn wait_closed(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.closed {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(m) = self.read_frame(left).await {
                self.pending.push_back(m);
            }
        }
        self.closed
    }

    /// Close the WebSocket cleanly (close frame).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    /// Drop the TCP connection under the WebSocket without a close frame, as a browser tab
    /// that crashes or loses its network does. Returns the messages it saw, for assertions.
    pub fn drop_connection(self) -> (Vec<SipMsg>, Vec<SipMsg>) {
        let WsSipClient {
            ws, sent, received, ..
        } = self;
        // The TCP stream closes (FIN) with no WebSocket close frame before it, as when the
        // browser process dies.
        drop(ws.into_inner());
        (sent, received)
    }

    /// Every received message, for failure messages.
    pub fn transcript_received(&self) -> String {
        self.received
            .iter()
            .map(|m| format!("<< {}", m.to_wire().trim_end()))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Every message in both directions, in the order within each direction.
    pub fn transcript(&self) -> String {
        let sent = self
            .sent
            .iter()
            .map(|m| format!(">> {}", m.to_wire().trim_end()));
        let recv = self
            .received
            .iter()
            .map(|m| format!("<< {}", m.to_wire().trim_end()));
        sent.chain(recv).collect::<Vec<_>>().join("\n\n")
    }

    // ----- building requests ----------------------------------------------------------------

    fn via(&self) -> String {
        format!(
            "SIP/2.0/WS {JSSIP_VIA_HOST};branch=z9hG4bK{}",
            random_token(7)
        )
    }

    fn base_request(
        &self,
        method: &str,
        uri: &str,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
    ) -> SipMsg {
        let mut m = SipMsg::request(method, uri);
        m.push_header("Via", self.via());
        m.push_header("Max-Forwards", "69");
        m.push_header("To", to);
        m.push_header("From", from);
        m.push_header("Call-ID", call_id);
        m.push_header("CSeq", format!("{cseq} {method}"));
        m
    }

    fn our_from(&self, tag: &str) -> String {
        format!("\"{}\" <{}>;tag={tag}", self.user, self.aor())
    }

    // ----- registration ---------------------------------------------------------------------

    /// The REGISTER we would send now (fresh branch, next CSeq, same Call-ID and From tag).
    pub fn register_request(&mut self, expires: u32) -> SipMsg {
        self.reg_cseq += 1;
        let to = format!("\"{}\" <{}>", self.user, self.aor());
        let from = self.our_from(&self.reg_from_tag);
        let mut m = self.base_request(
            "REGISTER",
            &format!("sip:{}", self.domain),
            &from,
            &to,
            &self.reg_call_id,
            self.reg_cseq,
        );
        m.push_header(
            "Contact",
            format!(
                "<{}>;+sip.ice;reg-id=1;+sip.instance=\"{}\";expires={expires}",
                self.contact_uri(),
                self.instance
            ),
        );
        m.push_header("Expires", expires.to_string());
        m.push_header(
            "Allow",
            "INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY",
        );
        m.push_header("Supported", "path,gruu,outbound");
        m.push_header("User-Agent", "JsSIP 3.10.1");
        m
    }

    /// REGISTER for `expires` seconds, answering up to two digest challenges as JsSIP does.
    /// Returns every response received, the final one last.
    pub async fn register(&mut self, expires: u32, limit: Duration) -> Vec<SipMsg> {
        let mut responses = Vec::new();
        let mut req = self.register_request(expires);
        let mut challenges = 0;
        loop {
            self.send(&req).await;
            let (prov, fin) = self.wait_final(&req, limit).await;
            responses.extend(prov);
            responses.push(fin.clone());
            let auth_header = match fin.status() {
                401 => "WWW-Authenticate",
                407 => "Proxy-Authenticate",
                _ => return responses,
            };
            challenges += 1;
            if challenges > 2 {
                return responses;
            }
            let challenge = fin
                .header(auth_header)
                .unwrap_or_else(|| panic!("{} without {auth_header}:\n{fin}", fin.status()))
                .to_owned();
            let next = self.register_request(expires);
            let creds = digest::authorization(
                &challenge,
                "REGISTER",
                next.uri(),
                &self.user,
                &self.password,
                &random_token(12),
                1,
            )
            .unwrap_or_else(|e| panic!("cannot answer challenge {challenge:?}: {e}"));
            let mut next = next;
            let cred_header = if fin.status() == 401 {
                "Authorization"
            } else {
                "Proxy-Authorization"
            };
            next.push_header(cred_header, creds);
            req = next;
        }
    }

    // ----- calls as caller ------------------------------------------------------------------

    /// Send an INVITE to `target` (a SIP URI) with `sdp`; returns the dialog being set up.
    pub async fn invite(&mut self, target: &str, sdp: &str) -> Dialog {
        let call_id = random_token(20);
        let tag = random_token(10);
        let cseq: u32 = rand::rng().random_range(1000..9000);
        let from = self.our_from(&tag);
        let to = format!("<{target}>");
        let mut m = self.base_request("INVITE", target, &from, &to, &call_id, cseq);
        m.push_header("Contact", format!("<{};ob>", self.contact_uri()));
        m.push_header("Content-Type", "application/sdp");
        m.push_header("Session-Expires", "90");
        m.push_header(
            "Allow",
            "INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY",
        );
        m.push_header("Supported", "timer,ice,replaces,outbound");
        m.push_header("User-Agent", "JsSIP 3.10.1");
        m.body = sdp.to_owned();
        self.send(&m).await;
        Dialog {
            call_id,
            local_tag: tag,
            remote_tag: None,
            local: format!("\"{}\" <{}>", self.user, self.aor()),
            remote: to,
            remote_target: target.to_owned(),
            route_set: Vec::new(),
            local_cseq: cseq,
            invite_cseq: cseq,
            invite: m,
        }
    }

    /// Calls `target` with `sdp` and completes the call: INVITE, its 200, ACK. Panics with
    /// the transcript unless the call is answered. Returns the dialog and the 200.
    pub async fn call_answered(&mut self, target: &str, sdp: &str) -> (Dialog, SipMsg) {
        let mut d = self.invite(target, sdp).await;
        let (_, ok) = self.wait_final(&d.invite, DEFAULT_WAIT).await;
        assert_eq!(ok.status(), 200, "call to {target} not answered:\n{}", self.transcript());
        d.update_from_response(&ok);
        self.ack(&mut d).await;
        (d, ok)
    }

    /// A request within `d` (new CSeq unless it is an ACK).
    pub fn in_dialog_request(&self, d: &mut Dialog, method: &str) -> SipMsg {
        let cseq = match method {
            "ACK" => d.invite_cseq,
            _ => {
                d.local_cseq += 1;
                d.local_cseq
            }
        };
        let from = format!("{};tag={}", d.local, d.local_tag);
        let to = match &d.remote_tag {
            Some(t) => format!("{};tag={t}", d.remote),
            None => d.remote.clone(),
        };
        let mut m = self.base_request(method, &d.remote_target, &from, &to, &d.call_id, cseq);
        for r in &d.route_set {
            m.push_header("Route", r.clone());
        }
        m
    }

    /// ACK a 2xx to the INVITE with CSeq `d.invite_cseq` (an end-to-end request, new branch).
    pub async fn ack(&mut self, d: &mut Dialog) -> SipMsg {
        let m = self.in_dialog_request(d, "ACK");
        self.send(&m).await;
        m
    }

    /// ACK a non-2xx final response to `invite` (same branch, RFC 3261 §17.1.1.3), as the
    /// INVITE client transaction of JsSIP does.
    pub async fn ack_non2xx(&mut self, invite: &SipMsg, resp: &SipMsg) -> SipMsg {
        let mut m = SipMsg::request("ACK", invite.uri());
        m.push_header(
            "Via",
            invite
                .header_values("Via")
                .first()
                .cloned()
                .unwrap_or_default(),
        );
        m.push_header("Max-Forwards", "69");
        m.push_header("To", resp.header("To").unwrap_or_default());
        m.push_header("From", invite.header("From").unwrap_or_default());
        m.push_header("Call-ID", invite.call_id());
        m.push_header("CSeq", format!("{} ACK", invite.cseq().0));
        for r in invite.header_lines("Route") {
            m.push_header("Route", r);
        }
        self.send(&m).await;
        m
    }

    /// CANCEL the INVITE of `d` (RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq
    /// number and Via branch).
    pub async fn cancel(&mut self, d: &Dialog) -> SipMsg {
        let inv = &d.invite;
        let mut m = SipMsg::request("CANCEL", inv.uri());
        m.push_header(
            "Via",
            inv.header_values("Via")
                .first()
                .cloned()
                .unwrap_or_default(),
        );
        m.push_header("Max-Forwards", "69");
        m.push_header("To", inv.header("To").unwrap_or_default());
        m.push_header("From", inv.header("From").unwrap_or_default());
        m.push_header("Call-ID", inv.call_id());
        m.push_header("CSeq", format!("{} CANCEL", inv.cseq().0));
        m.push_header("User-Agent", "JsSIP 3.10.1");
        self.send(&m).await;
        m
    }

    /// BYE in `d`.
    pub async fn bye(&mut self, d: &mut Dialog) -> SipMsg {
        let mut m = self.in_dialog_request(d, "BYE");
        m.push_header("User-Agent", "JsSIP 3.10.1");
        self.send(&m).await;
        m
    }

    /// A re-INVITE in `d` with a new offer.
    pub async fn reinvite(&mut self, d: &mut Dialog, sdp: &str) -> SipMsg {
        let mut m = self.in_dialog_request(d, "INVITE");
        d.invite_cseq = d.local_cseq;
        m.push_header("Contact", format!("<{};ob>", self.contact_uri()));
        m.push_header("Content-Type", "application/sdp");
        m.push_header("User-Agent", "JsSIP 3.10.1");
        m.body = sdp.to_owned();
        self.send(&m).await;
        m
    }

    // ----- answering ----------------------------------------------------------------------

    /// A response to `req` (RFC 3261 §8.2.6): its Via, From, To (with `to_tag` added when it
    /// has none), Call-ID, CSeq, and Record-Route for dialog-creating responses.
    pub fn response(&self, req: &SipMsg, code: u16, reason: &str, to_tag: Option<&str>) -> SipMsg {
        let mut m = SipMsg {
            start_line: format!("SIP/2.0 {code} {reason}"),
            headers: Vec::new(),
            body: String::new(),
        };
        for v in req.header_lines("Via") {
            m.push_header("Via", v);
        }
        let mut to = req.header("To").unwrap_or_default().to_owned();
        if let Some(t) = to_tag {
            if param(&to, "tag").is_none() {
                to = format!("{to};tag={t}");
            }
        }
        m.push_header("To", to);
        m.push_header("From", req.header("From").unwrap_or_default());
        m.push_header("Call-ID", req.call_id());
        m.push_header("CSeq", req.header("CSeq").unwrap_or_default());
        if req.method() == "INVITE" && code > 100 && code < 300 {
            for rr in req.header_lines("Record-Route") {
                m.push_header("Record-Route", rr);
            }
        }
        m
    }

    /// Send a response to `req` with optional SDP body.
    pub async fn respond(
        &mut self,
        req: &SipMsg,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        sdp: Option<&str>,
    ) -> SipMsg {
        let mut m = self.response(req, code, reason, to_tag);
        if req.method() == "INVITE" && code > 100 && code < 300 {
            m.push_header("Contact", format!("<{}>", self.contact_uri()));
        }
        if let Some(b) = sdp {
            m.push_header("Content-Type", "application/sdp");
            m.body = b.to_owned();
        }
        if (200..300).contains(&code) && req.method() == "INVITE" {
            m.push_header(
                "Allow",
                "INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY",
            );
            m.push_header("Supported", "timer,ice,replaces,outbound");
        }
        self.send(&m).await;
        m
    }

    /// Answer an incoming INVITE: 180 Ringing, then 200 OK with `sdp`. Returns our dialog.
    pub async fn answer(&mut self, invite: &SipMsg, sdp: &str) -> Dialog {
        let tag = random_token(10);
        self.respond(invite, 180, "Ringing", Some(&tag), None).await;
        self.respond(invite, 200, "OK", Some(&tag), Some(sdp)).await;
        self.uas_dialog(invite, &tag)
    }

    /// Our (UAS) dialog for an INVITE we answer with `tag`.
    pub fn uas_dialog(&self, invite: &SipMsg, tag: &str) -> Dialog {
        let from = invite.header("From").unwrap_or_default();
        let to = invite.header("To").unwrap_or_default();
        Dialog {
            call_id: invite.call_id().to_owned(),
            local_tag: tag.to_owned(),
            remote_tag: invite.from_tag(),
            local: strip_tag(to),
            remote: strip_tag(from),
            remote_target: invite.contact_uri().unwrap_or_else(|| addr_uri(from)),
            route_set: invite.header_values("Record-Route"),
            local_cseq: rand::rng().random_range(1000..9000),
            invite_cseq: 0,
            invite: invite.clone(),
        }
    }

    /// Wait for a BYE and answer it 200.
    pub async fn answer_bye(&mut self, limit: Duration) -> SipMsg {
        let bye = self.wait_request("BYE", limit).await;
        self.respond(&bye, 200, "OK", None, None).await;
        bye
    }
}

/// A name-addr header value without its tag parameter.
pub fn strip_tag(value: &str) -> String {
    let (uri_end, _) = match value.find('<') {
        Some(a) => (value[a..].find('>').map_or(value.len(), |b| a + b + 1), ()),
        None => (value.find(';').unwrap_or(value.len()), ()),
    };
    let (head, params) = value.split_at(uri_end);
    let kept: Vec<&str> = params
        .split(';')
        .filter(|p| !p.is_empty() && !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = head.to_owned();
    for p in kept {
        out.push(';');
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags() {
        assert_eq!(
            strip_tag("\"A\" <sip:a@b>;tag=1;x=2"),
            "\"A\" <sip:a@b>;x=2"
        );
        assert_eq!(strip_tag("sip:a@b;tag=1"), "sip:a@b");
        assert_eq!(strip_tag("<sip:a@b>"), "<sip:a@b>");
    }
}
