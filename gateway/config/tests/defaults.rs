//! etc/estuary.toml is the operator's reference: it must list every key with exactly the
//! built-in default, or the documentation lies.

use estuary_config::Config;

const FILE: &str = include_str!("../../../etc/estuary.toml");

#[test]
fn the_documented_file_equals_the_built_in_defaults() {
    assert_eq!(Config::from_toml_str(FILE).unwrap(), Config::default());
}

#[test]
fn the_documented_file_lists_every_key() {
    // Every `key = value` line, as section.key.
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in FILE.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            keys.push(format!("{section}.{}", key.trim()));
        }
    }
    // Removing any one key must still parse (it is optional) ...
    for key in &keys {
        let (sec, k) = key.split_once('.').unwrap();
        let trimmed: String = FILE
            .lines()
            .scan(String::new(), |cur, l| {
                if let Some(n) = l.trim().strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                    *cur = n.to_owned();
                }
                let drop =
                    cur == sec && l.trim().split_once('=').is_some_and(|(a, _)| a.trim() == k);
                Some(if drop {
                    String::new()
                } else {
                    format!("{l}\n")
                })
            })
            .collect();
        assert_eq!(
            Config::from_toml_str(&trimmed).unwrap(),
            Config::default(),
            "without {key}"
        );
    }
    // ... and the file covers every key the parser knows: an unknown one is refused, so a
    // known key must be in this list for its `--set` to be documented.
    for required in [
        "web.ws_listen",
        "web.wss_listen",
        "web.tls_cert",
        "web.tls_key",
        "web.advertised_host",
        "web.ws_ping_interval_s",
        "web.allowed_origins",
        "web.trusted_proxies",
        "ims.listen",
        "ims.next_hop",
        "ims.domain",
        "ims.advertised_address",
        "ims.tls_listen",
        "ims.tls_cert",
        "ims.tls_key",
        "ims.tls_ca",
        "ims.trusted_peers",
        "ims.dns_servers",
        "ims.next_hop_probe_s",
        "sip.t1_ms",
        "sip.t2_ms",
        "sip.t4_ms",
        "sip.max_forwards",
        "sip.user_agent",
        "registrar.on_ws_close",
        "registrar.reconnect_grace_s",
        "registrar.max_expires_s",
        "registrar.min_expires_s",
        "registrar.require_registration",
        "rx.enabled",
        "rx.peers",
        "rx.origin_host",
        "rx.origin_realm",
        "rx.destination_realm",
        "rx.destination_host",
        "rx.on_failure",
        "rx.timeout_ms",
        "rx.signalling",
        "rx.watchdog_s",
        "rx.uplink_filter",
        "rx.out_of_credit",
        "media.web_address",
        "media.ims_address",
        "media.port_min",
        "media.port_max",
        "media.ims_profile",
        "media.ims_srtp_suites",
        "media.ims_rtcp_mux",
        "media.ptime_ms",
        "media.audio_codecs",
        "media.video_codecs",
        "media.telephone_event",
        "media.port_quarantine_s",
        "media.latch",
        "media.inactivity_timeout_s",
        "media.consent_timeout_s",
        "media.threads",
        "media.web_port_mode",
        "transcoder.enabled",
        "transcoder.threads",
        "transcoder.max_channels",
        "transcoder.refuse_status",
        "transcoder.video",
        "transcoder.video_threads",
        "transcoder.video_overload",
        "recording.mode",
        "recording.dir",
        "recording.max_file_mb",
        "recording.max_age_days",
        "records.dir",
        "admin.listen",
        "admin.drain_timeout_s",
        "log.level",
        "log.format",
        "limits.max_message_size",
        "limits.max_ws_connections",
        "limits.max_tcp_connections",
        "limits.ws_connections_per_ip",
        "limits.ws_handshakes_per_ip",
        "limits.requests_per_second_per_ip",
        "limits.request_burst_per_ip",
        "limits.registrations_per_ip",
        "cluster.enabled",
        "cluster.redis",
        "cluster.node_id",
        "cluster.sip_front",
    ] {
        assert!(
            keys.iter().any(|k| k == required),
            "etc/estuary.toml lacks {required}"
        );
    }
    assert_eq!(
        keys.len(),
        86,
        "a key was added: list it above and in etc/estuary.toml"
    );
}

#[test]
fn every_documented_key_has_a_comment() {
    let lines: Vec<&str> = FILE.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        if !l.is_empty() && !l.starts_with('#') && !l.starts_with('[') {
            // The key's own comment, or its pair's (port_min/port_max share one).
            let commented = lines[..i]
                .iter()
                .rev()
                .take(2)
                .any(|p| p.trim().starts_with('#'));
            assert!(commented, "no comment above `{l}`");
        }
    }
}
