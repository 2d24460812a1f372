//! The browser side: SIP over WebSocket (RFC 7118) on `web.ws_listen` and, over TLS, on
//! `web.wss_listen`. Each WebSocket message is one SIP message. A plain HTTP GET on either
//! listener gets the demo softphone page (see `demo`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_b2bua::{Flow, Side, Transport};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use crate::access::Ticket;
use crate::ctx::{Ctx, Serving};
use crate::demo;
use crate::events::{Event, Writer, WRITER_QUEUE};
use crate::http::{self, HeadError, Prefixed, RequestHead};
use crate::metrics::Metric;
use crate::proxy_protocol;

/// TLS handshake plus HTTP request head must arrive within this, so idle sockets cannot hold
/// connection slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket read chunk: a REGISTER fits; see the config in `upgrade`.
const WS_READ_CHUNK: usize = 2 * 1024;
/// Outbound bytes a connection may hold unwritten before sends fail.
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// How long a closing WebSocket may take to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts on one web listener; `tls` is set for WSS. `_serving` marks the listener up
/// for /healthz until the loop ends.
pub async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Arc<Ctx>, _serving: Serving) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutting_down() => return,
            a = listener.accept() => a,
        };
        match accepted {
            // A load balancer carries many browsers: each is admitted once it is named.
            Ok((stream, remote)) if ctx.proxies.trusts(remote.ip()) => match ctx.web_slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(connection(stream, remote, tls.clone(), ctx.clone(), (permit, None)));
                }
                Err(_) => {
                    ctx.stats.inc(Metric::ConnectionsRefused);
                    debug!(%remote, "limits.max_ws_connections reached; connection refused");
                }
            },
            Ok((stream, remote)) => match (ctx.web_slots.clone().try_acquire_owned(), ctx.sources.admit(remote.ip())) {
                (Ok(permit), Ok(ticket)) => {
                    tokio::spawn(connection(stream, remote, tls.clone(), ctx.clone(), (permit, Some(ticket))));
                }
                // Dropping the stream closes it: nothing is read from a source over its share.
                (Ok(_), Err(refusal)) => {
                    debug!(%remote, ?refusal, "per-source WebSocket limit reached; connection closed");
                }
                (Err(_), _) => {
                    ctx.stats.inc(Metric::ConnectionsRefused);
                    debug!(%remote, "limits.max_ws_connections reached; connection refused");
                }
            },
            Err(e) => {
                warn!(error = %e, "WebSocket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a web connection runs over: TCP for WS, TLS over TCP for WSS. One boxed type, so
/// the connection's code exists once and its task does not hold a TLS session inline.
trait WebStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> WebStream for T {}

type WebSocket = tokio_tungstenite::WebSocketStream<Prefixed<Box<dyn WebStream>>>;

/// Who is at the other end of a web connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// The browser as far as it is known: the TCP peer, or the client a trusted proxy named
    /// (port 0 when only X-Forwarded-For named it).
    client: SocketAddr,
    /// The address the browser connected to: ours, or the proxy's front.
    front: SocketAddr,
}

/// `ticket` is `None` for a connection from a trusted proxy (`web.trusted_proxies`): its
/// browser is admitted once named, here by a PROXY header, else by `upgrade`.
async fn connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    (_permit, mut ticket): (OwnedSemaphorePermit, Option<Ticket>),
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut peer = Peer { client: remote, front: local };
    let mut prefix = Vec::new();
    if ticket.is_none() {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_proxy_header(&mut stream)).await {
            Ok(Ok((header, rest))) => {
                prefix = rest;
                // A browser the PROXY header named is admitted under its own address before
                // anything else of its connection is read.
                if let Some(proxy_protocol::Header::Proxied { client, front }) = header {
                    peer = Peer { client, front };
                    match ctx.sources.admit(client.ip()) {
                        Ok(t) => ticket = Some(t),
                        Err(refusal) => {
                            debug!(%client, ?refusal, "per-source WebSocket limit reached (behind a proxy); connection closed");
                            return;
                        }
                    }
                }
            }
            Ok(Err(why)) => {
                ctx.stats.inc(Metric::ConnectionsRefused);
                debug!(%remote, why, "bad PROXY header from a trusted proxy; connection closed");
                return;
            }
            Err(_) => return,
        }
    }
    let stream = Prefixed::new(prefix, stream);
    let (stream, transport): (Box<dyn WebStream>, _) = match tls {
        None => (Box::new(stream), Transport::Ws),
        Some(acceptor) => match Box::pin(accept_tls(acceptor, stream, remote)).await {
            Some(stream) => (stream, Transport::Wss),
            None => return,
        },
    };
    session(stream, transport, peer, ctx, ticket).await;
}

/// Reads a PROXY protocol header from a trusted proxy's connection: what it says (`None`
/// when there is none) and the bytes read past it, which belong to the client.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<(Option<proxy_protocol::Header>, Vec<u8>), &'static str> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; proxy_protocol::PROBE];
    stream.read_exact(&mut buf).await.map_err(|_| "closed before 16 bytes")?;
    loop {
        match proxy_protocol::parse(&buf) {
            proxy_protocol::Parsed::Incomplete(need) => {
                let have = buf.len();
                buf.resize(need.max(have + 1), 0);
                stream.read_exact(&mut buf[have..]).await.map_err(|_| "closed inside the PROXY header")?;
            }
            proxy_protocol::Parsed::Absent => return Ok((None, buf)),
            proxy_protocol::Parsed::Complete { len, header } => return Ok((Some(header), buf.split_off(len))),
            proxy_protocol::Parsed::Invalid(why) => return Err(why),
        }
    }
}

async fn accept_tls(acceptor: TlsAcceptor, stream: Prefixed<TcpStream>, remote: SocketAddr) -> Option<Box<dyn WebStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => Some(Box::new(tls_stream)),
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%remote, "TLS handshake timed out");
            None
        }
    }
}

/// One connection on a web listener: the HTTP request, then, for a WebSocket upgrade, the
/// SIP connection for as long as it lasts.
async fn session(stream: Box<dyn WebStream>, transport: Transport, mut peer: Peer, ctx: Arc<Ctx>, mut ticket: Option<Ticket>) {
    // A task keeps the size of its largest state for its whole life, and the handshakes'
    // states (TLS, the HTTP head's read buffer, tungstenite's upgrade) are several times what
    // an open connection needs: boxed, they are freed once the WebSocket is up. A node holds
    // thousands of idle browsers, and this was most of what each cost (13 KiB per
    // connection's task before, about 1 KiB now).
    let Some(ws) = Box::pin(upgrade(stream, transport, &mut peer, &ctx, &mut ticket)).await else {
        return;
    };
    // Invariant: upgrade() admitted the browser when no ticket came with the connection.
    let Some(mut ticket) = ticket else { return };
    let (sink, incoming) = ws.split();
    ticket.upgraded();
    let (local, remote) = (peer.front, peer.client);
    let conn = ctx.next_conn();
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let close = Arc::new(Notify::new());
    let writer = Writer {
        data: tx,
        close: close.clone(),
    };
    if ctx
        .events
        .send(Event::Opened {
            conn,
            side: Side::Web,
            transport,
            local,
            remote,
            writer,
        })
        .await
        .is_err()
    {
        return;
    }
    ctx.stats.inc(Metric::WsConnections);
    debug!(?conn, %remote, ?transport, "WebSocket open");
    run_websocket((sink, incoming), conn, remote, rx, close, &ctx).await;
    ctx.stats.dec(Metric::WsConnections);
    let _ = ctx.events.send(Event::Closed { conn }).await;
    debug!(?conn, %remote, "WebSocket closed");
}

/// The HTTP request on a web listener: a WebSocket upgrade that passes the origin check
/// becomes a WebSocket; anything else gets a one-shot HTTP answer and `None`.
///
/// Behind a trusted proxy that gave no PROXY header (`ticket` is `None`), the browser is the
/// last X-Forwarded-For entry (port unknown), admitted here under that address before the
/// upgrade is answered: 503 when its share is taken.
async fn upgrade(mut stream: Box<dyn WebStream>, transport: Transport, peer: &mut Peer, ctx: &Ctx, ticket: &mut Option<Ticket>) -> Option<WebSocket> {
    let remote = peer.client;
    let (bytes, head_len) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, http::read_head(&mut stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(HeadError::TooLarge)) => {
            let _ = http::respond(&mut stream, 431, "Request Header Fields Too Large", "", "text/plain", b"").await;
            return None;
        }
        Ok(Err(_)) | Err(_) => return None,
    };
    let Some(head) = RequestHead::parse(&bytes[..head_len]) else {
        let _ = http::respond(&mut stream, 400, "Bad Request", "", "text/plain", b"bad request\n").await;
        return None;
    };
    if !head.is_websocket_upgrade() {
        plain_http(&mut stream, &head, transport, &ctx.ims_domain).await;
        return None;
    }
    // The demo page this listener serves has the listener's own origin: scheme://Host.
    let own = head.header("host").map(|host| format!("{}://{host}", if transport == Transport::Wss { "https" } else { "http" }));
    if !ctx.origins.admits(head.header("origin"), own.as_deref()) {
        ctx.stats.inc(Metric::OriginRefused);
        debug!(%remote, origin = ?head.header("origin"), "WebSocket Origin not in web.allowed_origins; 403");
        let _ = http::respond(&mut stream, 403, "Forbidden", "", "text/plain", b"origin not allowed (web.allowed_origins)\n").await;
        return None;
    }
    if ticket.is_none() {
        if let Some(ip) = head.header("x-forwarded-for").and_then(proxy_protocol::forwarded_for) {
            peer.client = SocketAddr::new(ip, 0);
        }
        match ctx.sources.admit(peer.client.ip()) {
            Ok(t) => *ticket = Some(t),
            Err(refusal) => {
                debug!(client = %peer.client, ?refusal, "per-source WebSocket limit reached (behind a proxy); 503");
                let _ = http::respond(&mut stream, 503, "Service Unavailable", "", "text/plain", b"too many connections from this address\n").await;
                return None;
            }
        }
    }
    drop(head);
    // SIP messages are a few KiB: a small read chunk (it grows for a larger message) and
    // eager writes keep an idle connection at a few KiB instead of tungstenite's 2 x 128 KiB
    // defaults, which is what lets a node hold many idle browsers, or survive a source
    // opening hundreds of connections. The write buffer is bounded for a reader that stalls.
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_CHUNK)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER.max(2 * ctx.max_message_size))
        .max_message_size(Some(ctx.max_message_size))
        .max_frame_size(Some(ctx.max_message_size));
    let upgraded = tokio_tungstenite::accept_hdr_async_with_config(Prefixed::new(bytes, stream), require_sip, Some(config));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgraded).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "WebSocket upgrade refused or failed");
            None
        }
        Err(_) => None,
    }
}

/// RFC 7118 §4.1: the client must offer the `sip` subprotocol and the server echoes it.
// The signature is tungstenite's `Callback`; its error type is theirs to size.
#[allow(clippy::result_large_err)]
fn require_sip(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offered {
        let mut refusal = ErrorResponse::new(Some(
            "WebSocket subprotocol \"sip\" required (RFC 7118)\n".into(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    Ok(response)
}

/// A plain (non-upgrade) request: the demo softphone page and its files (`demo`), 404 for
/// anything else, 405 for methods other than GET and HEAD.
async fn plain_http<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &RequestHead,
    transport: Transport,
    ims_domain: &str,
) {
    let reply = demo::reply(
        &head.method,
        &head.path,
        head.header("host"),
        transport == Transport::Wss,
        ims_domain,
    );
    let bytes = reply.to_bytes(head.method != "HEAD");
    let _ = async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    }
    .await;
}

/// The answer to a request over its source's rate: 503 with Retry-After (RFC 3261 §21.5.4),
/// formed from the request alone; `None` for an ACK, a response or bytes that do not parse
/// (dropped, and counted with the rest).
fn throttled(data: &[u8], retry_after: u64) -> Option<String> {
    let Ok(estuary_sip::Message::Request(req)) = estuary_sip::Message::parse(data) else { return None };
    if req.method == estuary_sip::Method::Ack {
        return None;
    }
    let mut resp = estuary_sip::response_to(&req, 503, "Service Unavailable");
    resp.headers.push("Retry-After", retry_after.to_string());
    resp.headers.push("Reason", "SIP;cause=503;text=\"requests_per_second_per_ip exceeded\"");
    String::from_utf8(resp.to_bytes()).ok()
}

async fn run_websocket(
    (mut sink, mut incoming): (SplitSink<WebSocket, Message>, SplitStream<WebSocket>),
    conn: estuary_b2bua::ConnId,
    remote: SocketAddr,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    close: Arc<Notify>,
    ctx: &Ctx,
) {
    let mut ping = ctx.ws_ping_interval.map(|period| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (i, period)
    });
    let mut last_heard = Instant::now();
    let close_with = |code: CloseCode, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let goodbye = loop {
        let tick = async {
            match ping.as_mut() {
                Some((i, _)) => {
                    i.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = ctx.shutting_down() => break Some(close_with(CloseCode::Away, "shutting down")),
            () = close.notified() => break Some(close_with(CloseCode::Normal, "")),
            data = outbound.recv() => {
                // The engine task has gone, which happens only at shutdown.
                let Some(data) = data else {
                    break Some(close_with(CloseCode::Away, "shutting down"));
                };
                // RFC 7118 §5.3: text frames for UTF-8 messages, binary otherwise.
                let msg = match String::from_utf8(data) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                if sink.send(msg).await.is_err() {
                    break None;
                }
            }
            msg = incoming.next() => match msg {
                // One SIP message per data frame, text or binary alike (RFC 7118 §5.3).
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    last_heard = Instant::now();
                    let data = msg.into_data();
                    if !ctx.sources.take_request(remote.ip(), last_heard) {
                        if let Some(busy) = throttled(&data, ctx.sources.retry_after()) {
                            if sink.send(Message::text(busy)).await.is_err() {
                                break None;
                            }
                        }
                        continue;
                    }
                    let flow = Flow::Web { conn };
                    if ctx.events.send(Event::Received { flow, conn: Some(conn), remote, data: data.to_vec() }).await.is_err() {
                        break None;
                    }
                }
                // tungstenite answers pings itself; any frame shows the peer is alive.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => last_heard = Instant::now(),
                // tungstenite queues the close reply; the next read flushes it and ends.
                Some(Ok(Message::Close(_))) => {}
                Some(Err(WsError::Capacity(e))) => {
                    info!(?conn, %remote, error = %e, "WebSocket message over limits.max_message_size; closing");
                    ctx.stats.inc(Metric::OversizeDropped);
                    break Some(close_with(CloseCode::Size, "message too big"));
                }
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => break None,
                Some(Err(WsError::Protocol(e))) => {
                    info!(?conn, %remote, error = %e, "WebSocket protocol error; closing");
                    ctx.stats.inc(Metric::FramingErrors);
                    break Some(close_with(CloseCode::Protocol, ""));
                }
                Some(Err(e)) => {
                    debug!(?conn, error = %e, "WebSocket read ended");
                    break None;
                }
                None => break None,
            },
            () = tick => {
                // Two silent periods: the browser is gone without a FIN (RFC 6455 §5.5.2).
                if let Some((_, period)) = ping {
                    if last_heard.elapsed() > period * 2 + period / 2 {
                        info!(?conn, %remote, "WebSocket peer silent; closing");
                        break Some(close_with(CloseCode::Away, "ping timeout"));
                    }
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(frame) = goodbye {
        // Send our close, then give the peer a moment to answer it (RFC 6455 §7.1.1).
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if sink.send(frame).await.is_ok() {
                while let Some(Ok(_)) = incoming.next().await {}
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an open browser connection's task holds for its whole life. A tokio task is
    /// allocated at its future's largest state; with the handshakes inline that was 13 KiB per
    /// idle browser, most of its memory.
    #[tokio::test]
    async fn a_connection_task_is_small_for_all_its_life() {
        let (events, _rx) = mpsc::channel(8);
        let (_, shutdown) = tokio::sync::watch::channel(false);
        let records = crate::records::CallRecords::start(&Default::default()).unwrap();
        let ctx = Arc::new(Ctx::new(events, shutdown, &estuary_config::Config::default(), None, crate::recorder::Recorder::off(), records));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let permit = ctx.web_slots.clone().try_acquire_owned().unwrap();
        let ticket = ctx.sources.admit(remote.ip()).unwrap();
        let cfg = estuary_config::Config::default();
        let tls = Some(crate::tls::load(&cfg.web, "127.0.0.1:0".parse().unwrap()).unwrap().acceptor);
        let task = connection(stream, remote, tls, ctx.clone(), (permit, Some(ticket)));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a web connection's future is {size} bytes");
        drop((task, client));
    }
}
