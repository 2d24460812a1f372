//! Byte-exact round trips of the messages the gateway relays every day: what a browser (JsSIP)
//! and an IMS core send must come out of `Message::parse` + `to_bytes` unchanged, so the
//! B2BUA only changes what it means to change.

use estuary_sip::{ContactValue, Message, Method};

/// Parse, print, and require the exact input bytes back.
fn assert_byte_exact(raw: &[u8]) -> Message {
    let msg = Message::parse(raw).unwrap_or_else(|e| panic!("did not parse: {e}"));
    msg.validate()
        .unwrap_or_else(|e| panic!("did not validate: {e}"));
    let out = msg.to_bytes();
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(raw));
    assert_eq!(out, raw);
    msg
}

#[test]
fn jssip_register_round_trips_byte_exactly() {
    let raw = concat!(
        "REGISTER sip:ims.example.net SIP/2.0\r\n",
        "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK8712341\r\n",
        "Max-Forwards: 69\r\n",
        "To: <sip:alice@ims.example.net>\r\n",
        "From: <sip:alice@ims.example.net>;tag=0p6kqj5dfo\r\n",
        "Call-ID: 5mfh9jvtq2o3ldr8b2u6\r\n",
        "CSeq: 1 REGISTER\r\n",
        "Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;",
        "+sip.instance=\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\";expires=600\r\n",
        "Expires: 600\r\n",
        "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n",
        "Supported: path,gruu,outbound\r\n",
        "User-Agent: JsSIP 3.10.1\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    );
    let msg = assert_byte_exact(raw.as_bytes());
    let h = msg.headers();
    let [ContactValue::Addr(c)] = &h.contacts().unwrap()[..] else {
        panic!("one Contact")
    };
    assert_eq!(c.uri.transport(), Some("ws"));
    assert_eq!(c.param("reg-id"), Some(Some("1")));
    assert_eq!(c.param("+sip.ice"), Some(None));
    assert_eq!(c.param("expires"), Some(Some("600")));
    let instance = c.params.iter().find(|p| p.name == "+sip.instance").unwrap();
    assert_eq!(
        instance.value.as_deref(),
        Some("\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\"")
    );
    assert_eq!(
        instance.unquoted_value().as_deref(),
        Some("<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>")
    );
    // The typed value prints back exactly too, so a rewritten Contact keeps +sip.instance.
    assert_eq!(c.to_string(), h.get("Contact").unwrap());
    assert_eq!(h.values("Supported"), ["path", "gruu", "outbound"]);
    assert_eq!(h.expires().unwrap(), Some(600));
}

#[test]
fn compact_form_message_round_trips_and_reads_through_long_names() {
    let raw = concat!(
        "INVITE sip:bob@ims.example.net SIP/2.0\r\n",
        "v: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1q2w3e\r\n",
        "Max-Forwards: 70\r\n",
        "t: <sip:bob@ims.example.net>\r\n",
        "f: \"Alice\" <sip:alice@ims.example.net>;tag=9fxced76sl\r\n",
        "i: 3848276298220188511@df7jal23ls0d.invalid\r\n",
        "CSeq: 4711 INVITE\r\n",
        "m: <sip:abc@df7jal23ls0d.invalid;transport=ws;ob>\r\n",
        "k: timer,ice,replaces,outbound\r\n",
        "x: 90;refresher=uac\r\n",
        "c: application/sdp\r\n",
        "l: 10\r\n",
        "\r\n",
        "v=0\r\ns=-\r\n",
    );
    let msg = assert_byte_exact(raw.as_bytes());
    let h = msg.headers();
    assert_eq!(h.top_via().unwrap().transport, "WSS");
    assert_eq!(
        h.call_id().unwrap(),
        "3848276298220188511@df7jal23ls0d.invalid"
    );
    assert_eq!(h.from().unwrap().tag(), Some("9fxced76sl"));
    assert_eq!(h.to().unwrap().tag(), None);
    assert_eq!(h.content_length().unwrap(), Some(10));
    assert_eq!(h.content_type(), Some("application/sdp"));
    assert_eq!(h.get("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(h.values("Supported").len(), 4);
    assert_eq!(h.contacts().unwrap().len(), 1);
    // Compact Content-Length is rewritten in place, keeping its compact name.
    let mut changed = msg.clone();
    if let Message::Request(r) = &mut changed {
        r.body = b"v=0\r\n".to_vec();
    }
    let text = String::from_utf8(changed.to_bytes()).unwrap();
    assert!(text.contains("\r\nl: 5\r\n\r\nv=0\r\n"), "{text}");
    assert!(!text.contains("Content-Length"));
}

#[test]
fn reason_phrases_are_kept_exactly() {
    let raw = concat!(
        "SIP/2.0 480 Temporarily Unavailable\r\n",
        "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1q2w3e\r\n",
        "To: <sip:bob@ims.example.net>;tag=as6b1a7c\r\n",
        "From: \"Alice\" <sip:alice@ims.example.net>;tag=9fxced76sl\r\n",
        "Call-ID: 3848276298220188511@df7jal23ls0d.invalid\r\n",
        "CSeq: 4711 INVITE\r\n",
        "Reason: Q.850;cause=18;text=\"No user responding\"\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    );
    let Message::Response(r) = assert_byte_exact(raw.as_bytes()) else {
        panic!("a response")
    };
    assert_eq!(
        (r.code, r.reason.as_str()),
        (480, "Temporarily Unavailable")
    );
    for phrase in [
        "Temporarily Unavailable",
        "",
        "Ringing   twice",
        "Nicht verfügbar",
        "OK",
    ] {
        let raw = format!("SIP/2.0 480 {phrase}\r\nContent-Length: 0\r\n\r\n");
        let Ok(Message::Response(r)) = Message::parse(raw.as_bytes()) else {
            panic!("{phrase}")
        };
        assert_eq!(r.reason, phrase);
        assert_eq!(r.to_bytes(), raw.as_bytes());
    }
}

#[test]
fn unknown_headers_keep_their_order_names_and_values() {
    let raw = concat!(
        "SIP/2.0 200 OK\r\n",
        "Via: SIP/2.0/UDP gw.example.net:5060;branch=z9hG4bKnashds8;received=192.0.2.4\r\n",
        "Record-Route: <sip:pcscf.ims.example.net;lr>\r\n",
        "X-Zeta: 1\r\n",
        "P-Asserted-Identity: <sip:+15551234567@ims.example.net;user=phone>\r\n",
        "x-alpha: two words ,  and commas\r\n",
        "To: <sip:bob@ims.example.net>;tag=as6b1a7c\r\n",
        "X-Zeta: 2\r\n",
        "From: <sip:alice@ims.example.net>;tag=9fxced76sl\r\n",
        "Call-ID: a84b4c76e66710\r\n",
        "CSeq: 314159 INVITE\r\n",
        "Contact: <sip:bob@192.0.2.4>\r\n",
        "P-Charging-Vector: icid-value=\"AyretyU0dm+6O2IrT5tAFrbHLso=\";orig-ioi=ims.example.net\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    );
    let msg = assert_byte_exact(raw.as_bytes());
    let names: Vec<&str> = msg.headers().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Via",
            "Record-Route",
            "X-Zeta",
            "P-Asserted-Identity",
            "x-alpha",
            "To",
            "X-Zeta",
            "From",
            "Call-ID",
            "CSeq",
            "Contact",
            "P-Charging-Vector",
            "Content-Length",
        ]
    );
    assert_eq!(
        msg.headers().get_all("x-zeta").collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(
        msg.headers().get("X-ALPHA"),
        Some("two words ,  and commas")
    );
    assert_eq!(
        msg.headers().record_routes().unwrap()[0].uri.param("lr"),
        Some(None)
    );
}

#[test]
fn request_with_sdp_body_and_ipv6_round_trips() {
    let body = "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let raw = format!(
        "INVITE sip:+15551234567@[2001:db8::1]:5060;user=phone SIP/2.0\r\n\
         Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK74bf9;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@ims.example.net>;tag=9fxced76sl\r\n\
         To: <tel:+15551234567>\r\n\
         Call-ID: 3848276298220188511@2001:db8::9\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let Message::Request(r) = assert_byte_exact(raw.as_bytes()) else {
        panic!("a request")
    };
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.host, "[2001:db8::1]");
    assert_eq!(r.uri.port, Some(5060));
    assert_eq!(r.uri.param("user"), Some(Some("phone")));
    assert_eq!(r.headers.top_via().unwrap().host, "[2001:db8::9]");
    assert_eq!(
        r.headers.to().unwrap().uri.user.as_deref(),
        Some("+15551234567")
    );
}
