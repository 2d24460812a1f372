//! The replay corpus (`conformance/captures/<scenario>/`): a real session recorded by the
//! daemon (`recording.mode = "signalling"`) is split into what entered the gateway
//! (`input.pcapng`) and what it sent (`expected.pcapng`), by the gateway's own addresses.
//! `estuary replay input.pcapng --expect expected.pcapng` must then reproduce the second from
//! the first.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_pcap::{build_udp, CaptureReader, LinkType, PcapNgWriter, Protocol};

/// Interface names of the recorder's SIP lanes (replay finds sides by them).
const WEB_SIP: &str = "web: SIP over WebSocket (one datagram per message)";
const IMS_SIP: &str = "ims: SIP";

/// One SIP datagram of a recording: (time, 0 web / 1 ims, src, dst, payload).
pub type Datagram = (Duration, u32, SocketAddr, SocketAddr, Vec<u8>);

/// Every SIP datagram (web and IMS lanes; media left out) of every capture under `dir`, in
/// time order.
pub fn read_recordings(dir: &Path) -> Vec<Datagram> {
    let mut files: Vec<PathBuf> = Vec::new();
    for day in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        files.extend(std::fs::read_dir(day.path()).into_iter().flatten().flatten().map(|f| f.path()));
    }
    let mut out: Vec<Datagram> = files.iter().flat_map(|f| read_capture(f)).collect();
    out.sort_by_key(|d| d.0);
    out
}

/// The SIP datagrams of one capture in the recorder's layout, in file order.
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
        let lane = match r.interface_name(iface) {
            Some(WEB_SIP) => 0,
            Some(IMS_SIP) => 1,
            _ => continue,
        };
        if let Some((src, dst, data)) = packet {
            out.push((at, lane, src, dst, data));
        }
    }
    out
}

/// Writes `datagrams` as a capture in the recorder's layout.
pub fn write_capture(path: &Path, datagrams: &[&Datagram]) {
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = PcapNgWriter::new_named(std::io::BufWriter::new(file), LinkType::RAW, WEB_SIP).expect("pcapng header");
    w.add_named_interface(LinkType::RAW, IMS_SIP).expect("interface");
    for (at, lane, src, dst, data) in datagrams {
        let ip = build_udp(*src, *dst, data).expect("IP packet");
        w.write_packet_on(*lane, *at, &ip).expect("write");
    }
    w.flush().expect("flush");
}

/// Splits the recordings under `recordings` into `out/input.pcapng` (sent to `gateway`'s
/// addresses) and `out/expected.pcapng` (sent from them). Returns (inputs, outputs).
pub fn split(recordings: &Path, gateway: &[SocketAddr], out: &Path) -> (usize, usize) {
    let all = read_recordings(recordings);
    let input: Vec<&Datagram> = all.iter().filter(|d| gateway.contains(&d.3)).collect();
    let expected: Vec<&Datagram> = all.iter().filter(|d| gateway.contains(&d.2)).collect();
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    write_capture(&out.join("input.pcapng"), &input);
    write_capture(&out.join("expected.pcapng"), &expected);
    (input.len(), expected.len())
}
