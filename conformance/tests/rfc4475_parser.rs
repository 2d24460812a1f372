//! RFC 4475 torture messages through estuary-sip.
//!
//! Every one of the 49 messages must appear in `data/rfc4475/EXPECTATIONS.tsv`, and the parser
//! must agree with its row: accepted messages parse, validate and round-trip, and the checks the
//! layer above makes (modelled in [`answer_for_accepted`]) give the expected answer; rejected
//! messages fail `Message::parse` or `validate()` with an error whose kind gives the expected
//! answer, and the salvaged response carries it.

mod common;

use std::collections::BTreeSet;

use common::{expectations, manifest, message_bytes, message_files, ParserOutcome};
use estuary_sip::{
    salvage_for_400, salvage_response, ContactValue, Headers, Message, Method, NameAddr,
    ParseError, ParseErrorKind, Request, Scheme,
};

/// Option tags the gateway implements; a Require outside this list gets 420 (RFC 3261 §8.2.2.3).
const SUPPORTED_OPTION_TAGS: &[&str] = &[
    "path", "gruu", "outbound", "timer", "100rel", "replaces", "ice",
];

/// Body types an INVITE may carry to us (RFC 3261 §8.2.3: anything else is 415).
const INVITE_BODY_TYPES: &[&str] = &["application/sdp", "multipart/mixed"];

/// The reason phrase each rejected message must be answered (or dropped) with: proof of which
/// rule caught it.
const REJECT_REASONS: &[(&str, &str)] = &[
    ("badinv01.dat", "Bad Via header"),
    ("clerr.dat", "Content-Length larger than message"),
    ("ncl.dat", "Bad Content-Length header"),
    ("scalar02.dat", "Bad CSeq header"),
    ("scalarlg.dat", "Bad CSeq header"),
    ("quotbal.dat", "Bad To header"),
    ("ltgtruri.dat", "Bad Request-URI"),
    ("lwsruri.dat", "Bad Request-Line"),
    ("lwsstart.dat", "Bad Request-Line"),
    ("trws.dat", "Bad Request-Line"),
    ("escruri.dat", "Bad Request-URI"),
    ("baddate.dat", "Bad Date header"),
    ("regbadct.dat", "Bad Contact header"),
    ("badaspec.dat", "Bad To header"),
    ("baddn.dat", "Bad From header"),
    ("badvers.dat", "Version Not Supported"),
    ("mismatch01.dat", "CSeq method does not match"),
    ("mismatch02.dat", "CSeq method does not match"),
    ("bigcode.dat", "Bad Status-Line"),
    ("badbranch.dat", "Bad Via branch"),
    ("insuf.dat", "Missing From header"),
    ("multi01.dat", "Multiple From headers"),
    ("mcl01.dat", "Conflicting Content-Length headers"),
];

#[allow(clippy::large_enum_variant)] // one per test message; size is irrelevant
enum Run {
    Accepted(Message),
    Rejected { err: ParseError, response: bool },
}

fn run(bytes: &[u8]) -> Run {
    match Message::parse(bytes) {
        Ok(msg) => match msg.validate() {
            Ok(()) => Run::Accepted(msg),
            Err(err) => Run::Rejected {
                response: !msg.is_request(),
                err,
            },
        },
        Err(err) => {
            let first = bytes
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(0);
            let response = bytes
                .get(first..first + 4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
            Run::Rejected { err, response }
        }
    }
}

/// The wire answer for a rejected message: responses are never answered (RFC 3261 §18.1.2),
/// requests get the code their error kind maps to.
fn answer_for_rejected(err: &ParseError, response: bool) -> String {
    match (response, err.kind.status_code()) {
        (true, _) | (false, None) => "drop".to_owned(),
        (false, Some(code)) => code.to_string(),
    }
}

/// The first decisions the B2BUA makes on a message the parser accepted, in RFC 3261 order,
/// built only from estuary-sip accessors: this is what the parser must expose.
fn answer_for_accepted(msg: &Message) -> Result<String, String> {
    let req = match msg {
        Message::Response(r) => {
            // §8.1.3.3: a UAC discards a response with more than one Via (RFC 4475 §3.3.10).
            let vias = r.headers.vias().map_err(|e| e.reason)?;
            return Ok(if vias.len() > 1 { "drop" } else { "handled" }.to_owned());
        }
        Message::Request(r) => r,
    };
    let h = &req.headers;
    // §16.3 step 3 (the B2BUA relays like a proxy would): Max-Forwards 0 stops here.
    if h.max_forwards().map_err(|e| e.reason)? == Some(0) {
        return Ok("483".into());
    }
    // §8.2.2.1: Request-URI scheme.
    if let Err(e) = req.check_uri_scheme() {
        return Ok(e.status_code().map_or("drop".into(), |c| c.to_string()));
    }
    // §10.3 step 3 (registrar front): the To of a REGISTER is the AOR and must be SIP/SIPS.
    if req.method == Method::Register && !h.to().map_err(|e| e.reason)?.uri.is_sip() {
        return Ok("400".into());
    }
    // §8.2.2.3: Require.
    if h.values("Require").iter().any(|t| {
        !SUPPORTED_OPTION_TAGS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(t))
    }) {
        return Ok("420".into());
    }
    if req.method == Method::Invite {
        // §8.2.3: body type.
        if !req.body.is_empty() {
            let media = h
                .content_type()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if !INVITE_BODY_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(media))
            {
                return Ok("415".into());
            }
        }
        // §8.2.5/§13.3.1: the answer must be SDP, which Accept must allow.
        let accept = h.values("Accept");
        if h.contains("Accept") && !accept.iter().any(|a| accepts_sdp(a)) {
            return Ok("406".into());
        }
    }
    Ok("handled".into())
}

fn accepts_sdp(range: &str) -> bool {
    let media = range
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(media.as_str(), "application/sdp" | "application/*" | "*/*")
}

/// Print, reparse, compare: start line, header names/values/order and body survive, and
/// printing is idempotent. `to_bytes` appends a Content-Length when there was none.
fn round_trip(msg: &Message) -> Result<(), String> {
    let bytes = msg.to_bytes();
    let again = Message::parse(&bytes).map_err(|e| format!("reparse failed: {e}"))?;
    match (msg, &again) {
        (Message::Request(a), Message::Request(b)) => {
            if (&a.method, &a.uri, &a.version) != (&b.method, &b.uri, &b.version) {
                return Err("request line changed".into());
            }
        }
        (Message::Response(a), Message::Response(b)) => {
            if (&a.version, a.code, &a.reason) != (&b.version, b.code, &b.reason) {
                return Err("status line changed".into());
            }
        }
        _ => return Err("message kind changed".into()),
    }
    let before: Vec<_> = msg.headers().iter().map(|h| (&h.name, &h.value)).collect();
    let after: Vec<_> = again
        .headers()
        .iter()
        .map(|h| (&h.name, &h.value))
        .collect();
    let appended_length = after.len() == before.len() + 1
        && !msg.headers().contains("Content-Length")
        && again
            .headers()
            .iter()
            .last()
            .is_some_and(|h| h.name == "Content-Length");
    if after.get(..before.len()) != Some(&before[..])
        || (after.len() != before.len() && !appended_length)
    {
        return Err(format!("headers changed:\n{before:?}\n{after:?}"));
    }
    if again.body() != msg.body() {
        return Err("body changed".into());
    }
    if again.to_bytes() != bytes {
        return Err("printing is not idempotent".into());
    }
    again
        .validate()
        .map_err(|e| format!("reparsed message no longer validates: {e}"))
}

/// The single Contact address of a message.
fn one_contact(h: &Headers) -> Result<NameAddr, String> {
    match h.contacts().map_err(|e| e.reason)?.as_slice() {
        [ContactValue::Addr(c)] => Ok(c.clone()),
        other => Err(format!("expected one Contact address, got {other:?}")),
    }
}

/// Message-specific facts from the RFC text, beyond accept/reject.
fn details(file: &str, bytes: &[u8], msg: &Message) -> Result<(), String> {
    let h = msg.headers();
    let req = |m: &Message| -> Result<Request, String> {
        match m {
            Message::Request(r) => Ok(r.clone()),
            Message::Response(_) => Err("expected a request".into()),
        }
    };
    let ok = |cond: bool, what: &str| if cond { Ok(()) } else { Err(what.to_owned()) };
    let e = |e: ParseError| e.reason;
    match file {
        "wsinv.dat" => {
            let vias = h.vias().map_err(e)?;
            ok(vias.len() == 3, "3 Via values")?;
            ok(
                vias[0].host == "192.0.2.2" && vias[0].transport == "UDP",
                "top Via",
            )?;
            ok(vias[0].branch() == Some("390skdjuw"), "top branch")?;
            ok(
                vias[1].branch() == Some("z9hG4bK9ikj8") && vias[2].host == "192.168.255.111",
                "folded Vias",
            )?;
            ok(h.to().map_err(e)?.tag() == Some("1918181833n"), "To tag")?;
            let from = h.from().map_err(e)?;
            ok(
                from.display_name.as_deref() == Some(r#""J Rosenberg \\\"""#),
                "From display",
            )?;
            ok(from.tag() == Some("98asjd8"), "From tag")?;
            ok(
                h.max_forwards().map_err(e)? == Some(68),
                "Max-Forwards 0068",
            )?;
            let cseq = h.cseq().map_err(e)?;
            ok(
                cseq.seq == 9 && cseq.method == Method::Invite,
                "CSeq 0009 INVITE",
            )?;
            ok(
                h.get("NewFangledHeader") == Some("newfangled value continued newfangled value"),
                "unfolding",
            )?;
            ok(
                h.get("UnknownHeaderWithUnusualValue") == Some(";;,,;;,;"),
                "odd value kept",
            )?;
            ok(h.get("Subject") == Some(""), "empty s:")?;
            let c = one_contact(h)?;
            ok(
                c.display_name.as_deref() == Some(r#""Quoted string \"\"""#),
                "Contact display",
            )?;
            ok(
                c.param("newparam") == Some(Some("newvalue"))
                    && c.param("secondparam") == Some(None),
                "params",
            )?;
            ok(c.param("q") == Some(Some("0.33")), "q")?;
            ok(
                h.routes().map_err(e)?[0].uri.param("unknown-no-value") == Some(None),
                "Route",
            )?;
            ok(msg.body().len() == 150, "body")
        }
        "intmeth.dat" => {
            let r = req(msg)?;
            ok(
                r.method == Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into()),
                "method",
            )?;
            ok(
                r.uri.user.as_deref() == Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"),
                "user",
            )?;
            ok(
                r.uri.password.as_deref() == Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"),
                "password",
            )?;
            ok(
                h.to().map_err(e)?.display_name.as_deref()
                    == Some("\"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\""),
                "To",
            )?;
            let from = h.from().map_err(e)?;
            ok(
                from.display_name.as_deref() == Some("token1~` token2'+_ token3*%!.-"),
                "From display",
            )?;
            let p = from.params.first().ok_or("From param")?;
            ok(
                p.name == "fromParam''~+*_!.-%"
                    && p.unquoted_value().as_deref() == Some("работающий"),
                "UTF-8 param",
            )?;
            ok(from.tag() == Some("_token~1'+`*%!-."), "tag")?;
            ok(
                h.call_id().map_err(e)? == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                "Call-ID",
            )?;
            ok(
                h.get("extensionHeader-!.%*+_`'~") == Some("\u{feff}大停電"),
                "UTF-8 value",
            )
        }
        "esc01.dat" => {
            ok(
                req(msg)?.uri.user.as_deref() == Some("sips%3Auser%40example.com"),
                "escaped user kept",
            )?;
            let c = one_contact(h)?;
            ok(c.uri.user.as_deref() == Some("cal%6Cer"), "Contact user")?;
            ok(c.uri.param("%6C%72") == Some(None), "escaped flag param")?;
            ok(
                c.uri.param("n%61me") == Some(Some("v%61lue%25%34%31")),
                "escaped param",
            )?;
            ok(
                h.from().map_err(e)?.uri.user.as_deref() == Some("I%20have%20spaces"),
                "From user",
            )
        }
        "escnull.dat" => {
            ok(
                h.to().map_err(e)?.uri.user.as_deref() == Some("null-%00-null"),
                "To user",
            )?;
            ok(h.contacts().map_err(e)?.len() == 2, "two Contacts")
        }
        "esc02.dat" => {
            ok(
                req(msg)?.method == Method::Other("RE%47IST%45R".into()),
                "method is not REGISTER",
            )?;
            ok(
                h.contacts().map_err(e)?.len() == 2,
                "C%6Fntact is not Contact",
            )?;
            ok(
                h.get("C%6Fntact") == Some("<sip:alias2@host2.example.com>"),
                "unknown header kept",
            )?;
            ok(
                h.top_via().map_err(e)?.branch() == Some("z9hG4bK209%fzsnel234"),
                "branch",
            )?;
            ok(
                h.to().map_err(e)?.display_name.as_deref() == Some("\"%Z%45\""),
                "display",
            )
        }
        "lwsdisp.dat" => ok(
            h.from().map_err(e)?.display_name.as_deref() == Some("caller"),
            "display",
        ),
        "longreq.dat" => {
            ok(h.vias().map_err(e)?.len() == 34, "34 Vias")?;
            let to = h.to().map_err(e)?;
            ok(
                to.uri.port == Some(6000) && to.uri.params.len() == 3,
                "To URI",
            )?;
            ok(
                h.from().map_err(e)?.tag().is_some_and(|t| t.len() > 150),
                "long tag",
            )
        }
        "dblreq.dat" => {
            ok(req(msg)?.method == Method::Register, "first request only")?;
            ok(msg.body().is_empty(), "trailing INVITE discarded")?;
            ok(
                h.call_id().map_err(e)? == "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
                "I: compact",
            )
        }
        "semiuri.dat" => {
            let r = req(msg)?;
            ok(
                r.uri.user.as_deref() == Some("user;par=u%40example.net")
                    && r.uri.params.is_empty(),
                "user",
            )?;
            ok(h.values("Accept").len() == 6, "folded Accept list")
        }
        "transports.dat" => {
            let t: Vec<_> = h
                .vias()
                .map_err(e)?
                .into_iter()
                .map(|v| v.transport)
                .collect();
            ok(t == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"], "transports")?;
            ok(
                h.call_id().map_err(e)? == "transports.kijh4akdnaqjkwendsasfdj",
                "Call-ID trimmed",
            )
        }
        "mpart01.dat" => {
            ok(msg.body().len() == 553, "binary body")?;
            ok(h.top_via().map_err(e)?.rport() == Some(None), "rport flag")
        }
        "unreason.dat" | "noreason.dat" => {
            let Message::Response(r) = msg else {
                return Err("expected a response".into());
            };
            let line_end = bytes
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("no CRLF")?;
            let phrase = bytes
                .get("SIP/2.0 200 ".len()..line_end)
                .unwrap_or_default();
            ok(r.reason.as_bytes() == phrase, "reason phrase byte for byte")?;
            ok(
                msg.to_bytes().get(..line_end + 2) == bytes.get(..line_end + 2),
                "status line printed as received",
            )
        }
        "unkscm.dat" => {
            let r = req(msg)?;
            ok(
                r.uri.scheme == Scheme::Other("nobodyKnowsThisScheme".into()),
                "scheme",
            )?;
            ok(
                r.uri.to_string() == "nobodyKnowsThisScheme:totallyopaquecontent",
                "opaque URI kept",
            )?;
            ok(
                r.check_uri_scheme().map_err(|e| e.kind)
                    == Err(ParseErrorKind::UnsupportedUriScheme),
                "416 kind",
            )
        }
        "novelsc.dat" => ok(
            req(msg)?.uri.scheme == Scheme::Other("soap.beep".into()),
            "scheme",
        ),
        "unksm2.dat" => {
            ok(
                h.to().map_err(e)?.uri.scheme == Scheme::Other("isbn".into()),
                "To",
            )?;
            ok(
                h.from().map_err(e)?.uri.scheme == Scheme::Other("http".into()),
                "From",
            )?;
            let c = one_contact(h)?;
            ok(c.uri.scheme == Scheme::Other("name".into()), "Contact")
        }
        "bext01.dat" => {
            ok(
                h.values("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"],
                "Require",
            )?;
            ok(h.values("Proxy-Require").len() == 2, "Proxy-Require")
        }
        "invut.dat" => ok(
            h.content_type() == Some("application/unknownformat"),
            "Content-Type",
        ),
        "regaut01.dat" => ok(
            h.get("Authorization") == Some("NoOneKnowsThisScheme opaque-data=here"),
            "opaque",
        ),
        "bcast.dat" => ok(
            h.vias()
                .map_err(e)?
                .get(1)
                .is_some_and(|v| v.host == "255.255.255.255"),
            "Via",
        ),
        "zeromf.dat" => ok(h.max_forwards().map_err(e)? == Some(0), "Max-Forwards"),
        "cparam01.dat" => {
            let c = one_contact(h)?;
            ok(
                c.param("unknownparam") == Some(None) && c.uri.params.is_empty(),
                "contact-param",
            )
        }
        "cparam02.dat" => {
            let c = one_contact(h)?;
            ok(
                c.uri.param("unknownparam") == Some(None) && c.params.is_empty(),
                "url-param",
            )
        }
        "regescrt.dat" => {
            let c = one_contact(h)?;
            ok(
                c.uri.headers == [("Route".to_owned(), "%3Csip:sip.example.com%3E".to_owned())],
                "URI header",
            )?;
            ok(
                c.uri.to_string() == "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                "printed back",
            )
        }
        "sdp01.dat" => ok(h.get("Accept") == Some("text/nobodyKnowsThis"), "Accept"),
        "inv2543.dat" => {
            ok(
                !h.contains("Content-Length") && !msg.body().is_empty(),
                "body is the rest of the datagram",
            )?;
            ok(h.top_via().map_err(e)?.branch().is_none(), "no branch")?;
            ok(h.from().map_err(e)?.tag().is_none(), "no From tag")?;
            ok(h.max_forwards().map_err(e)?.is_none(), "no Max-Forwards")
        }
        _ => Ok(()),
    }
}

#[test]
fn every_message_is_in_both_tables() {
    let files: BTreeSet<String> = message_files().unwrap().into_iter().collect();
    let manifest = manifest().unwrap();
    let expectations = expectations().unwrap();
    assert_eq!(files.len(), 49, "RFC 4475 has 49 messages");
    let in_manifest: BTreeSet<String> = manifest.iter().map(|m| m.file.clone()).collect();
    let in_expectations: BTreeSet<String> = expectations.iter().map(|x| x.file.clone()).collect();
    assert_eq!(files, in_manifest, "MANIFEST.tsv and the .dat files differ");
    assert_eq!(
        files, in_expectations,
        "EXPECTATIONS.tsv and the .dat files differ"
    );
    assert_eq!(expectations.len(), 49, "duplicate rows in EXPECTATIONS.tsv");
    for x in &expectations {
        let m = manifest.iter().find(|m| m.file == x.file).unwrap();
        assert_eq!(
            x.class, m.class,
            "{}: class differs from MANIFEST.tsv",
            x.file
        );
        // RFC 4475 §3.1.1: valid messages must be accepted; §3.1.2: invalid ones rejected.
        match m.class.as_str() {
            "valid" | "compat" => assert_eq!(x.parser_outcome, ParserOutcome::Accept, "{}", x.file),
            "invalid" => assert_eq!(x.parser_outcome, ParserOutcome::Reject, "{}", x.file),
            _ => {}
        }
    }
    let rejects: BTreeSet<&str> = expectations
        .iter()
        .filter(|x| x.parser_outcome == ParserOutcome::Reject)
        .map(|x| x.file.as_str())
        .collect();
    let reasons: BTreeSet<&str> = REJECT_REASONS.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        rejects, reasons,
        "REJECT_REASONS must name every rejected message"
    );
}

#[test]
fn every_message_meets_its_expectation() {
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for x in expectations().unwrap() {
        let bytes = message_bytes(&x.file).unwrap();
        let (outcome, answer, note) = match run(&bytes) {
            Run::Accepted(msg) => {
                let answer = answer_for_accepted(&msg).unwrap_or_else(|e| format!("error: {e}"));
                if let Err(e) = round_trip(&msg) {
                    failures.push(format!("{}: round trip: {e}", x.file));
                }
                if let Err(e) = details(&x.file, &bytes, &msg) {
                    failures.push(format!("{}: detail: {e}", x.file));
                }
                (ParserOutcome::Accept, answer, String::new())
            }
            Run::Rejected { err, response } => {
                let answer = answer_for_rejected(&err, response);
                let expected_reason = REJECT_REASONS
                    .iter()
                    .find(|(f, _)| *f == x.file)
                    .map(|(_, r)| *r);
                if expected_reason.is_some_and(|r| r != err.reason) {
                    failures.push(format!(
                        "{}: reason {:?}, expected {expected_reason:?}",
                        x.file, err.reason
                    ));
                }
                check_salvage(&x.file, &bytes, &answer, &err, &mut failures);
                (ParserOutcome::Reject, answer, err.reason)
            }
        };
        if outcome != x.parser_outcome {
            failures.push(format!(
                "{}: parser {:?}, expected {:?} ({note})",
                x.file, outcome, x.parser_outcome
            ));
        }
        if answer != x.expected_response {
            failures.push(format!(
                "{}: answer {answer}, expected {} — {}",
                x.file, x.expected_response, x.why
            ));
        }
        summary.push(format!(
            "{:<16} {:<9} {:?}\t{answer}\t{note}",
            x.file, x.class, outcome
        ));
    }
    eprintln!("{}", summary.join("\n"));
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A rejected request must be answerable from its raw bytes with the expected code and the
/// error's reason, carrying its Via lines; a dropped message must produce nothing.
fn check_salvage(
    file: &str,
    bytes: &[u8],
    answer: &str,
    err: &ParseError,
    failures: &mut Vec<String>,
) {
    let salvaged = salvage_response(bytes);
    match answer.parse::<u16>() {
        Ok(code) => {
            let Some(r) = salvaged else {
                failures.push(format!("{file}: no {code} could be salvaged"));
                return;
            };
            if r.code != code || r.reason != err.reason {
                failures.push(format!("{file}: salvaged {} {:?}", r.code, r.reason));
            }
            if r.headers.count("Via") == 0 || !r.headers.contains("CSeq") {
                failures.push(format!("{file}: salvaged response lacks Via/CSeq"));
            }
            if (code == 400) != salvage_for_400(bytes).is_some() {
                failures.push(format!("{file}: salvage_for_400 disagrees"));
            }
        }
        Err(_) => {
            if salvaged.is_some() || salvage_for_400(bytes).is_some() {
                failures.push(format!("{file}: a dropped message was answered"));
            }
        }
    }
}
