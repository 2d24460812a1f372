//! Starts the real `estuary` binary with every listener on port 0 and reads the bound
//! addresses from its start report on stdout, so tests never collide when run in parallel.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_estuary");

pub struct Daemon {
    pub child: Child,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    pub ims: SocketAddr,
    pub admin: SocketAddr,
    /// SHA-256 of the WSS certificate, `AB:CD:...`.
    pub fingerprint: String,
}

/// Every listener on an ephemeral loopback port.
pub const PORT_ZERO: &[&str] = &[
    "web.ws_listen=127.0.0.1:0",
    "web.wss_listen=127.0.0.1:0",
    "ims.listen=127.0.0.1:0",
    "admin.listen=127.0.0.1:0",
    "log.level=warn",
];

impl Daemon {
    pub async fn start() -> Daemon {
        Daemon::start_with(&[]).await
    }

    /// `extra` overrides are applied after [`PORT_ZERO`].
    pub async fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_with_env(extra, &[]).await
    }

    /// As [`Daemon::start_with`], with environment variables for the daemon.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        cmd.arg("run");
        // Daemons of parallel tests bind media ports: each gets its own 100-port window.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let w = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 27;
        let window = [
            format!("media.port_min={}", 30000 + 100 * w),
            format!("media.port_max={}", 30099 + 100 * w),
        ];
        for s in PORT_ZERO
            .iter()
            .copied()
            .chain(window.iter().map(String::as_str))
            .chain(extra.iter().copied())
        {
            cmd.arg("--set").arg(s);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn estuary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut ws, mut wss, mut ims, mut admin, mut fingerprint) = (None, None, None, None, None);
        let report = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["listening", "web.ws_listen", a] => ws = a.parse().ok(),
                    ["listening", "web.wss_listen", a] => wss = a.parse().ok(),
                    ["listening", "ims.listen", a] => ims = a.parse().ok(),
                    ["listening", "admin.listen", a] => admin = a.parse().ok(),
                    ["certificate", "sha256", fp] => fingerprint = Some(fp.to_string()),
                    ["ready"] => return,
                    _ => {}
                }
            }
            panic!("estuary exited before reporting ready");
        };
        tokio::time::timeout(Duration::from_secs(30), report)
            .await
            .expect("estuary did not start in 30 s");
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Daemon {
            child,
            ws: ws.expect("ws address"),
            wss: wss.expect("wss address"),
            ims: ims.expect("ims address"),
            admin: admin.expect("admin address"),
            fingerprint: fingerprint.expect("certificate fingerprint"),
        }
    }

    /// Fails the test if the process has exited.
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "estuary exited"
        );
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin, "/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// The value of an unlabelled sample in /metrics.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Polls a metric until it has the wanted value (socket tasks update it asynchronously).
    pub async fn wait_metric(&self, name: &str, want: u64) {
        for _ in 0..100 {
            if self.metric(name).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{name} never reached {want} (now {})",
            self.metric(name).await
        );
    }
}

/// One HTTP/1.1 GET; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await
}

/// `POST path` with an empty body: (status, body).
pub async fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, &format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n")).await
}

/// Sends `request` as it is and reads the whole response (the server closes).
async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A WebSocket client request offering `protocol`, if any.
pub fn ws_request(
    url: &str,
    protocol: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = protocol {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(p).expect("header"),
        );
    }
    req
}

pub async fn ws_connect(
    addr: SocketAddr,
    protocol: Option<&str>,
) -> Result<
    (
        WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(ws_request(&format!("ws://{addr}/"), protocol), tcp).await
}

/// A TLS client that trusts exactly the certificate whose SHA-256 the daemon reported.
pub fn pinned_tls(fingerprint: &str) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::{self, ClientConfig};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(pin::Pinned {
        fingerprint: fingerprint.to_string(),
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

mod pin {
    use std::sync::Arc;

    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::{
        verify_tls12_signature, verify_tls13_signature, CryptoProvider,
    };
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub struct Pinned {
        pub fingerprint: String,
        pub provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            let fp = digest
                .as_ref()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            if fp == self.fingerprint {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(Error::General(format!("unexpected certificate {fp}")))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

pub const OPTIONS: &str = "OPTIONS sip:ims.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-test-1\r\n\
Max-Forwards: 70\r\n\
From: <sip:probe@ims.test>;tag=1\r\n\
To: <sip:ims.test>\r\n\
Call-ID: test-1@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";
