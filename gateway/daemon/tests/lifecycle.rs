//! Start-up failures name the key; SIGTERM stops the daemon cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, BIN, PORT_ZERO};

#[test]
fn bind_failure_names_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run");
    for s in PORT_ZERO {
        cmd.arg("--set").arg(s);
    }
    cmd.arg("--set").arg(format!("web.ws_listen={addr}"));
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("web.ws_listen {addr}: address in use")),
        "{err}"
    );
}

#[test]
fn a_bad_override_is_exit_2() {
    let out = Command::new(BIN)
        .args(["run", "--set", "media.port_min=30000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("media.port_min: must be less than media.port_max"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_closes_websockets() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let mut d = Daemon::start().await;
    let (mut ws, _) = common::ws_connect(d.ws, Some("sip"))
        .await
        .expect("upgrade");
    d.wait_metric("estuary_ws_connections", 1).await;
    let pid = d.child.id().expect("pid");
    // Our own child, by its pid.
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // The browser gets a close frame (1001 going away) before the process exits.
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("close in time");
    assert_eq!(frame, Some(1001));
    let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
