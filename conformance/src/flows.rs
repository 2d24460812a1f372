//! Steps most signalling tests share: a gateway aimed at a sipp port, and a browser
//! registered through it with the sipp registrar.

use crate::gateway::{Gateway, GatewayBuilder};
use crate::msg::{addr_uri, SipMsg};
use crate::net::{free_tcp_port, free_udp_port};
use crate::sipp::{Sipp, SippRun};
use crate::ws_client::{WsSipClient, DEFAULT_WAIT};

/// The test subscriber the sipp registrar knows (registrar.xml verifies this password).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";
pub const DOMAIN: &str = "ims.test";

/// A gateway plus the port its IMS next hop points at (where sipp listens).
pub struct Setup {
    pub gw: Gateway,
    pub sipp_port: u16,
    /// The next hop is reached over TCP (else UDP).
    pub tcp: bool,
}

impl Setup {
    /// A gateway whose `ims.next_hop` is a fresh free UDP port; `configure` adds settings.
    pub async fn start(configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Setup {
        let sipp_port = free_udp_port();
        let gw = configure(Gateway::builder().next_hop_udp(sipp_port))
            .start()
            .await;
        Setup {
            gw,
            sipp_port,
            tcp: false,
        }
    }

    /// As [`Setup::start`] with the next hop over TCP.
    pub async fn start_tcp(configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Setup {
        let sipp_port = free_tcp_port();
        let gw = configure(Gateway::builder().next_hop_tcp(sipp_port))
            .start()
            .await;
        Setup {
            gw,
            sipp_port,
            tcp: true,
        }
    }

    /// A sipp callee on the next-hop port running `scenario` (an answering one such as
    /// `uas_answer_echo.xml`) that echoes the RTP it receives on `media_port` (40 s at most).
    pub async fn echo_uas(&self, scenario: &str, media_port: u16) -> Sipp {
        let b = Sipp::uas(scenario, self.sipp_port)
            .arg("-mp")
            .arg(&media_port.to_string())
            .arg("-rtp_echo")
            .timeout(std::time::Duration::from_secs(40));
        if self.tcp { b.tcp() } else { b }.start().await
    }

    /// A sipp UAS on the next-hop port running `scenario`.
    pub async fn uas(&self, scenario: &str) -> Sipp {
        let b = Sipp::uas(scenario, self.sipp_port);
        if self.tcp { b.tcp() } else { b }.start().await
    }

    /// Connect a browser and register it through the sipp registrar (registrar.xml: digest
    /// challenge, then 200); the registrar run is finished and checked.
    pub async fn register(&self) -> Registered {
        let sipp = self.uas("registrar.xml").await;
        let (client, responses) = self.connect_and_register().await;
        let run = sipp.wait().await;
        let last = responses.last().expect("at least one response");
        assert_eq!(
            last.status(),
            200,
            "registration through the gateway failed\n--- browser ---\n{}\n--- sipp ---\n{}",
            client.transcript(),
            run.describe()
        );
        run.assert_success();
        let mut reg = Registered::new(client, responses);
        reg.learn_from(&run);
        reg.registrar = Some(run);
        reg
    }

    /// As [`Setup::register`] with a registrar `scenario` that goes on after the 200 (e.g.
    /// waits for the deregistration): it is returned running in `registrar_running`.
    pub async fn register_keep_running(&self, scenario: &str) -> Registered {
        let sipp = self.uas(scenario).await;
        let (client, responses) = self.connect_and_register().await;
        let last = responses.last().expect("at least one response");
        assert_eq!(
            last.status(),
            200,
            "registration failed:\n{}",
            client.transcript()
        );
        let mut reg = Registered::new(client, responses);
        reg.registrar_running = Some(sipp);
        reg
    }

    async fn connect_and_register(&self) -> (WsSipClient, Vec<SipMsg>) {
        let mut client = WsSipClient::connect(self.gw.ws_addr, USER, DOMAIN, PASSWORD).await;
        let responses = client.register(600, DEFAULT_WAIT).await;
        (client, responses)
    }
}

/// A browser registered through the gateway.
pub struct Registered {
    pub client: WsSipClient,
    /// Every response the browser got to its REGISTERs (401, then 200).
    pub responses: Vec<SipMsg>,
    /// The finished registrar run (registrar.xml).
    pub registrar: Option<SippRun>,
    /// A registrar scenario that goes on after the 200.
    pub registrar_running: Option<Sipp>,
    /// The Contact URI the gateway registered at IMS on the browser's behalf (set by
    /// [`Setup::register`]).
    pub gateway_contact: String,
    /// The Path (RFC 3327) value the gateway inserted.
    pub path: String,
}

impl Registered {
    fn new(client: WsSipClient, responses: Vec<SipMsg>) -> Registered {
        Registered {
            client,
            responses,
            registrar: None,
            registrar_running: None,
            gateway_contact: String::new(),
            path: String::new(),
        }
    }

    /// Read the gateway Contact and Path from the last REGISTER the registrar received.
    pub fn learn_from(&mut self, run: &SippRun) {
        let regs = run.received_requests("REGISTER");
        let last = regs
            .last()
            .unwrap_or_else(|| panic!("registrar saw no REGISTER:\n{}", run.describe()));
        self.gateway_contact = last
            .header("Contact")
            .map(addr_uri)
            .unwrap_or_else(|| panic!("gateway REGISTER without Contact:\n{last}"));
        self.path = last
            .header("Path")
            .unwrap_or_else(|| panic!("gateway REGISTER without Path:\n{last}"))
            .to_owned();
    }
}

/// Wait for a sipp run and require success, showing both sides on failure.
pub async fn finish(sipp: Sipp, browser: &WsSipClient, gw: &Gateway) -> SippRun {
    let run = sipp.wait().await;
    assert!(
        run.succeeded(),
        "sipp {} failed: {}\n--- browser ---\n{}\n--- estuary log (tail) ---\n{}",
        run.label,
        run.describe(),
        browser.transcript(),
        gw.log_tail(80)
    );
    if std::env::var_os("ESTUARY_TRACE_SIP").is_some() {
        eprintln!(
            "=== browser ===\n{}\n=== sipp {} ===\n{}",
            browser.transcript(),
            run.label,
            run.transcript()
        );
    }
    run
}
