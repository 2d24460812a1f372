//! Admin HTTP on `admin.listen`: `GET /healthz` and `GET /metrics` (Prometheus text 0.0.4).
//! Hand-rolled: two fixed routes, one request per connection.
//!
//! /healthz is what a load balancer acts on, so it says 503 with a one-line reason whenever
//! the node cannot do its work: the engine did not answer within a second (stuck or drowning),
//! a listener's accept loop is not running, or the transcoder pool has refused packets for a
//! whole second. Otherwise 200 with a short JSON summary.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::events::Event;
use crate::http::{self, HeadError, RequestHead};
use crate::metrics;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long /metrics waits for the engine task before answering 503.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the engine may take to answer a health probe: longer means it is not turning.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the transcoder may refuse packets before the node reports itself unhealthy.
const TRANSCODER_FULL_LIMIT: Duration = Duration::from_secs(1);
/// Concurrent admin requests; scrapers need one or two.
const MAX_CLIENTS: usize = 32;

/// Runs the admin listener on a thread of its own with its own small runtime: /healthz must
/// answer, and say 503, precisely when the engine or the workers are stuck, which it could
/// not do from a task queued behind them.
pub fn spawn_thread(listener: TcpListener, ctx: Arc<Ctx>) -> Result<(), crate::error::DaemonError> {
    let setup = |e: std::io::Error| crate::error::DaemonError::setup("admin.listen", e.to_string());
    let listener = listener.into_std().map_err(setup)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(setup)?;
    std::thread::Builder::new()
        .name("estuary-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, ctx).await,
                    Err(e) => warn!(error = %e, "admin listener lost"),
                }
            })
        })
        .map_err(setup)?;
    Ok(())
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let accepted = tokio::select! {
            () = ctx.shutting_down() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &ctx)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, ctx: &Ctx) {
    let (bytes, len) = match http::read_head(&mut stream).await {
        Ok(read) => read,
        Err(HeadError::TooLarge) => {
            let _ = http::respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "",
                "text/plain",
                b"",
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    let Some(head) = RequestHead::parse(&bytes[..len]) else {
        let _ = http::respond(
            &mut stream,
            400,
            "Bad Request",
            "",
            "text/plain",
            b"bad request\n",
        )
        .await;
        return;
    };
    let result = match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") => {
            let (status, reason, content_type, body) = match health(ctx).await {
                Ok(summary) => (200, "OK", "application/json", summary),
                Err(why) => (503, "Service Unavailable", "text/plain", format!("{why}\n")),
            };
            http::respond(&mut stream, status, reason, "", content_type, body.as_bytes()).await
        }
        ("POST", "/drain") => {
            ctx.request_drain();
            http::respond(&mut stream, 202, "Accepted", "", "text/plain", b"draining\n").await
        }
        ("POST", path) if ctx.test_hooks && path.starts_with("/test/stall-engine/") => {
            match path["/test/stall-engine/".len()..].parse::<u64>() {
                Ok(ms) if ms <= 10_000 => {
                    let _ = ctx.events.send(Event::Stall(Duration::from_millis(ms))).await;
                    http::respond(&mut stream, 202, "Accepted", "", "text/plain", b"stalling\n").await
                }
                _ => http::respond(&mut stream, 400, "Bad Request", "", "text/plain", b"milliseconds 0..=10000\n").await,
            }
        }
        ("GET", "/metrics") => match engine_samples(ctx, ENGINE_TIMEOUT).await {
            Ok(engine) => {
                let mut daemon = ctx.stats.samples();
                if let Some(t) = &ctx.transcoder {
                    daemon.extend(t.samples());
                }
                daemon.extend(ctx.records.samples());
                daemon.extend(ctx.sources.samples());
                daemon.extend(ctx.media_ports.samples());
                if let Some(c) = &ctx.cluster {
                    daemon.extend(c.samples());
                }
                daemon.extend(ctx.recorder.samples());
                let body = metrics::render(&metrics::merge(engine, daemon));
                http::respond(
                    &mut stream,
                    200,
                    "OK",
                    "",
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                )
                .await
            }
            Err(_) => {
                http::respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "",
                    "text/plain",
                    b"engine not answering\n",
                )
                .await
            }
        },
        ("GET", _) => {
            http::respond(
                &mut stream,
                404,
                "Not Found",
                "",
                "text/plain",
                b"not found\n",
            )
            .await
        }
        _ => {
            http::respond(
                &mut stream,
                405,
                "Method Not Allowed",
                "Allow: GET\r\n",
                "text/plain",
                b"",
            )
            .await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "admin response not delivered");
    }
}

/// The node's health: a JSON summary, or why it cannot take traffic.
async fn health(ctx: &Ctx) -> Result<String, String> {
    // First: a load balancer must stop sending new work here, whatever else holds.
    if ctx.is_draining() {
        return Err("draining".to_owned());
    }
    if let Some(name) = ctx.listener_down() {
        return Err(format!("listener {name} is not accepting"));
    }
    if let Some(t) = &ctx.transcoder {
        if let Some(full) = t.pool.stats().full_for(std::time::Instant::now()).filter(|d| *d >= TRANSCODER_FULL_LIMIT) {
            return Err(format!("transcoder queues full for {} ms", full.as_millis()));
        }
    }
    let samples = engine_samples(ctx, HEALTH_TIMEOUT).await?;
    let value = |name: &str| samples.iter().find(|s| s.name == name && s.labels.is_empty()).map_or(0, |s| s.value);
    Ok(format!(
        "{{\"status\":\"ok\",\"uptime_s\":{},\"calls\":{},\"registrations\":{},\"ws_connections\":{},\"transcoding_channels\":{}}}\n",
        ctx.stats.get(metrics::Metric::UptimeSeconds),
        value("estuary_calls_active"),
        value("estuary_registrations_active"),
        ctx.stats.get(metrics::Metric::WsConnections),
        value("estuary_transcoding_channels_active"),
    ))
}

/// Asks the engine task for its samples; it owns the engine, so this is a message, not a lock.
/// Err says why there is no answer within `limit`: the engine is gone, or it is not turning.
pub(crate) async fn engine_samples(ctx: &Ctx, limit: Duration) -> Result<Vec<estuary_b2bua::Sample>, String> {
    let probe = async {
        let (tx, rx) = oneshot::channel();
        ctx.events.send(Event::Metrics(tx)).await.ok()?;
        rx.await.ok()
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(Some(samples)) => Ok(samples),
        Ok(None) => Err("engine stopped".to_owned()),
        Err(_) => Err(format!("engine loop has not turned for {} ms", limit.as_millis())),
    }
}
