//! `estuary check-config`: ok and a summary for a good file, the key and exit 2 for a bad one.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_estuary");
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/estuary.toml");

fn check(file: &str, set: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg(file);
    for s in set {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().expect("run estuary");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("estuary-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn accepts_the_reference_file() {
    let (code, out, err) = check(REFERENCE, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: ws 127.0.0.1:8080 wss 127.0.0.1:8443"),
        "{out}"
    );
    assert!(
        out.contains("-> builtin (TEST PEER, not for production)"),
        "{out}"
    );
    let (code, out, err) = check(REFERENCE, &["ims.next_hop=sip:127.0.0.1:5060"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-> sip:127.0.0.1:5060;transport=udp"), "{out}");
}

#[test]
fn rejects_a_bad_value_naming_the_key() {
    let file = temp_file("bad-port.toml", "[media]\nport_min = 30000\n");
    let (code, out, err) = check(&file, &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("media.port_min: must be less than media.port_max (30000 >= 29999)"),
        "{err}"
    );
}

#[test]
fn rejects_unknown_keys_and_syntax_errors() {
    let file = temp_file("typo.toml", "[web]\nwsl_listen = \"127.0.0.1:1\"\n");
    let (code, _, err) = check(&file, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown key web.wsl_listen"), "{err}");

    let file = temp_file("syntax.toml", "[web]\n\nws_listen = = 1\n");
    let (code, _, err) = check(&file, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("line 3: TOML syntax error"), "{err}");
}

#[test]
fn overrides_are_checked_too() {
    let (code, out, _) = check(
        REFERENCE,
        &[
            "ims.next_hop=sip:10.0.0.1:5070;transport=tcp",
            "media.port_min=22000",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("sip:10.0.0.1:5070;transport=tcp") && out.contains("ports 22000-29999"),
        "{out}"
    );

    let (code, _, err) = check(REFERENCE, &["ims.next_hop=sip:10.0.0.1;transport=sctp"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("ims.next_hop: transport \"sctp\" is not supported (udp, tcp, tls)"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_exit_2() {
    let (code, _, err) = check("/nonexistent/estuary.toml", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read /nonexistent/estuary.toml"),
        "{err}"
    );
}
