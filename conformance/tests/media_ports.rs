//! Bind before announce (issue 12): a media port appears in SDP only once the daemon holds its
//! socket, and a port another process holds is skipped and counted instead of ending the call
//! with "Address already in use".
//!
//! Runs in its own loopback-only network namespace, so the ports this test holds are nobody
//! else's. Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::net::UdpSocket;

use estuary_conformance::flows::{finish, Setup};
use estuary_conformance::net::{in_loopback_netns, media_port_window};
use estuary_conformance::ws_client::{media_port, webrtc_offer};

const CALLEE: &str = "sip:bob@ims.test";
const TEST: &str = "ports_held_by_another_process_are_skipped_and_announced_ports_are_bound";

fn held_by_someone(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

#[test]
fn ports_held_by_another_process_are_skipped_and_announced_ports_are_bound() {
    if !in_loopback_netns(TEST) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (min, max) = media_port_window();
        // Another process's sockets: the first pair's RTP port and the second pair's RTCP port.
        let _rtp = UdpSocket::bind(("127.0.0.1", min)).unwrap();
        let _rtcp = UdpSocket::bind(("127.0.0.1", min + 3)).unwrap();
        let s = Setup::start(|b| b.set("media.port_min", &min.to_string()).set("media.port_max", &max.to_string())).await;
        assert_eq!(s.gw.metric("estuary_media_ports_skipped_total"), Some(2.0), "two pairs skipped at start");
        let bound = s.gw.metric("estuary_media_ports_bound").expect("estuary_media_ports_bound");
        assert!(bound >= 16.0, "a batch of pairs bound before the first call: {bound}");
        // Each pair the daemon reports bound is, both ports, before any call.
        for p in (min + 4..=max - 1).step_by(2).take(bound as usize) {
            assert!(held_by_someone(p) && held_by_someone(p + 1), "pair {p} reported bound but not held");
        }

        let mut reg = s.register().await;
        let sipp = s.uas("uas_answer_wait_bye.xml").await;
        let (mut d, ok) = reg.client.call_answered(CALLEE, &webrtc_offer(9)).await;
        let web_port = media_port(&ok.body);
        reg.client.bye(&mut d).await;
        let run = finish(sipp, &reg.client, &s.gw).await;
        let invites = run.received_requests("INVITE");
        let inv = invites.first().unwrap_or_else(|| panic!("sipp saw no INVITE: {}", run.describe()));
        let ims_port = media_port(&inv.body);
        for (leg, p) in [("browser", web_port), ("IMS", ims_port)] {
            assert!((min..=max).contains(&p), "{leg} port {p} outside {min}..{max}");
            assert!(p != min && p != min + 2, "{leg} port {p} is a pair another process holds");
            assert!(held_by_someone(p), "{leg} port {p} announced but not bound");
        }
        assert!(held_by_someone(ims_port + 1), "the IMS leg's RTCP port {} is bound too", ims_port + 1);
        let log = s.gw.log();
        assert!(!log.contains("cannot bind media port"), "{}", s.gw.log_tail(40));
        assert!(log.contains("media ports held by another process"), "the skip is logged");
        assert_eq!(s.gw.metric("estuary_media_ports_skipped_total"), Some(2.0), "counted once");
    });
}
