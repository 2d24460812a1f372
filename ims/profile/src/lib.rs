//! The IMS SIP profile of a P-CSCF toward its UEs (3GPP TS 24.229), as pure functions.
//!
//! The gateway plays the P-CSCF's part for browsers: it removes the core's private headers
//! before a message reaches a browser, refuses to carry identities a browser asserts about
//! itself, and asserts the registered identity instead. Nothing here knows about sockets,
//! dialogs or WebRTC; the B2BUA calls these rules where it builds each leg's messages.

/// Headers the core uses among its own nodes; TS 24.229 §5.2.6.3 and §5.2.7 have the P-CSCF
/// remove them from messages toward the UE (charging correlation, network topology, profile
/// keys).
const CORE_PRIVATE: &[&str] = &[
    "p-charging-vector",
    "p-charging-function-addresses",
    "p-visited-network-id",
    "p-served-user",
    "p-profile-key",
    "p-access-network-info",
];

/// Headers a UE must not set toward the core: identities are asserted by the P-CSCF from the
/// registration (TS 24.229 §5.2.6.3.3), and core-private headers are not the UE's to write.
const ASSERTED_BY_CORE: &[&str] = &["p-asserted-identity"];

/// Whether a header received from the core must be removed before the browser sees it.
/// `name` is the lower-case long form.
pub fn is_core_private(name: &str) -> bool {
    CORE_PRIVATE.contains(&name)
}

/// Whether a header received from a browser must be removed before the core sees it.
/// `name` is the lower-case long form.
pub fn is_untrusted_from_ue(name: &str) -> bool {
    ASSERTED_BY_CORE.contains(&name) || CORE_PRIVATE.contains(&name)
}

/// The P-Asserted-Identity value for a request from a UE registered as `aor` (RFC 3325 §9.1).
pub fn asserted_identity(aor: &str) -> String {
    let aor = aor.trim();
    if aor.starts_with('<') {
        aor.to_owned()
    } else {
        format!("<{aor}>")
    }
}

/// The P-Charging-Vector a P-CSCF puts on an initial request from a UE (TS 24.229
/// §5.2.6.3.3, RFC 7315 §4.6): the IMS Charging Identifier that ties every charging record of
/// the session together, and the address of the node that generated it.
pub fn charging_vector(icid: &str, generated_at: std::net::IpAddr) -> String {
    match generated_at {
        std::net::IpAddr::V4(a) => format!("icid-value={icid};icid-generated-at={a}"),
        std::net::IpAddr::V6(a) => format!("icid-value={icid};icid-generated-at=[{a}]"),
    }
}

/// The icid-value of a P-Charging-Vector header value (a token or a quoted string).
pub fn icid_of(value: &str) -> Option<String> {
    value.split(';').find_map(|p| {
        let (name, v) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("icid-value").then(|| v.trim().trim_matches('"').to_owned()).filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charging_headers_never_reach_the_ue_and_ues_cannot_assert_identity() {
        assert!(is_core_private("p-charging-vector"));
        assert!(!is_core_private("p-asserted-identity"), "the callee's asserted identity may reach the UE");
        assert!(is_untrusted_from_ue("p-asserted-identity"));
        assert!(is_untrusted_from_ue("p-charging-function-addresses"));
        assert!(!is_untrusted_from_ue("p-preferred-identity"), "RFC 3325: the UE may state a preference");
    }

    #[test]
    fn charging_vectors_carry_the_icid_and_where_it_was_made() {
        let v = charging_vector("k2j3h4g5f6d7s8a9", "192.0.2.7".parse().unwrap());
        assert_eq!(v, "icid-value=k2j3h4g5f6d7s8a9;icid-generated-at=192.0.2.7");
        assert_eq!(charging_vector("x", "2001:db8::1".parse().unwrap()), "icid-value=x;icid-generated-at=[2001:db8::1]");
        assert_eq!(icid_of(&v).as_deref(), Some("k2j3h4g5f6d7s8a9"));
        // RFC 7315 §4.6's example form, quoted, with other parameters first.
        assert_eq!(icid_of("orig-ioi=home1.net; ICID-Value=\"AyretyU0dm+6O2IrT5tAFrbHLso=023551024\"").as_deref(), Some("AyretyU0dm+6O2IrT5tAFrbHLso=023551024"));
        assert_eq!(icid_of("orig-ioi=home1.net"), None);
    }

    #[test]
    fn asserted_identity_is_a_name_addr() {
        assert_eq!(asserted_identity("sip:alice@ims.test"), "<sip:alice@ims.test>");
        assert_eq!(asserted_identity("<tel:+15551234>"), "<tel:+15551234>");
    }
}
