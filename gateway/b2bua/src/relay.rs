//! Which headers cross from one leg to the other. This is where topology hiding lives.
//!
//! A B2BUA rebuilds every hop-by-hop and dialog header (Via, Route, Record-Route, Contact,
//! Call-ID, CSeq, From/To tags, Max-Forwards) for each leg, so addresses learned on one side
//! cannot leak to the other through them. What remains are end-to-end headers, copied in
//! order, minus the ones the IMS profile keeps on one side (see `estuary_ims_profile`).

use estuary_sip::Headers;

use crate::io::Side;

/// Headers never copied between legs: the B2BUA writes its own for each leg.
const REBUILT: &[&str] = &[
    "via",
    "route",
    "record-route",
    "contact",
    "call-id",
    "cseq",
    "from",
    "to",
    "max-forwards",
    "content-length",
    "rack",
    // RFC 3327 / RFC 3608: the route sets of registrations belong to the IMS leg only.
    "path",
    "service-route",
    // RFC 3329 security agreement is per hop (the P-CSCF consumes it).
    "security-client",
    "security-server",
    "security-verify",
    // Response hints about the previous hop's transport.
    "server",
    "user-agent",
];

/// Copy the end-to-end headers of a message received on `from` into one being built for the
/// other leg, keeping their order and their exact text.
pub fn copy_end_to_end(src: &Headers, dst: &mut Headers, from: Side) {
    for h in src.iter() {
        let name = canonical(&h.name);
        if REBUILT.contains(&name.as_str()) {
            continue;
        }
        let dropped = match from {
            Side::Ims => estuary_ims_profile::is_core_private(&name),
            Side::Web => estuary_ims_profile::is_untrusted_from_ue(&name),
        };
        if !dropped {
            dst.push(&h.name, &h.value);
        }
    }
}

/// Lower-case long form of a header name (compact forms expanded, RFC 3261 §7.3.3).
pub fn canonical(name: &str) -> String {
    estuary_sip::canonical_name(name).to_ascii_lowercase()
}
