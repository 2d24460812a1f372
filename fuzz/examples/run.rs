//! Runs one target over files: `cargo run --example run -- NAME FILE...` (with
//! `ESTUARY_FUZZ_TRACE=1` the b2bua target prints its exchange).
fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: run NAME FILE...");
    let f: fn(&[u8]) = match name.as_str() {
        "sip_message" => estuary_fuzz::sip_message,
        "sdp" => estuary_fuzz::sdp,
        "stun" => estuary_fuzz::stun,
        "rtp_rtcp" => estuary_fuzz::rtp_rtcp,
        "sdes_fingerprint" => estuary_fuzz::sdes_fingerprint,
        "pcap" => estuary_fuzz::pcap,
        "b2bua" => estuary_fuzz::b2bua,
        other => panic!("unknown target {other}"),
    };
    for path in args {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let t = std::time::Instant::now();
        f(&data);
        eprintln!("{path}: ok in {:?}", t.elapsed());
    }
}
