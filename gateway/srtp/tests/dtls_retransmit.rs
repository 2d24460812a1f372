//! Loss during the handshake: a lost flight is retransmitted after the timer and the handshake
//! recovers; a peer that never answers ends in `Failed(Timeout)`.

mod common;

use std::time::Duration;

use common::{connected, failure, Pair, Side};
use estuary_srtp::{DtlsConfig, DtlsFailure, SrtpProfile};

const BOTH: &[SrtpProfile] = &[SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm];

#[test]
fn lost_first_flight_is_retransmitted() {
    let mut pair = Pair::new(BOTH, BOTH);
    // Drop the ClientHello once.
    pair.filter = Box::new(|side, n, _| !(side == Side::Client && n == 0));
    pair.run(Duration::from_secs(60));
    let (_, ck) = connected(&pair.client_events).expect("client connected after retransmission");
    let (_, sk) = connected(&pair.server_events).expect("server connected after retransmission");
    assert_eq!(ck, sk);
    // One retransmission interval (1 s) passed, no more.
    assert_eq!(pair.elapsed(), Duration::from_secs(1));
}

#[test]
fn any_single_lost_datagram_is_recovered() {
    // Drop the nth datagram of one side, for every n the handshake produces.
    for side in [Side::Client, Side::Server] {
        for lost in 0..8 {
            let mut pair = Pair::new(BOTH, BOTH);
            pair.filter = Box::new(move |s, n, _| !(s == side && n == lost));
            pair.run(Duration::from_secs(60));
            assert!(
                connected(&pair.client_events).is_some()
                    && connected(&pair.server_events).is_some(),
                "{side:?} datagram {lost} lost: client {:?} server {:?}",
                pair.client_events,
                pair.server_events
            );
            assert!(
                pair.elapsed() <= Duration::from_secs(3),
                "{side:?} {lost}: {:?}",
                pair.elapsed()
            );
        }
    }
}

fn interval(ms: u64) -> DtlsConfig {
    DtlsConfig {
        retransmit_interval: Duration::from_millis(ms),
        ..DtlsConfig::default()
    }
}

/// The peer retransmits its flight before our timer fires, because ours was lost. rtc-dtls
/// alone goes silent here (its timer is cleared by the peer's repeat); our guard answers the
/// repeat with our flight at once (RFC 6347 §4.2.4).
#[test]
fn peer_retransmission_before_our_timer_is_answered() {
    // Browser-like fast client (300 ms), our server at 1 s: lose our flight 4 once.
    let mut pair = Pair::with_config(&interval(300), &interval(1000));
    pair.filter = Box::new(|side, n, _| !(side == Side::Server && n == 1));
    pair.run(Duration::from_secs(60));
    assert!(
        connected(&pair.server_events).is_some(),
        "{:?}",
        pair.server_events
    );
    assert!(
        connected(&pair.client_events).is_some(),
        "{:?}",
        pair.client_events
    );
    assert_eq!(
        pair.elapsed(),
        Duration::from_millis(300),
        "answered the first repeat"
    );

    // Fast server, slow client: lose the client's flight 5 once; the server repeats flight 4
    // before the client's timer, and the client must answer with flight 5.
    let mut pair = Pair::with_config(&interval(1000), &interval(300));
    pair.filter = Box::new(|side, n, _| !(side == Side::Client && n == 2));
    pair.run(Duration::from_secs(60));
    assert!(
        connected(&pair.server_events).is_some(),
        "{:?}",
        pair.server_events
    );
    assert!(
        connected(&pair.client_events).is_some(),
        "{:?}",
        pair.client_events
    );
    assert!(
        pair.elapsed() <= Duration::from_secs(1),
        "{:?}",
        pair.elapsed()
    );
}

#[test]
fn random_loss_recovers() {
    // 30% of datagrams lost in each direction, seeded so the run is the same every time, with
    // equal and with unequal retransmission timers.
    use rand::{Rng, SeedableRng};
    for seed in 0..30u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (c, s) = match seed % 3 {
            0 => (1000, 1000),
            1 => (250, 1000),
            _ => (1000, 400),
        };
        let mut pair = Pair::with_config(&interval(c), &interval(s));
        pair.filter = Box::new(move |_, _, _| rng.random_bool(0.7));
        pair.run(Duration::from_secs(60));
        assert!(
            connected(&pair.client_events).is_some() && connected(&pair.server_events).is_some(),
            "seed {seed}: client {:?} server {:?}",
            pair.client_events,
            pair.server_events
        );
    }
}

#[test]
fn silent_server_times_out_the_client() {
    let mut pair = Pair::new(BOTH, BOTH);
    pair.filter = Box::new(|side, _, _| side != Side::Client);
    // rtc-dtls gives up after the 7th retransmission at a constant 1 s interval: 8 s.
    pair.run(Duration::from_secs(9));
    assert_eq!(failure(&pair.client_events), Some(DtlsFailure::Timeout));
    assert_eq!(pair.elapsed(), Duration::from_secs(8));
    assert!(
        pair.sent[0] >= 8,
        "the ClientHello was retransmitted: {}",
        pair.sent[0]
    );
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn server_without_client_times_out() {
    let mut pair = Pair::new(BOTH, BOTH);
    pair.filter = Box::new(|_, _, _| false);
    pair.run(Duration::from_secs(120));
    assert_eq!(failure(&pair.server_events), Some(DtlsFailure::Timeout));
    assert_eq!(pair.server.poll_timeout(), None);
}
