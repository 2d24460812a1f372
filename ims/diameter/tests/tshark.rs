//! An independent decoder: our messages, written to a pcap as TCP on port 3868, must be
//! dissected by Wireshark's Diameter dissector (tshark) without errors, with the names and
//! values we meant. tshark is required: without it this test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use estuary_diameter::{frame_len, Message, Peer, PeerEvent};
use estuary_pcap::{LinkType, PcapWriter, TcpConversation};

const CLIENT: &str = "192.0.2.10:40000";
const SERVER: &str = "198.51.100.1:3868";

/// A real conversation: CER/CEA, AAR/AAA, DWR/DWA. Returns each message with its direction.
fn conversation() -> Vec<(Dir, Vec<u8>)> {
    let now = t0();
    let mut peer = Peer::new(client_config(), 1_700_000_000, &mut rng(3));
    peer.connect(now);
    let mut net = Net::new(
        peer,
        vec![Link::new(server_config("pcrf.operator.test"))],
        now,
    );
    net.pump();
    assert!(net.client.is_open());
    net.client
        .send_request(net.now, aar("pcscf.estuary.test;1700000000;1"))
        .unwrap();
    net.pump();
    let request = net.links[0]
        .server_events
        .iter()
        .find_map(|e| match e {
            PeerEvent::Request(r) => Some(r.clone()),
            _ => None,
        })
        .expect("AAR delivered");
    net.links[0]
        .server()
        .send_answer(net.now, success_answer(&request, "pcrf.operator.test"))
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(33));
    // One message per TCP segment, so every packet is exactly one Diameter PDU.
    let mut out = Vec::new();
    for (dir, write) in &net.links[0].wire {
        let mut rest = &write[..];
        while let Ok(Some(len)) = frame_len(rest) {
            out.push((*dir, rest[..len].to_vec()));
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
    }
    out
}

fn write_pcap(path: &Path, messages: &[(Dir, Vec<u8>)]) {
    let (mut tcp, handshake) = TcpConversation::open(CLIENT.parse().unwrap(), SERVER.parse().unwrap()).unwrap();
    let segments = messages.iter().map(|(dir, bytes)| tcp.segment(matches!(dir, Dir::ToServer), bytes).unwrap());
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
    let dir = std::env::temp_dir().join(format!("estuary-diameter-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("diameter.pcap")
}

fn parse_number(field: &str) -> u64 {
    let f = field.trim();
    match f.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => match f {
            "True" => 1,
            "False" => 0,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {other:?}")),
        },
    }
}

#[test]
fn tshark_dissects_our_messages() {
    let messages = conversation();
    let decoded: Vec<Message> = messages
        .iter()
        .map(|(_, b)| Message::decode(b).unwrap())
        .collect();
    let commands: Vec<(u32, bool)> = decoded
        .iter()
        .map(|m| (m.command_code, m.flags.request))
        .collect();
    // CER, CEA, AAR, AAA, then at least one DWR/DWA pair.
    assert_eq!(
        &commands[..4],
        &[(257, true), (257, false), (265, true), (265, false)]
    );
    assert!(commands.contains(&(280, true)) && commands.contains(&(280, false)));

    let path = temp_pcap();
    write_pcap(&path, &messages);
    let file = path.to_str().unwrap();

    let verbose = tshark(&["-r", file, "-V", "-Y", "diameter"]);
    let pdus = verbose.matches("Diameter Protocol").count();
    assert_eq!(
        pdus,
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
        "Capabilities-Exchange",
        "Vendor-Specific-Application-Id",
        "Supported-Vendor-Id",
        "Device-Watchdog",
        "AF-Charging-Identifier",
        "Media-Component-Description",
        "Media-Component-Number",
        "Media-Sub-Component",
        "Flow-Description",
        "Flow-Number",
        "Flow-Status",
        "Max-Requested-Bandwidth-UL",
        "Max-Requested-Bandwidth-DL",
        "Codec-Data",
        "Specific-Action",
        "Subscription-Id-Data",
        "Framed-IP-Address",
        "permit out 17 from 192.0.2.1 49152 to 198.51.100.7 5004",
        "permit in 17 from 198.51.100.7 5004 to 192.0.2.1 49152",
        "sip:alice@estuary.test",
        "pcscf.estuary.test;1700000000;1",
        "pcrf.operator.test",
        "16777236",
    ] {
        assert!(
            verbose.contains(needle),
            "tshark output lacks {needle:?}:\n{verbose}"
        );
    }
    // tshark 4.0's AVP summary lines: code, length, flags and vendor as it parsed them.
    for summary in [
        "AF-Charging-Identifier(505) l=21 f=VM- vnd=TGPP",
        "Flow-Description(507) l=67 f=VM- vnd=TGPP val=permit out 17 from 192.0.2.1 49152 to 198.51.100.7 5004",
        "Media-Type(520) l=16 f=VM- vnd=TGPP val=AUDIO (0)",
        "Flow-Status(511) l=16 f=VM- vnd=TGPP val=ENABLED (2)",
        "Vendor-Specific-Application-Id(260) l=32 f=-M-",
        "Product-Name(269) l=15 f=---",
    ] {
        assert!(verbose.contains(summary), "tshark output lacks {summary:?}:\n{verbose}");
    }
    assert!(
        verbose.contains("icid-0001") || verbose.contains("696369642d30303031"),
        "AF-Charging-Identifier value missing:\n{verbose}"
    );

    // Header fields as tshark reads them, against what we encoded.
    let fields = tshark(&[
        "-r",
        file,
        "-Y",
        "diameter",
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-e",
        "diameter.cmd.code",
        "-e",
        "diameter.flags.request",
        "-e",
        "diameter.flags.proxyable",
        "-e",
        "diameter.flags.error",
        "-e",
        "diameter.flags.T",
        "-e",
        "diameter.applicationId",
        "-e",
        "diameter.hopbyhopid",
        "-e",
        "diameter.endtoendid",
        "-e",
        "diameter.length",
    ]);
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines.len(), decoded.len(), "{fields}");
    for (line, (m, (_, bytes))) in lines.iter().zip(decoded.iter().zip(&messages)) {
        let v: Vec<u64> = line.split(';').map(parse_number).collect();
        assert_eq!(
            v,
            [
                u64::from(m.command_code),
                u64::from(m.flags.request),
                u64::from(m.flags.proxiable),
                u64::from(m.flags.error),
                u64::from(m.flags.retransmitted),
                u64::from(m.application_id),
                u64::from(m.hop_by_hop),
                u64::from(m.end_to_end),
                bytes.len() as u64,
            ],
            "tshark line {line:?}"
        );
    }
    // ESTUARY_DIAMETER_KEEP_PCAP=1 keeps the capture for a look in Wireshark.
    if std::env::var_os("ESTUARY_DIAMETER_KEEP_PCAP").is_none() {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    } else {
        eprintln!("capture kept at {}", path.display());
    }
}
