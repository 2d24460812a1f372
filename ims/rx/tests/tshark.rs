//! An independent decoder: the Rx exchange (AAR/AAA, RAR/RAA, ASR/ASA, STR/STA, then an IPv6
//! session) written into a pcap as TCP on port 3868 must be dissected by Wireshark's Diameter
//! dissector (tshark) without errors, with the command and AVP names we meant. tshark is
//! required: without it this test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use estuary_diameter::Message;
use estuary_pcap::{LinkType, PcapWriter, TcpConversation};
use estuary_rx::media::{Direction, IpFlow, SignallingParams};
use estuary_rx::{AbortCause, CallKey, SpecificAction, TerminationCause};

const AF: &str = "192.0.2.10:40000";
const PCRF: &str = "198.51.100.1:3868";

/// AAR/AAA (initial and update), RAR/RAA, ASR/ASA, STR/STA, in wire order.
fn exchange() -> Vec<(Dir, Vec<u8>)> {
    let mut w = Wire::new();
    let call = CallKey(1);
    w.start(
        call,
        vec![audio(Direction::SendRecv), video(Direction::RecvOnly)],
    );
    let sid = w.rx.session_id(call).unwrap().to_string();
    w.rx.update(w.now, call, params(vec![audio(Direction::Inactive)]))
        .unwrap();
    w.pump();
    let rar = w
        .pcrf
        .rar(&sid, &[SpecificAction::IndicationOfLossOfBearer], &[1]);
    w.pcrf_sends(rar);
    let rar = w.pcrf.rar_out_of_credit(&sid, &[1], 0);
    w.pcrf_sends(rar);
    let asr = w.pcrf.asr(&sid, AbortCause::BearerReleased);
    w.pcrf_sends(asr);
    assert!(w.rx.is_empty(), "the ASR ended the session with STR/STA");
    // An IPv6 browser, ended normally.
    let v6 = CallKey(2);
    let mut p = params(vec![audio(Direction::SendRecv)]);
    p.framed_ip = "2001:db8::1".parse().unwrap();
    p.components[0].flows = vec![IpFlow::udp(
        sa("[2001:db8::1]:49152"),
        sa("[2001:db8:ffff::7]:40000"),
    )];
    w.rx.start(w.now, v6, p).unwrap();
    w.pump();
    w.rx.end(w.now, v6, TerminationCause::Logout).unwrap();
    w.pump();
    assert!(w.rx.is_empty());
    // A registered browser's signalling path (AF_SIGNALLING), ended at deregistration.
    let reg = CallKey(3);
    let signalling = SignallingParams {
        subscription: None,
        framed_ip: "192.0.2.1".parse().unwrap(),
        flows: vec![IpFlow::tcp(sa("192.0.2.1:51000"), sa("198.51.100.7:8443"))],
    };
    w.rx.start_signalling(w.now, reg, signalling).unwrap();
    w.pump();
    w.rx.end(w.now, reg, TerminationCause::Logout).unwrap();
    w.pump();
    assert!(w.rx.is_empty());
    w.log
}

fn write_pcap(path: &Path, messages: &[(Dir, Vec<u8>)]) {
    let (mut tcp, handshake) = TcpConversation::open(AF.parse().unwrap(), PCRF.parse().unwrap()).unwrap();
    let segments = messages.iter().map(|(dir, bytes)| tcp.segment(matches!(dir, Dir::ToPcrf), bytes).unwrap());
    let mut pcap = PcapWriter::new(std::fs::File::create(path).unwrap(), LinkType::RAW).unwrap();
    let mut t = Duration::from_secs(1_700_000_000);
    for ip in handshake.into_iter().chain(segments) {
        t += Duration::from_millis(10);
        pcap.write_packet(t, &ip).unwrap();
    }
    pcap.flush().unwrap();
}

fn tshark(args: &[&str]) -> String {
    let out = match Command::new("tshark").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "tshark is required for the independent-decoder test and could not be run ({e}); \
             install Wireshark's tshark (Debian: apt-get install tshark)"
        ),
    };
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

fn temp_pcap() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("estuary-rx-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("rx.pcap")
}

#[test]
fn tshark_dissects_the_rx_exchange() {
    let messages = exchange();
    let commands: Vec<(u32, bool)> = messages
        .iter()
        .map(|(_, b)| {
            let m = Message::decode(b).unwrap();
            (m.command_code, m.flags.request)
        })
        .collect();
    assert_eq!(
        commands,
        [
            (265, true),
            (265, false),
            (265, true),
            (265, false),
            (258, true),
            (258, false),
            (258, true),
            (258, false),
            (274, true),
            (274, false),
            (275, true),
            (275, false),
            (265, true),
            (265, false),
            (275, true),
            (275, false),
            (265, true),
            (265, false),
            (275, true),
            (275, false),
        ]
    );

    let path = temp_pcap();
    write_pcap(&path, &messages);
    let file = path.to_str().unwrap();
    let verbose = tshark(&["-r", file, "-V", "-Y", "diameter"]);
    assert_eq!(
        verbose.matches("Diameter Protocol").count(),
        messages.len(),
        "every message dissected as Diameter:\n{verbose}"
    );
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet:\n{verbose}"
    );
    assert!(
        !verbose.contains("Expert Info (Error"),
        "expert error:\n{verbose}"
    );
    for needle in [
        // Commands, as tshark 4.0 names them in the detail tree (dictionary.xml, nasreq.xml).
        "Command Code: AA (265)",
        "Command Code: Re-Auth (258)",
        "Command Code: Abort-Session (274)",
        "Command Code: Session-Termination (275)",
        "ApplicationId: 3GPP Rx (16777236)",
        // AVPs.
        "Media-Component-Description",
        "Media-Component-Number",
        "Media-Sub-Component",
        "Flow-Description",
        "Flow-Number",
        "Flow-Status",
        "Flow-Usage",
        "Media-Type",
        "Codec-Data",
        "Max-Requested-Bandwidth-UL",
        "Max-Requested-Bandwidth-DL",
        "AF-Charging-Identifier",
        "Specific-Action",
        "Subscription-Id",
        "Subscription-Id-Data",
        "Framed-IP-Address",
        "Framed-IPv6-Prefix",
        "2001:db8::1",
        "permit out 17 from 2001:db8:ffff::7 40000 to 2001:db8::1 49152",
        "DIAMETER_LOGOUT (1)",
        "Rx-Request-Type",
        "Termination-Cause",
        "Abort-Cause",
        "AVP: Flows(510)",
        // Rel8: out of credit.
        "INDICATION_OF_OUT_OF_CREDIT (7)",
        "Supported-Features",
        "Feature-List-ID",
        "Final-Unit-Action",
        // The signalling session.
        "AF-Signalling-Protocol",
        "permit out 6 from 198.51.100.7 8443 to 192.0.2.1 51000",
        "permit in 6 from 192.0.2.1 51000 to 198.51.100.7 8443",
        // Values.
        "permit out 17 from 198.51.100.7 40000 to 192.0.2.1 49152",
        "permit in 17 from 192.0.2.1 49152 to 198.51.100.7 40000",
        "pcscf.estuary.test;1700000000;1",
        "sip:alice@estuary.test",
        "INDICATION_OF_LOSS_OF_BEARER (2)",
        "INDICATION_OF_RELEASE_OF_BEARER (4)",
        "INITIAL_REQUEST (0)",
        "UPDATE_REQUEST (1)",
        "ENABLED (2)",
        "ENABLED-DOWNLINK (1)",
        "DISABLED (3)",
        "BEARER_RELEASED (0)",
        "DIAMETER_ADMINISTRATIVE (4)",
        "DIAMETER_SUCCESS (2001)",
    ] {
        assert!(
            verbose.contains(needle),
            "tshark output lacks {needle:?}:\n{verbose}"
        );
    }
    // AVP summary lines: flags as tshark parsed them (V and M set on 3GPP AVPs, M clear on
    // Rx-Request-Type).
    for summary in [
        "AF-Charging-Identifier(505) l=21 f=VM- vnd=TGPP",
        "Media-Type(520) l=16 f=VM- vnd=TGPP val=AUDIO (0)",
        "Rx-Request-Type(533) l=16 f=V-- vnd=TGPP val=INITIAL_REQUEST (0)",
        "Framed-IP-Address(8) l=12 f=-M- val=192.0.2.1",
        "Flow-Usage(512) l=16 f=VM- vnd=TGPP val=AF_SIGNALLING (2)",
        "Final-Unit-Action(449) l=12 f=-M- val=TERMINATE (0)",
        "AF-Signalling-Protocol(529) l=16 f=V-- vnd=TGPP val=SIP (1)",
        "Media-Component-Number(518) l=16 f=VM- vnd=TGPP val=0",
        "Termination-Cause(295) l=12 f=-M- val=DIAMETER_ADMINISTRATIVE (4)",
    ] {
        assert!(
            verbose.contains(summary),
            "tshark output lacks {summary:?}:\n{verbose}"
        );
    }
    // The one-line summaries name request and answer of each command, in wire order.
    let summary = tshark(&["-r", file, "-Y", "diameter"]);
    let names: Vec<&str> = summary
        .lines()
        .filter_map(|l| l.split("cmd=").nth(1))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert_eq!(
        names,
        [
            "AA Request",
            "AA Answer",
            "AA Request",
            "AA Answer",
            "Re-Auth Request",
            "Re-Auth Answer",
            "Re-Auth Request",
            "Re-Auth Answer",
            "Abort-Session Request",
            "Abort-Session Answer",
            "Session-Termination Request",
            "Session-Termination Answer",
            "AA Request",
            "AA Answer",
            "Session-Termination Request",
            "Session-Termination Answer",
            "AA Request",
            "AA Answer",
            "Session-Termination Request",
            "Session-Termination Answer",
        ],
        "{summary}"
    );
    if std::env::var_os("ESTUARY_RX_KEEP_PCAP").is_none() {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    } else {
        eprintln!("capture kept at {}", path.display());
    }
}
