//! SIGHUP: re-read the configuration and apply what can change while calls go on.
//!
//! Every operator key is listed once in [`KEYS`] with whether it applies live or needs a
//! restart. A reload reads the file (and the `--set` overrides again), refuses it whole if it
//! is invalid (the error names the key, the running configuration stays), then applies the
//! changed live keys: the signalling engine gets a new configuration (codec policy, registrar
//! bounds, headers, limits, the next hop), the access checks new origins, trusted peers and
//! per-source limits, the log its new filter. Calls in progress keep what they settled. One
//! log line says what was applied and what needs a restart; keys that need one keep their
//! running values, so the next reload reports them again until the restart.

use std::path::PathBuf;
use std::sync::Arc;

use estuary_config::Config;
use tracing::{error, info, warn};

use crate::ctx::Ctx;
use crate::engine_config::{self, Bound, ResolvedNextHop};
use crate::events::Event;

/// Whether a key's new value can be applied to the running process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    Live,
    Restart,
}

/// One operator key: its name, how it applies, its value (for comparison) and how to copy it
/// from a new configuration into the running one.
pub struct Key {
    pub name: &'static str,
    pub apply: Apply,
    value: fn(&Config) -> String,
    copy: fn(&mut Config, &Config),
}

macro_rules! key {
    ($apply:ident, $name:literal, $($field:ident).+) => {
        Key {
            name: $name,
            apply: Apply::$apply,
            value: |c: &Config| format!("{:?}", c.$($field).+),
            copy: |dst: &mut Config, src: &Config| dst.$($field).+ = src.$($field).+.clone(),
        }
    };
}

/// Every key of etc/estuary.toml (a test holds the two together).
#[rustfmt::skip]
pub static KEYS: &[Key] = &[
    key!(Restart, "web.ws_listen", web.ws_listen),
    key!(Restart, "web.wss_listen", web.wss_listen),
    key!(Restart, "web.tls_cert", web.tls),
    key!(Restart, "web.tls_key", web.tls),
    key!(Restart, "web.advertised_host", web.advertised_host),
    key!(Restart, "web.ws_ping_interval_s", web.ws_ping_interval),
    key!(Live, "web.allowed_origins", web.allowed_origins),
    key!(Live, "web.trusted_proxies", web.trusted_proxies),
    key!(Restart, "ims.listen", ims.listen),
    key!(Live, "ims.next_hop", ims.next_hop),
    key!(Restart, "ims.domain", ims.domain),
    key!(Restart, "ims.advertised_address", ims.advertised_address),
    key!(Restart, "ims.tls_listen", ims.tls.listen),
    key!(Restart, "ims.tls_cert", ims.tls.certificate),
    key!(Restart, "ims.tls_key", ims.tls.certificate),
    key!(Restart, "ims.tls_ca", ims.tls.ca),
    key!(Live, "ims.trusted_peers", ims.trusted_peers),
    key!(Restart, "ims.dns_servers", ims.dns_servers),
    key!(Live, "ims.next_hop_probe_s", ims.next_hop_probe),
    key!(Restart, "sip.t1_ms", sip.t1),
    key!(Restart, "sip.t2_ms", sip.t2),
    key!(Restart, "sip.t4_ms", sip.t4),
    key!(Live, "sip.max_forwards", sip.max_forwards),
    key!(Live, "sip.user_agent", sip.user_agent),
    key!(Live, "registrar.on_ws_close", registrar.on_ws_close),
    key!(Live, "registrar.reconnect_grace_s", registrar.reconnect_grace),
    key!(Live, "registrar.max_expires_s", registrar.max_expires),
    key!(Live, "registrar.min_expires_s", registrar.min_expires),
    key!(Live, "registrar.require_registration", registrar.require_registration),
    key!(Restart, "rx.enabled", rx.enabled),
    key!(Live, "rx.peers", rx.peers),
    key!(Restart, "rx.origin_host", rx.origin_host),
    key!(Restart, "rx.origin_realm", rx.origin_realm),
    key!(Restart, "rx.destination_realm", rx.destination_realm),
    key!(Restart, "rx.destination_host", rx.destination_host),
    key!(Restart, "rx.on_failure", rx.on_failure),
    key!(Restart, "rx.timeout_ms", rx.timeout),
    key!(Restart, "rx.signalling", rx.signalling),
    key!(Restart, "rx.watchdog_s", rx.watchdog),
    key!(Restart, "rx.uplink_filter", rx.uplink_filter),
    key!(Restart, "rx.out_of_credit", rx.out_of_credit),
    key!(Restart, "media.web_address", media.web_address),
    key!(Restart, "media.ims_address", media.ims_address),
    key!(Restart, "media.port_min", media.ports.min),
    key!(Restart, "media.port_max", media.ports.max),
    key!(Live, "media.ims_profile", media.ims_profile),
    key!(Live, "media.ims_srtp_suites", media.ims_srtp_suites),
    key!(Live, "media.ims_rtcp_mux", media.ims_rtcp_mux),
    key!(Live, "media.ptime_ms", media.ptime_ms),
    key!(Live, "media.audio_codecs", media.audio_codecs),
    key!(Live, "media.video_codecs", media.video_codecs),
    key!(Live, "media.telephone_event", media.telephone_event),
    key!(Restart, "media.port_quarantine_s", media.port_quarantine),
    key!(Restart, "media.latch", media.latch),
    key!(Restart, "media.inactivity_timeout_s", media.inactivity_timeout),
    key!(Restart, "media.consent_timeout_s", media.consent_timeout),
    key!(Restart, "media.threads", media.threads),
    key!(Restart, "media.web_port_mode", media.web_port_mode),
    key!(Restart, "transcoder.enabled", transcoder.enabled),
    key!(Restart, "transcoder.threads", transcoder.threads),
    key!(Restart, "transcoder.max_channels", transcoder.max_channels),
    key!(Live, "transcoder.refuse_status", transcoder.refuse_status),
    key!(Restart, "transcoder.video", transcoder.video),
    key!(Restart, "transcoder.video_threads", transcoder.video_threads),
    key!(Live, "transcoder.video_overload", transcoder.video_overload),
    key!(Live, "recording.mode", recording.mode),
    key!(Live, "recording.dir", recording.dir),
    key!(Live, "recording.max_file_mb", recording.max_file_bytes),
    key!(Live, "recording.max_age_days", recording.max_age),
    key!(Restart, "records.dir", records.dir),
    key!(Restart, "admin.listen", admin.listen),
    key!(Live, "admin.drain_timeout_s", admin.drain_timeout),
    key!(Live, "log.level", log.level),
    key!(Restart, "log.format", log.format),
    key!(Restart, "limits.max_message_size", limits.max_message_size),
    key!(Restart, "limits.max_ws_connections", limits.max_ws_connections),
    key!(Restart, "limits.max_tcp_connections", limits.max_tcp_connections),
    key!(Live, "limits.ws_connections_per_ip", limits.ws_connections_per_ip),
    key!(Live, "limits.ws_handshakes_per_ip", limits.ws_handshakes_per_ip),
    key!(Live, "limits.requests_per_second_per_ip", limits.requests_per_second_per_ip),
    key!(Live, "limits.request_burst_per_ip", limits.request_burst_per_ip),
    key!(Live, "limits.registrations_per_ip", limits.registrations_per_ip),
    key!(Restart, "cluster.enabled", cluster.enabled),
    key!(Restart, "cluster.redis", cluster.redis),
    key!(Restart, "cluster.node_id", cluster.node_id),
    key!(Restart, "cluster.sip_front", cluster.sip_front),
];

/// The keys whose values differ between `old` and `new`, split by how they apply.
pub fn diff(old: &Config, new: &Config) -> (Vec<&'static Key>, Vec<&'static Key>) {
    KEYS.iter().filter(|k| (k.value)(old) != (k.value)(new)).partition(|k| k.apply == Apply::Live)
}

/// Where the configuration came from, to read it again.
pub struct Source {
    pub path: Option<PathBuf>,
    pub overrides: Vec<String>,
    /// The built-in defaults (etc/estuary.toml), when there is no file.
    pub builtin: &'static str,
}

impl Source {
    fn load(&self) -> Result<Config, String> {
        match &self.path {
            Some(path) => Config::load(path, &self.overrides).map_err(|e| format!("{}: {e}", path.display())),
            None => Config::from_toml_str_with_overrides(self.builtin, &self.overrides).map_err(|e| format!("built-in defaults: {e}")),
        }
    }
}

/// Sets the log filter (`log.level`); `None` when RUST_LOG decides it.
pub type LogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload needs to rebuild the signalling configuration, and what it changes.
pub struct Reloader {
    pub source: Source,
    /// The configuration in force: the start's, plus every live change applied since.
    pub current: Config,
    pub bound: Bound,
    pub next_hop: ResolvedNextHop,
    pub fingerprint: estuary_sdp::Fingerprint,
    pub transcode_capacity: Option<usize>,
    pub log_level: Option<LogLevel>,
    pub ctx: Arc<Ctx>,
}

impl Reloader {
    /// One SIGHUP.
    pub async fn reload(&mut self) {
        let new = match self.source.load() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        let (live, mut restart) = diff(&self.current, &new);
        let mut applied = Vec::new();
        let mut next = self.current.clone();
        let mut recording = Vec::new();
        for key in live {
            match key.name {
                // Applied together below: the recorder takes its section whole.
                name if name.starts_with("recording.") => {
                    recording.push(key);
                    continue;
                }
                "ims.next_hop" => match self.next_hop_for(&new).await {
                    Ok(hop) => self.next_hop = hop,
                    Err(why) => {
                        warn!(key = key.name, why, "not applied");
                        restart.push(key);
                        continue;
                    }
                },
                // Set after the summary line below, which a quieter filter would hide.
                "log.level" if self.log_level.is_none() => {
                    warn!(key = key.name, "not applied: RUST_LOG sets the log filter");
                    continue;
                }
                _ => {}
            }
            (key.copy)(&mut next, &new);
            applied.push(key.name);
        }
        if applied.contains(&"rx.peers") {
            let _ = self.ctx.events.send(Event::RxPeers(next.rx.peers.clone())).await;
        }
        if !recording.is_empty() {
            match self.ctx.recorder.reconfigure(&new.recording) {
                Ok(()) => {
                    for key in recording {
                        (key.copy)(&mut next, &new);
                        applied.push(key.name);
                    }
                }
                Err(e) => warn!(key = "recording.dir", error = %e, "not applied: recording goes on as it was"),
            }
        }
        if !applied.is_empty() {
            self.ctx.origins.set(&next.web.allowed_origins);
            self.ctx.proxies.set(&next.web.trusted_proxies);
            self.ctx.ims_trust.set(&next.ims.trusted_peers, &self.next_hop.resolved);
            self.ctx.sources.set_limits(&next.limits);
            let signalling = engine_config::b2bua_config(&next, &self.bound, self.next_hop.clone(), self.fingerprint.clone(), self.transcode_capacity);
            let _ = self.ctx.events.send(Event::Reconfigure(Box::new(signalling))).await;
            self.current = next;
        }
        let names = |keys: &[&str]| if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
        let restart: Vec<&str> = restart.iter().map(|k| k.name).collect();
        info!(applied = %names(&applied), needs_restart = %names(&restart), "configuration reloaded");
        if applied.contains(&"log.level") {
            if let Some(Err(e)) = self.log_level.as_ref().map(|set| set(&self.current.log.level)) {
                warn!(key = "log.level", error = %e, "not applied");
            }
        }
    }

    /// The next hop `new` names, resolved; Err when it cannot change without a restart (the
    /// built-in peer, or another transport: TLS identities and listeners are set at start).
    async fn next_hop_for(&self, new: &Config) -> Result<ResolvedNextHop, String> {
        use estuary_config::{NextHop, NextHopLookup};
        if matches!(new.ims.next_hop, NextHop::Builtin) || matches!(self.current.ims.next_hop, NextHop::Builtin) {
            return Err("the built-in peer starts and stops with the process".to_owned());
        }
        let by_dns = |h: &NextHop| matches!(h, NextHop::Uri { lookup, .. } if *lookup != NextHopLookup::Address);
        if by_dns(&new.ims.next_hop) || by_dns(&self.current.ims.next_hop) {
            return Err("a domain next hop is looked up again by a task started with the process".to_owned());
        }
        let hop = engine_config::resolve_next_hop(new).await.map_err(|e| e.to_string())?;
        if hop.transport != self.next_hop.transport {
            return Err(format!("the transport changes ({:?} to {:?})", self.next_hop.transport, hop.transport));
        }
        Ok(hop)
    }

    /// `admin.drain_timeout_s` in force.
    pub fn drain_timeout(&self) -> std::time::Duration {
        self.current.admin.drain_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `section.key` for every key of the shipped file.
    fn shipped_keys() -> Vec<String> {
        let text = include_str!("../../../etc/estuary.toml");
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if !line.starts_with('#') {
                if let Some((key, _)) = line.split_once('=') {
                    keys.push(format!("{section}.{}", key.trim()));
                }
            }
        }
        keys
    }

    #[test]
    fn every_shipped_key_is_classified_once() {
        let shipped = shipped_keys();
        let listed: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        for key in &shipped {
            assert_eq!(listed.iter().filter(|k| **k == key.as_str()).count(), 1, "{key}: listed once in reload::KEYS");
        }
        assert_eq!(listed.len(), shipped.len(), "reload::KEYS has keys the shipped file lacks");
    }

    #[test]
    fn a_diff_names_the_changed_keys_by_how_they_apply() {
        let old = Config::default();
        let (live, restart) = diff(&old, &old.clone());
        assert!(live.is_empty() && restart.is_empty());
        let new = Config::from_toml_str_with_overrides(
            "",
            &["media.audio_codecs=PCMA/8000".into(), "media.web_address=127.0.0.2".into(), "limits.registrations_per_ip=3".into()],
        )
        .unwrap();
        let (live, restart) = diff(&old, &new);
        let names = |keys: Vec<&Key>| keys.into_iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(names(live), ["media.audio_codecs", "limits.registrations_per_ip"]);
        assert_eq!(names(restart), ["media.web_address"]);
        // Copying the live keys leaves the others at their running values.
        let mut next = old.clone();
        for k in KEYS.iter().filter(|k| k.apply == Apply::Live) {
            (k.copy)(&mut next, &new);
        }
        assert_eq!(next.media.audio_codecs, new.media.audio_codecs);
        assert_eq!(next.media.web_address, old.media.web_address);
    }

}
