//! `estuary sdp web-to-ims|ims-to-web FILE`: the operator's view of the SDP engine. Reads an
//! offer (FILE or `-` for stdin), runs it through the same engine and policy the daemon uses,
//! and prints the offer the gateway would send plus the codec plan it implies. Ports are
//! placeholders (web 50000, IMS 50002, 50004, ...); ICE credentials and SRTP keys are random
//! per call, and the DTLS fingerprint is the certificate's in a running daemon.

use std::io::Read;
use std::path::Path;

use estuary_config::Config;
use estuary_sdp::{PortAllocator, SdpSession, Side};

use crate::engine_config;

struct PlaceholderPorts(u16);

impl PortAllocator for PlaceholderPorts {
    fn web_port(&mut self) -> Option<u16> {
        Some(50000)
    }
    fn ims_port(&mut self, _index: usize) -> Option<u16> {
        self.0 += 2;
        Some(self.0)
    }
}

/// Ok(printed report) or Err(reason) for exit status 1.
pub fn run(cfg: &Config, from: Side, file: &Path) -> Result<String, String> {
    let body = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| format!("stdin: {e}"))?;
        b
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    let mut session = SdpSession::new(engine_config::sdp_policy(cfg, None), rand::random(), estuary_keys::KeySource::os());
    let offer = session
        .offer(from, &body, &mut PlaceholderPorts(50000))
        .map_err(|e| format!("the gateway would answer {}: {}", e.status(), e.reason))?;
    let to = match from {
        Side::Web => "IMS",
        Side::Ims => "browser",
    };
    let mut report = format!("# offer the gateway sends to the {to} (placeholder ports; keys and ICE credentials are fresh per call)\n");
    for line in offer.lines() {
        report.push_str(&mask_key(line));
        report.push('\n');
    }
    report.push_str("# codec plan: payload types the far side may choose, and what each becomes\n");
    for (i, (codecs, dtmf)) in session.offered_codecs().iter().enumerate() {
        if codecs.is_empty() {
            report.push_str(&format!("m-line {i}: rejected (port 0)\n"));
            continue;
        }
        for c in codecs {
            let how = if c.transcode { "transcode" } else { "passthrough" };
            report.push_str(&format!("m-line {i}: web {} <-> ims {} ({how})\n", c.web, c.ims));
        }
        if let Some(d) = dtmf {
            report.push_str(&format!(
                "m-line {i}: dtmf web {}/{} <-> ims {}/{}\n",
                d.web_pt, d.web_clock, d.ims_pt, d.ims_clock
            ));
        }
    }
    Ok(report)
}

/// `a=crypto:1 SUITE inline:KEY...` with the key replaced by a placeholder.
fn mask_key(line: &str) -> String {
    match (line.starts_with("a=crypto:"), line.find("inline:")) {
        (true, Some(at)) => {
            let rest = &line[at + 7..];
            let end = rest.find(['|', ' ']).unwrap_or(rest.len());
            format!("{}inline:<key>{}", &line[..at], &rest[end..])
        }
        _ => line.to_owned(),
    }
}
