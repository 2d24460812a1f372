//! Admin HTTP on `admin.listen`: `GET /healthz` and `GET /metrics` (Prometheus text 0.0.4).
//! Hand-rolled: two fixed routes, one request per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::engine::Event;
use crate::http::{self, HeadError, RequestHead};
use crate::metrics;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long /metrics waits for the engine task before answering 503.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent admin requests; scrapers need one or two.
const MAX_CLIENTS: usize = 32;

pub async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
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
            http::respond(&mut stream, 200, "OK", "", "text/plain", b"ok\n").await
        }
        ("GET", "/metrics") => match engine_samples(ctx).await {
            Some(engine) => {
                let mut daemon = ctx.stats.samples();
                if let Some(t) = &ctx.transcoder {
                    daemon.extend(t.samples());
                }
                daemon.extend(ctx.records.samples());
                if let Some(r) = &ctx.recorder {
                    daemon.extend(r.samples());
                }
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
            None => {
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

/// Asks the engine task for its samples; it owns the engine, so this is a message, not a lock.
async fn engine_samples(ctx: &Ctx) -> Option<Vec<estuary_b2bua::Sample>> {
    let (tx, rx) = oneshot::channel();
    tokio::time::timeout(ENGINE_TIMEOUT, async {
        ctx.events.send(Event::Metrics(tx)).await.ok()?;
        rx.await.ok()
    })
    .await
    .ok()
    .flatten()
}
