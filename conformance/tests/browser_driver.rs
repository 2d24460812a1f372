//! The headless-browser driver itself ([`estuary_conformance::browser`]), proven against a
//! real Chromium and a real Firefox: offers carry what WebRTC requires, codec restriction works,
//! two peers complete an offer/answer (and, in Firefox, exchange audio and video), refusals
//! come back with the browser's own words, and the page commands answer the same in both.
//!
//! Needs node >= 20, npm (first run), /usr/bin/chromium and /usr/bin/firefox-esr; a missing one
//! fails the tests with the reason (`make deps` installs them). One Chromium and one Firefox
//! serve the whole file except `own_browser_starts_and_leaves_nothing_running` and
//! `own_firefox_starts_and_leaves_nothing_running`, which prove the cleanup.
//!
//! `ESTUARY_CAPTURE_SDP=1 cargo test -p estuary-conformance --test browser_driver -- capture`
//! rewrites conformance/sdp/chromium/*.offer.sdp from the running Chromium.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use estuary_conformance::browser::{live_processes_with, Browser, BrowserKind};
use estuary_conformance::ws_client::m_section;
use serde_json::{json, Value};

/// The file's shared Chromium. Its driver ends when this test process exits (stdin closes).
fn browser() -> MutexGuard<'static, Browser> {
    static B: OnceLock<Mutex<Browser>> = OnceLock::new();
    shared(&B, BrowserKind::Chromium)
}

/// The file's shared Firefox, like [`browser`].
fn firefox() -> MutexGuard<'static, Browser> {
    static B: OnceLock<Mutex<Browser>> = OnceLock::new();
    shared(&B, BrowserKind::Firefox)
}

/// The browser of `kind` in `cell`, started on first use (failing loudly when it is missing).
fn shared(cell: &'static OnceLock<Mutex<Browser>>, kind: BrowserKind) -> MutexGuard<'static, Browser> {
    cell.get_or_init(|| {
        if let Err(why) = Browser::available_kind(kind) {
            panic!("headless {kind} unavailable: {why}");
        }
        let b = Browser::start_kind(kind);
        assert_eq!(b.kind(), kind);
        eprintln!(
            "{kind} {} up in {:?}, network namespace: {}",
            b.version(),
            b.startup_time(),
            b.netns()
        );
        Mutex::new(b)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// Sets an answer that is not SDP on a fresh offer of `pc`: the browser's refusal, after
/// checking that it left the driver and the connection usable.
fn refuse_garbage_answer(b: &mut Browser, pc: &str) -> String {
    b.new_pc(pc);
    b.offer(pc, &["audio"], None).expect("offer");
    let err = b
        .remote_answer(pc, "this is not SDP")
        .expect_err("garbage refused");
    let reply = b.request(json!({"cmd": "ping"}));
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let stats = b.stats(pc).expect("stats after a refusal");
    assert_eq!(
        stats["signalingState"],
        json!("have-local-offer"),
        "{stats}"
    );
    b.close(pc);
    err
}

/// Waits (up to `within`) until no process carries `marker` any more.
fn assert_gone(marker: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left = live_processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} processes left running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_webrtc_offer(sdp: &str) {
    assert!(sdp.starts_with("v=0\r\n"), "{sdp}");
    assert!(sdp.ends_with("\r\n"), "CRLF line endings: {sdp:?}");
    for needle in [
        "a=fingerprint:sha-256 ",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=setup:actpass",
    ] {
        assert!(sdp.contains(needle), "offer lacks {needle}:\n{sdp}");
    }
}

/// Every candidate is on loopback when the browser runs in its private namespace.
fn assert_loopback_candidates(b: &Browser, sdp: &str) {
    let candidates: Vec<&str> = sdp
        .split("\r\n")
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(
        !candidates.is_empty(),
        "ICE gathering put no candidate in:\n{sdp}"
    );
    if b.netns().starts_with("private") {
        for c in &candidates {
            assert!(
                c.contains(" 127.0.0.1 "),
                "non-loopback candidate {c:?} in a private namespace"
            );
        }
    }
}

#[test]
fn audio_offer_carries_dtls_ice_and_opus() {
    let mut b = browser();
    b.new_pc("audio-offer");
    let sdp = b
        .offer("audio-offer", &["audio"], None)
        .expect("Chromium creates an audio offer");
    b.close("audio-offer");
    assert_webrtc_offer(&sdp);
    assert_loopback_candidates(&b, &sdp);
    let audio = m_section(&sdp, "audio");
    assert!(
        audio[0].starts_with("m=audio ") && audio[0].contains(" UDP/TLS/RTP/SAVPF "),
        "{sdp}"
    );
    assert!(audio.iter().any(|l| l.ends_with(" opus/48000/2")), "{sdp}");
    assert!(sdp.contains("a=rtcp-mux\r\n"), "{sdp}");
}

#[test]
fn audio_codecs_restricted_to_opus() {
    let mut b = browser();
    b.new_pc("opus-only");
    let sdp = b
        .offer("opus-only", &["audio"], Some(&["opus"]))
        .expect("Chromium creates an opus-only offer");
    b.close("opus-only");
    assert_webrtc_offer(&sdp);
    let audio = m_section(&sdp, "audio");
    let rtpmaps: Vec<&str> = audio
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=rtpmap:"))
        .collect();
    eprintln!("opus-only offer: {}\n  {}", audio[0], rtpmaps.join("\n  "));
    assert!(
        rtpmaps.iter().any(|l| l.ends_with(" opus/48000/2")),
        "{sdp}"
    );
    for absent in ["PCMU/", "PCMA/", "G722/"] {
        assert!(
            !audio.iter().any(|l| l.contains(absent)),
            "{absent} offered despite the restriction:\n{sdp}"
        );
    }
    // The m-line lists exactly the payload types that have an rtpmap.
    let pts: Vec<&str> = audio[0].split(' ').skip(3).collect();
    assert_eq!(pts.len(), rtpmaps.len(), "{sdp}");

    // A codec Chromium lacks is refused as an error reply; the driver carries on.
    b.new_pc("bogus-codec");
    let err = b
        .offer("bogus-codec", &["audio"], Some(&["NOPE"]))
        .expect_err("no such codec");
    assert!(err.contains("NOPE"), "{err}");
    b.close("bogus-codec");
}

#[test]
fn two_chromium_peers_complete_offer_answer() {
    let mut b = browser();
    b.new_pc("caller");
    b.new_pc("callee");
    let offer = b
        .offer("caller", &["audio", "video", "data"], None)
        .expect("offer");
    let answer = b
        .remote_offer("callee", &offer)
        .expect("Chromium answers Chromium's offer");
    assert!(answer.contains("a=fingerprint:sha-256 "), "{answer}");
    assert!(
        answer.contains("a=setup:active"),
        "Chromium answers actpass with active:\n{answer}"
    );
    for kind in ["audio", "video", "application"] {
        assert!(
            !m_section(&answer, kind).is_empty(),
            "answer lacks m={kind}:\n{answer}"
        );
    }
    b.remote_answer("caller", &answer)
        .expect("caller accepts the answer");
    let stats = b.stats("caller").expect("stats");
    assert_eq!(stats["signalingState"], json!("stable"), "{stats}");
    b.close("caller");
    b.close("callee");
}

#[test]
fn garbage_answer_is_refused_verbatim() {
    let err = refuse_garbage_answer(&mut browser(), "garbage");
    eprintln!("Chromium on a garbage answer: {err}");
    assert!(err.contains("setRemoteDescription"), "{err}");
    assert!(err.contains("Failed to parse SessionDescription"), "{err}");
}

#[test]
fn ims_style_offer_without_fingerprint_is_refused() {
    let ims_offer = "v=0\r\n\
        o=ims-core 4711 4711 IN IP4 192.0.2.10\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";
    let mut b = browser();
    b.new_pc("ims-offer");
    let err = b
        .remote_offer("ims-offer", ims_offer)
        .expect_err("Chromium refuses RTP/AVP without DTLS");
    eprintln!("Chromium on an IMS-style RTP/AVP offer: {err}");
    assert!(err.contains("setRemoteDescription"), "{err}");
    assert!(err.to_lowercase().contains("fingerprint"), "{err}");
    b.close("ims-offer");
}

/// The offers Chromium makes, with the fake devices' tracks as a calling web app would send
/// them; written to conformance/sdp/chromium/ with ESTUARY_CAPTURE_SDP=1.
#[test]
fn capture_chromium_offers() {
    let capture = std::env::var_os("ESTUARY_CAPTURE_SDP").is_some_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdp/chromium");
    let mut b = browser();
    for (file, media) in [
        ("audio", &["audio"][..]),
        ("audio-video", &["audio", "video"][..]),
        ("audio-video-data", &["audio", "video", "data"][..]),
    ] {
        let pc = format!("capture-{file}");
        b.new_pc(&pc);
        let sdp = b
            .offer_with_fake_media(&pc, media)
            .expect("offer with fake media");
        b.close(&pc);
        assert_webrtc_offer(&sdp);
        assert_loopback_candidates(&b, &sdp);
        let kinds: Vec<&str> = sdp
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("m="))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let want: Vec<&str> = media
            .iter()
            .map(|m| if *m == "data" { "application" } else { m })
            .collect();
        assert_eq!(kinds, want, "{sdp}");
        if capture {
            std::fs::create_dir_all(&dir).expect("create sdp/chromium");
            let path = dir.join(format!("{file}.offer.sdp"));
            std::fs::write(&path, sdp.as_bytes()).expect("write the captured offer");
            eprintln!("captured {} ({} bytes)", path.display(), sdp.len());
        }
    }
}

/// A browser of its own: it starts quickly, and dropping it leaves no Chromium process and no
/// profile behind.
#[test]
fn own_browser_starts_and_leaves_nothing_running() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium unavailable: {why}");
    }
    let t = Instant::now();
    let mut b = Browser::start();
    let up = t.elapsed();
    eprintln!("own Chromium {} up in {up:?} ({})", b.version(), b.netns());
    assert!(
        up < Duration::from_secs(30),
        "Chromium took {up:?} to start"
    );
    b.new_pc("x");
    b.offer("x", &["audio"], None).expect("offer");

    // Calls are bounded: one that overruns is a driver failure (a panic in the plain
    // methods, never a refusal), and its late reply is skipped by the next call.
    b.set_timeout(Duration::from_millis(1));
    let overrun = b.try_request(json!({"cmd": "offer", "pc": "x", "media": ["video"]}));
    let msg = overrun.expect_err("a 1 ms limit is overrun");
    assert!(msg.contains("no reply within the time limit"), "{msg}");
    b.set_timeout(Duration::from_secs(20));
    let stats = b.stats("x").expect("stats after an overrun");
    assert_eq!(
        stats["signalingState"],
        json!("have-local-offer"),
        "{stats}"
    );

    let profile = b.profile_dir().to_path_buf();
    let marker = profile.to_str().expect("utf-8 profile path").to_string();
    assert!(
        !marker.is_empty() && profile.is_dir(),
        "profile dir {profile:?}"
    );
    assert!(
        !live_processes_with(&marker).is_empty(),
        "no Chromium process found with {marker}"
    );

    let t = Instant::now();
    drop(b);
    eprintln!("own Chromium shut down in {:?}", t.elapsed());
    assert_gone(&marker, Duration::from_secs(3), "Chromium");
    assert!(!profile.exists(), "profile {profile:?} left behind");
}

// ---- Firefox (Debian's firefox-esr through puppeteer-core over WebDriver BiDi) ----

/// Every candidate is on loopback (127.0.0.1, or ::1: Firefox gathers IPv6 loopback too), and
/// there is an IPv4 one.
fn assert_loopback_only(sdp: &str) {
    let candidates: Vec<&str> = sdp
        .split("\r\n")
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(
        candidates.iter().any(|c| c.contains(" 127.0.0.1 ")),
        "no 127.0.0.1 candidate in:\n{sdp}"
    );
    for c in &candidates {
        assert!(
            c.contains(" 127.0.0.1 ") || c.contains(" ::1 "),
            "non-loopback candidate {c:?} in a loopback-only namespace"
        );
    }
}

/// The rtpmap lines of an m-section.
fn rtpmaps<'a>(section: &[&'a str]) -> Vec<&'a str> {
    section
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=rtpmap:"))
        .collect()
}

/// The `rtp` entry of `type` and `kind` in a stats summary.
fn rtp_entry<'a>(stats: &'a Value, ty: &str, kind: &str) -> Option<&'a Value> {
    stats["rtp"]
        .as_array()?
        .iter()
        .find(|r| r["type"] == ty && r["kind"] == kind)
}

/// A Firefox of its own, in a loopback-only namespace: it reports its version (the installed
/// firefox-esr's), gathers loopback candidates only, and dropping it leaves no Firefox process
/// (helpers included) and no profile behind.
#[test]
fn own_firefox_starts_and_leaves_nothing_running() {
    if let Err(why) = Browser::available_kind(BrowserKind::Firefox) {
        panic!("headless Firefox unavailable: {why}");
    }
    let t = Instant::now();
    let mut b = Browser::start_firefox();
    let up = t.elapsed();
    eprintln!("own {} up in {up:?} ({})", b.version(), b.netns());
    assert_eq!(b.kind(), BrowserKind::Firefox);
    assert!(up < Duration::from_secs(30), "Firefox took {up:?} to start");
    assert!(
        b.netns().starts_with("private"),
        "Firefox not in a loopback-only namespace: {}",
        b.netns()
    );

    // The version is the installed binary's ("Mozilla Firefox 153.8.0esr" -> "Firefox/153.8.0").
    let number = b
        .version()
        .strip_prefix("Firefox/")
        .unwrap_or_else(|| panic!("version {:?} does not say Firefox", b.version()))
        .to_string();
    let major: u32 = number
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 115, "Firefox {number}");
    let out = std::process::Command::new(BrowserKind::Firefox.binary())
        .arg("--version")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("firefox-esr --version");
    let installed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        installed.contains(&number),
        "the driver reports Firefox/{number}, the binary says {installed:?}"
    );

    b.new_pc("x");
    let sdp = b
        .offer("x", &["audio"], None)
        .expect("Firefox creates an audio offer");
    assert_webrtc_offer(&sdp);
    assert_loopback_only(&sdp);
    assert!(
        m_section(&sdp, "audio")
            .iter()
            .any(|l| l.ends_with(" opus/48000/2")),
        "{sdp}"
    );

    let profile = b.profile_dir().to_path_buf();
    let marker = profile.to_str().expect("utf-8 profile path").to_string();
    assert!(profile.is_dir(), "profile dir {profile:?}");
    let running = b.processes();
    eprintln!("Firefox processes: {running:?}");
    assert!(
        running.len() >= 2,
        "expected Firefox's main and content processes, found {running:?}"
    );

    let t = Instant::now();
    drop(b);
    eprintln!("own Firefox shut down in {:?}", t.elapsed());
    assert_gone(&marker, Duration::from_secs(5), "Firefox");
    for pid in running {
        assert!(
            !Path::new(&format!("/proc/{pid}/environ")).exists()
                || !String::from_utf8_lossy(
                    &std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
                )
                .contains(&marker),
            "Firefox process {pid} still running"
        );
    }
    assert!(!profile.exists(), "profile {profile:?} left behind");
}

/// Two Firefox RTCPeerConnections in one driver call each other with the fake camera and
/// microphone: VP8 video is decoded and not black, opus audio flows both ways, and DTMF can
/// be sent.
#[test]
fn two_firefox_peers_exchange_audio_and_video() {
    let mut b = firefox();
    b.new_pc("ff-caller");
    b.new_pc("ff-callee");
    let offer = b
        .offer_with_fake_media("ff-caller", &["audio", "video"])
        .expect("Firefox offers its fake camera and microphone");
    assert_loopback_only(&offer);
    let answer = b
        .remote_offer_with_fake_media("ff-callee", &offer)
        .expect("Firefox answers Firefox's offer");
    assert!(
        answer.contains("a=setup:active"),
        "Firefox answers actpass with active:\n{answer}"
    );
    b.remote_answer("ff-caller", &answer)
        .expect("the caller accepts the answer");

    let deadline = Instant::now() + Duration::from_secs(15);
    let flowing = |stats: &Value| {
        let video = rtp_entry(stats, "inbound-rtp", "video");
        let audio = rtp_entry(stats, "inbound-rtp", "audio");
        video.is_some_and(|v| v["framesDecoded"].as_u64().unwrap_or(0) > 0)
            && audio.is_some_and(|a| a["packets"].as_u64().unwrap_or(0) > 0)
    };
    let (caller, callee) = loop {
        let caller = b.stats("ff-caller").expect("caller stats");
        let callee = b.stats("ff-callee").expect("callee stats");
        if flowing(&caller) && flowing(&callee) {
            break (caller, callee);
        }
        assert!(
            Instant::now() < deadline,
            "no media both ways within 15 s:\ncaller {caller:#}\ncallee {callee:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (who, stats) in [("caller", &caller), ("callee", &callee)] {
        assert_eq!(
            stats["connectionState"],
            json!("connected"),
            "{who}: {stats}"
        );
        let video = rtp_entry(stats, "inbound-rtp", "video").expect("inbound video");
        assert_eq!(video["codec"], json!("video/VP8/90000"), "{who}: {stats}");
        let audio = rtp_entry(stats, "inbound-rtp", "audio").expect("inbound audio");
        assert_eq!(audio["codec"], json!("audio/opus/48000"), "{who}: {stats}");
        let sent = rtp_entry(stats, "outbound-rtp", "audio").expect("outbound audio");
        assert!(sent["packets"].as_u64().unwrap_or(0) > 0, "{who}: {stats}");
        eprintln!(
            "Firefox {who}: video {} frames decoded, audio {} packets received",
            video["framesDecoded"], audio["packets"]
        );
    }

    let frame = b
        .video_frame("ff-callee", "remote")
        .expect("a frame of the received video");
    eprintln!("Firefox received frame: {frame}");
    assert!(frame["width"].as_u64().unwrap_or(0) > 0, "{frame}");
    assert!(frame["height"].as_u64().unwrap_or(0) > 0, "{frame}");
    assert!(
        frame["meanLuma"].as_f64().unwrap_or(0.0) > 10.0,
        "Firefox's fake camera is a changing coloured picture, not black: {frame}"
    );

    b.insert_dtmf("ff-caller", "1#", 100, 70)
        .expect("Firefox sends DTMF on a connected audio sender");
    b.close("ff-caller");
    b.close("ff-callee");
}

/// setCodecPreferences in Firefox: an offer restricted to VP8 (and opus) lists nothing else
/// but VP8's retransmission format; a codec Firefox lacks is refused in its name.
#[test]
fn firefox_offer_restricted_to_vp8() {
    let mut b = firefox();
    b.new_pc("ff-vp8");
    let sdp = b
        .offer_with_fake_media_restricted(
            "ff-vp8",
            &["audio", "video"],
            json!({"audio": ["opus"], "video": ["VP8"]}),
        )
        .expect("Firefox creates a VP8-only offer");
    b.close("ff-vp8");
    assert_webrtc_offer(&sdp);
    let video = m_section(&sdp, "video");
    let maps = rtpmaps(&video);
    eprintln!(
        "Firefox VP8-only offer: {}\n  {}",
        video[0],
        maps.join("\n  ")
    );
    assert!(maps.iter().any(|l| l.ends_with(" VP8/90000")), "{sdp}");
    for l in &maps {
        assert!(
            l.ends_with(" VP8/90000") || l.ends_with(" rtx/90000"),
            "{l:?} offered despite the VP8 restriction:\n{sdp}"
        );
    }
    let pts: Vec<&str> = video[0].split(' ').skip(3).collect();
    assert_eq!(
        pts.len(),
        maps.len(),
        "every payload type has an rtpmap: {sdp}"
    );
    let audio = m_section(&sdp, "audio");
    assert!(
        rtpmaps(&audio).iter().any(|l| l.ends_with(" opus/48000/2")),
        "{sdp}"
    );
    for absent in ["PCMU/", "PCMA/", "G722/"] {
        assert!(
            !audio.iter().any(|l| l.contains(absent)),
            "{absent} offered despite the restriction:\n{sdp}"
        );
    }

    b.new_pc("ff-bogus");
    let err = b
        .offer("ff-bogus", &["audio"], Some(&["NOPE"]))
        .expect_err("no such codec");
    assert!(err.contains("Firefox has no audio codec NOPE"), "{err}");
    b.close("ff-bogus");
}

/// Firefox refuses an answer that is not SDP, in its own words, and the driver carries on.
#[test]
fn firefox_refuses_garbage_answer_verbatim() {
    let err = refuse_garbage_answer(&mut firefox(), "ff-garbage");
    eprintln!("Firefox on a garbage answer: {err}");
    assert!(err.to_lowercase().contains("sdp"), "{err}");
}

/// A small softphone-like page (a data: URL, so no server is needed in the namespace).
fn page_url() -> String {
    let html = "<!doctype html><meta charset=utf-8><title>estuary page test</title>\
        <input id=user><select id=codec><option value=opus>Opus</option>\
        <option value=pcmu>PCMU</option></select><input type=checkbox id=video>\
        <button id=go disabled>Call</button><div id=state data-state=idle></div><pre id=log></pre>\
        <script>\
        const $ = (id) => document.getElementById(id);\
        $('user').addEventListener('input', () => { $('go').disabled = $('user').value === ''; });\
        $('go').addEventListener('click', async () => {\
          $('state').dataset.state = 'calling';\
          const pc = new RTCPeerConnection();\
          pc.createDataChannel('chat');\
          await pc.setLocalDescription(await pc.createOffer());\
          $('log').textContent = $('user').value + ' ' + $('codec').value + ' ' + ($('video').checked ? 'video' : 'audio');\
          $('state').dataset.state = 'offered';\
        });\
        </script>";
    let mut url = String::from("data:text/html;charset=utf-8,");
    for b in html.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The page commands against one browser; every reply, as the test sees it.
fn page_session(b: &mut Browser) -> Vec<String> {
    let url = page_url();
    let mut seen = Vec::new();
    seen.push(format!("open {:?}", b.page_open("pt", &url)));
    seen.push(format!("fill {:?}", b.page_fill("pt", "#user", "alice")));
    seen.push(format!(
        "select {:?}",
        b.page_select("pt", "#codec", "pcmu")
    ));
    seen.push(format!("check {:?}", b.page_check("pt", "#video", true)));
    seen.push(format!("uncheck-recheck {:?}", {
        b.page_check("pt", "#video", false)
            .and_then(|()| b.page_check("pt", "#video", true))
    }));
    seen.push(format!("click {:?}", b.page_click("pt", "#go")));
    seen.push(format!(
        "wait {:?}",
        b.page_wait(
            "pt",
            "#state",
            "data-state",
            &["offered", "failed"],
            Duration::from_secs(10)
        )
    ));
    seen.push(format!("text {:?}", b.page_text("pt", "#log")));
    let stats = b.page_stats("pt").expect("page stats");
    seen.push(format!(
        "stats {} {}",
        stats["signalingState"], stats["dataChannels"]
    ));
    // Failures are replies, not driver errors.
    let never = b.page_wait(
        "pt",
        "#state",
        "data-state",
        &["never"],
        Duration::from_millis(500),
    );
    let never = never.expect_err("the state never becomes \"never\"");
    assert!(never.contains("last \"offered\""), "{never}");
    seen.push("wait-never Err".to_string());
    let cmd = json!({"cmd": "page-select", "page": "pt", "selector": "#codec", "value": "g729",
                     "timeoutMs": 500});
    let reply = b.request(cmd);
    assert_eq!(reply["ok"], json!(false), "{reply}");
    seen.push("select-missing Err".to_string());
    let reply = b.request(
        json!({"cmd": "page-click", "page": "pt", "selector": "#nothing", "timeoutMs": 500}),
    );
    assert_eq!(reply["ok"], json!(false), "{reply}");
    seen.push("click-missing Err".to_string());
    b.page_close("pt");
    seen
}

/// The page commands work in Firefox and answer exactly as they do in Chromium.
#[test]
fn page_commands_answer_the_same_in_chromium_and_firefox() {
    let t = Instant::now();
    let chromium = page_session(&mut browser());
    eprintln!("Chromium page session in {:?}", t.elapsed());
    let t = Instant::now();
    let firefox = page_session(&mut firefox());
    eprintln!("Firefox page session in {:?}", t.elapsed());
    eprintln!("replies:\n  {}", firefox.join("\n  "));
    assert_eq!(firefox, chromium);
    assert_eq!(
        chromium[..9],
        [
            "open Ok(\"estuary page test\")",
            "fill Ok(())",
            "select Ok(())",
            "check Ok(())",
            "uncheck-recheck Ok(())",
            "click Ok(())",
            "wait Ok(\"offered\")",
            "text Ok(\"alice pcmu video\")",
            "stats \"have-local-offer\" []",
        ]
    );
}
