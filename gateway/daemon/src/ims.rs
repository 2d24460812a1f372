//! The IMS side: one UDP socket and one TCP listener on `ims.listen`, a TLS listener on
//! `ims.tls_listen` when set, plus outbound TCP or TLS connections opened on demand. Streams
//! are cut into messages by [`estuary_sip::StreamFramer`] (RFC 3261 §18.3), the same over
//! TCP and inside TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use estuary_b2bua::{Flow, Side, Transport};
use estuary_sip::{Frame, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tracing::{debug, info, warn};

use crate::ctx::{Ctx, Serving};
use crate::icmp;
use crate::events::{Event, Writer, WRITER_QUEUE};
use crate::metrics::Metric;

/// How long an outbound connect (TLS handshake included) may take before the destination
/// counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer connecting to the TLS listener gets to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn udp_loop(sock: Arc<UdpSocket>, ctx: Arc<Ctx>, _serving: Serving) {
    // One byte over the limit tells an oversize datagram from one exactly at it.
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            () = ctx.shutting_down() => return,
            r = sock.recv_from(&mut buf) => r,
            // An ICMP report marks the socket EPOLLERR only, which never wakes a reader.
            Ok(_) = sock.ready(Interest::ERROR) => {
                if report_unreachable(&sock, &ctx).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match received {
            Ok((n, remote)) => {
                // Before any parsing: only the core may speak SIP here.
                if !ctx.ims_trust.admits(remote, "UDP datagram") {
                    ctx.stats.inc(Metric::UntrustedImsMessages);
                    continue;
                }
                if n > ctx.max_message_size {
                    ctx.stats.inc(Metric::OversizeDropped);
                    continue;
                }
                let flow = Flow::Ims {
                    transport: Transport::Udp,
                    remote,
                };
                let event = Event::Received {
                    flow,
                    conn: None,
                    remote,
                    data: buf[..n].to_vec(),
                };
                if ctx.events.send(event).await.is_err() {
                    return;
                }
            }
            // The pending error of an ICMP report, when the receive saw it first.
            Err(e) if is_icmp_report(&e) => {
                if report_unreachable(&sock, &ctx).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Drain the socket's ICMP error queue (IP_RECVERR is on, see `icmp`) and tell the engine
/// which destinations are unreachable; it fails their transactions (503). Err when the engine
/// is gone.
async fn report_unreachable(sock: &UdpSocket, ctx: &Ctx) -> Result<(), ()> {
    let reported = icmp::drain(sock, 64);
    debug!(?reported, "IMS UDP socket error state");
    // Clear the pending socket error and tokio's error readiness; a new report re-arms both.
    let _ = sock.take_error();
    let _ = sock.try_io(Interest::ERROR, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
    for remote in reported {
        debug!(%remote, "IMS UDP destination unreachable (ICMP)");
        ctx.events
            .send(Event::UdpUnreachable { remote })
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}

fn is_icmp_report(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
    ) || e.raw_os_error() == Some(libc::EHOSTDOWN)
}

pub async fn tcp_accept_loop(listener: TcpListener, ctx: Arc<Ctx>, _serving: Serving) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutting_down() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((_, remote)) if !ctx.ims_trust.admits(remote, "TCP connection") => {
                // Dropping the stream closes it before a byte is read.
                ctx.stats.inc(Metric::UntrustedImsMessages);
            }
            Ok((stream, remote)) => match ctx.tcp_slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let Ok(local) = stream.local_addr() else { continue };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, Transport::Tcp, local, remote, ctx.clone(), permit));
                }
                Err(_) => {
                    ctx.stats.inc(Metric::ConnectionsRefused);
                    debug!(%remote, "limits.max_tcp_connections reached; connection refused");
                }
            },
            // Usually EMFILE: back off instead of spinning on a failing accept.
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts SIP over TLS from the core on `ims.tls_listen`.
pub async fn tls_accept_loop(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, ctx: Arc<Ctx>, _serving: Serving) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutting_down() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Before the handshake: the certificate check that follows stays as it is.
        if !ctx.ims_trust.admits(remote, "TLS connection") {
            ctx.stats.inc(Metric::UntrustedImsMessages);
            continue;
        }
        let Ok(permit) = ctx.tcp_slots.clone().try_acquire_owned() else {
            ctx.stats.inc(Metric::ConnectionsRefused);
            debug!(%remote, "limits.max_tcp_connections reached; TLS connection refused");
            continue;
        };
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tokio::spawn(async move {
            let Ok(local) = stream.local_addr() else { return };
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, Transport::Tls, local, remote, ctx, permit).await,
                Ok(Err(e)) => info!(%remote, error = %e, "IMS TLS handshake failed"),
                Err(_) => info!(%remote, "IMS TLS handshake timed out"),
            }
        });
    }
}

/// Opens a TCP or TLS connection to an IMS destination for the engine; the engine learns
/// the outcome as `Opened` or `ConnectFailed`.
pub fn spawn_connect(ctx: Arc<Ctx>, remote: SocketAddr, transport: Transport) {
    tokio::spawn(async move {
        let failed = |ctx: Arc<Ctx>| async move {
            let _ = ctx.events.send(Event::ConnectFailed { remote, transport }).await;
        };
        let Ok(permit) = ctx.tcp_slots.clone().try_acquire_owned() else {
            ctx.stats.inc(Metric::ConnectionsRefused);
            warn!(%remote, "limits.max_tcp_connections reached; cannot connect");
            return failed(ctx).await;
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = TcpStream::connect(remote).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(|e| e.to_string())?;
            Ok::<_, String>((stream, local))
        })
        .await;
        let (stream, local) = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                info!(%remote, error = %e, ?transport, "IMS connect failed");
                return failed(ctx).await;
            }
            Err(_) => {
                info!(%remote, ?transport, "IMS connect timed out");
                return failed(ctx).await;
            }
        };
        if transport != Transport::Tls {
            return connection(stream, Transport::Tcp, local, remote, ctx, permit).await;
        }
        let Some(client) = &ctx.ims_tls else {
            warn!(%remote, "SIP over TLS to the core needs ims.tls_ca");
            return failed(ctx).await;
        };
        // The next hop's certificate must name its configured host; any other destination
        // (a Via to answer) its IP address.
        let name = if remote == client.next_hop { client.next_hop_name.clone() } else { remote.ip().to_string() };
        let Ok(name) = tokio_rustls::rustls::pki_types::ServerName::try_from(name.clone()) else {
            warn!(%remote, %name, "not a TLS server name");
            return failed(ctx).await;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, client.connector.connect(name, stream)).await {
            Ok(Ok(tls)) => connection(tls, Transport::Tls, local, remote, ctx, permit).await,
            Ok(Err(e)) => {
                warn!(%remote, error = %e, "IMS TLS handshake failed (check ims.tls_ca and the core's certificate)");
                failed(ctx).await
            }
            Err(_) => {
                info!(%remote, "IMS TLS handshake timed out");
                failed(ctx).await
            }
        }
    });
}

/// One IMS stream connection (TCP, or TLS over TCP), inbound or outbound, until either side
/// closes it.
async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    ctx: Arc<Ctx>,
    _permit: OwnedSemaphorePermit,
) {
    let conn = ctx.next_conn();
    let (tx, mut rx) = mpsc::channel(WRITER_QUEUE);
    let close = Arc::new(Notify::new());
    let writer = Writer {
        data: tx,
        close: close.clone(),
    };
    let opened = Event::Opened {
        conn,
        side: Side::Ims,
        transport,
        local,
        remote,
        writer,
    };
    if ctx.events.send(opened).await.is_err() {
        return;
    }
    ctx.stats.inc(Metric::TcpConnections);
    debug!(?conn, %remote, ?transport, "IMS connection open");

    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut framer = StreamFramer::new(ctx.max_message_size);
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        tokio::select! {
            () = ctx.shutting_down() => break,
            () = close.notified() => break,
            data = rx.recv() => match data {
                Some(data) => {
                    if writer.write_all(&data).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Message(data))) => {
                            let flow = Flow::Ims { transport, remote };
                            let event = Event::Received { flow, conn: Some(conn), remote, data };
                            if ctx.events.send(event).await.is_err() {
                                break 'conn;
                            }
                        }
                        // RFC 5626 §4.4.1: a CRLFCRLF ping is answered with one CRLF.
                        Ok(Some(Frame::Ping)) => {
                            if writer.write_all(b"\r\n").await.is_err() {
                                break 'conn;
                            }
                        }
                        // The next message's start is unknown after a framing error: close.
                        Err(e) => {
                            ctx.stats.inc(Metric::FramingErrors);
                            info!(?conn, %remote, error = %e, ?transport, "IMS stream framing error; closing");
                            break 'conn;
                        }
                    }
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    ctx.stats.dec(Metric::TcpConnections);
    let _ = ctx.events.send(Event::Closed { conn }).await;
    debug!(?conn, %remote, ?transport, "IMS connection closed");
}
