//! The replay corpus (`conformance/captures/<scenario>/`): a real session recorded by the
//! daemon (`recording.mode = "signalling"`, or `"full"` for the scenarios with media) is split
//! into what entered the gateway (`input.pcapng`) and what it sent (`expected.pcapng`), by the
//! gateway's own addresses: its SIP listeners, and the media ports its SDP announced.
//! `estuary replay input.pcapng --expect expected.pcapng` must then reproduce the second from
//! the first.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_pcap::{build_udp, CaptureReader, LinkType, PcapNgWriter, Protocol};

/// Interface names of the recorder's lanes, in its order (replay finds lanes by them).
const LANES: [&str; 4] = ["web: SIP over WebSocket (one datagram per message)", "ims: SIP", "web: media, SRTP decrypted by estuary", "ims: media"];
/// Lanes 0 and 1 carry SIP, 2 and 3 media.
pub const WEB_MEDIA: u32 = 2;

/// One datagram of a recording: (time, lane: 0 web SIP / 1 IMS SIP / 2 web media / 3 IMS
/// media, src, dst, payload).
pub type Datagram = (Duration, u32, SocketAddr, SocketAddr, Vec<u8>);

/// Every datagram (SIP and media lanes) of every capture under `dir`, in time order.
pub fn read_recordings(dir: &Path) -> Vec<Datagram> {
    let mut files: Vec<PathBuf> = Vec::new();
    for day in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        files.extend(std::fs::read_dir(day.path()).into_iter().flatten().flatten().map(|f| f.path()));
    }
    let mut out: Vec<Datagram> = files.iter().flat_map(|f| read_capture(f)).collect();
    out.sort_by_key(|d| d.0);
    out
}

/// The datagrams of one capture in the recorder's layout, in file order.
pub fn read_capture(f: &Path) -> Vec<Datagram> {
    let file = File::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    let mut r = CaptureReader::new(BufReader::new(file)).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    let mut out = Vec::new();
    loop {
        let (iface, at, packet) = {
            let Some(rec) = r.next_record().unwrap_or_else(|e| panic!("{}: {e}", f.display())) else { break };
            let p = rec.decode().ok().filter(|p| p.protocol == Protocol::Udp).map(|p| (p.src, p.dst, p.payload.to_vec()));
            (rec.interface, rec.timestamp, p)
        };
        // Interfaces are declared as the file goes: look the name up per record.
        let Some(lane) = r.interface_name(iface).and_then(|n| LANES.iter().position(|l| *l == n)) else { continue };
        let lane = lane as u32;
        if let Some((src, dst, data)) = packet {
            out.push((at, lane, src, dst, data));
        }
    }
    out
}

/// Writes `datagrams` as a capture in the recorder's layout.
pub fn write_capture(path: &Path, datagrams: &[&Datagram]) {
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = PcapNgWriter::new_named(std::io::BufWriter::new(file), LinkType::RAW, LANES[0]).expect("pcapng header");
    for name in &LANES[1..] {
        w.add_named_interface(LinkType::RAW, name).expect("interface");
    }
    for (at, lane, src, dst, data) in datagrams {
        let ip = build_udp(*src, *dst, data).expect("IP packet");
        w.write_packet_on(*lane, *at, &ip).expect("write");
    }
    w.flush().expect("flush");
}

/// Splits the recordings under `recordings` into `out/input.pcapng` (sent to `gateway`'s
/// SIP addresses, or to a media port the gateway announced) and `out/expected.pcapng` (sent
/// from them). Returns (inputs, outputs).
pub fn split(recordings: &Path, gateway: &[SocketAddr], out: &Path) -> (usize, usize) {
    let all = read_recordings(recordings);
    let media = announced_media(&all, gateway);
    let ours = |d: &Datagram, a: SocketAddr| if d.1 < WEB_MEDIA { gateway.contains(&a) } else { media.contains(&a) };
    let input: Vec<&Datagram> = all.iter().filter(|d| ours(d, d.3)).collect();
    let expected: Vec<&Datagram> = all.iter().filter(|d| ours(d, d.2)).collect();
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    write_capture(&out.join("input.pcapng"), &input);
    write_capture(&out.join("expected.pcapng"), &expected);
    (input.len(), expected.len())
}

/// The media addresses the gateway's own SDP announced (c= address and m= port, and the port
/// after it for RTCP without rtcp-mux).
fn announced_media(all: &[Datagram], gateway: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (_, lane, src, _, data) in all.iter().filter(|d| d.1 < WEB_MEDIA && gateway.contains(&d.2)) {
        let text = String::from_utf8_lossy(data);
        let Some((_, body)) = text.split_once("\r\n\r\n") else { continue };
        let ip = body.lines().find_map(|l| l.strip_prefix("c=IN IP4 ").or_else(|| l.strip_prefix("c=IN IP6 "))).and_then(|a| a.trim().parse().ok());
        let ip = ip.unwrap_or(src.ip());
        for port in body.lines().filter_map(|l| l.strip_prefix("m=")).filter_map(|m| m.split(' ').nth(1)?.parse::<u16>().ok()) {
            // The browser side bundles every m-line on one port with rtcp-mux.
            let ports: &[u16] = if *lane == 0 { &[port] } else { &[port, port.wrapping_add(1)] };
            for p in ports.iter().filter(|p| **p != 0) {
                let a = SocketAddr::new(ip, *p);
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}
