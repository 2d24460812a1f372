//! Scenario tests on a virtual clock: a stun-rs "browser" against the agent.

mod common;

use std::time::Duration;

use common::*;
use estuary_ice::{
    Credentials, FailReason, IceConfig, IceError, IceEvent, IceLite, IceState, Input, Output, Timer,
};
use stun_rs::attributes::stun::UnknownAttributes;
use stun_rs::MessageClass;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn success_response_verifies_and_maps_the_source() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let (tid, req) = b.check();
    let (t, events) = h.exchange(gw(), browser_a(), &req);
    assert!(
        events.is_empty(),
        "a check without USE-CANDIDATE nominates nothing"
    );
    // MESSAGE-INTEGRITY verifies with the local password, FINGERPRINT too.
    let resp = decode_verified(&t.data, GW_PWD);
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    assert_eq!(*resp.transaction_id(), tid);
    assert_eq!(mapped(&resp), Some(browser_a()));
    assert!(has_integrity(&resp));
    assert_eq!(h.ice.counters().binding_success, 1);
    // Checked but not nominated: consented for DTLS, but nothing to send on yet.
    assert!(h.ice.is_consented(browser_a()));
    assert!(!h.ice.is_consented(browser_b()));
    assert_eq!(h.ice.selected(), None);
    assert_eq!(h.ice.state(), IceState::Checking);
}

#[test]
fn ipv6_source() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let (local, source) = (
        addr("[2001:db8::10]:40000"),
        addr("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
    );
    let (_, req) = b.nominate();
    let (t, events) = h.exchange(local, source, &req);
    assert_eq!(mapped(&decode_verified(&t.data, GW_PWD)), Some(source));
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local,
            remote: source
        }]
    );
    assert_eq!(h.ice.selected(), Some((local, source)));
}

/// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the mapped address goes out as IPv4.
#[test]
fn ipv4_mapped_source_is_answered_as_ipv4() {
    let mut h = Harness::new();
    let (_, req) = Browser::new().check();
    let (local, source) = (addr("[::]:40000"), addr("[::ffff:198.51.100.7]:50000"));
    let (t, _) = h.exchange(local, source, &req);
    assert_eq!(t.to, source);
    assert_eq!(mapped(&decode_verified(&t.data, GW_PWD)), Some(browser_a()));
}

#[test]
fn bad_password_is_401_without_integrity() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let r = Req {
        integrity_pwd: Some("notTheGatewayPassword1234".into()),
        use_candidate: true,
        ..b.req()
    };
    let (tid, req) = b.build(&r);
    let (t, events) = h.exchange(gw(), browser_a(), &req);
    let resp = decode_verified(&t.data, GW_PWD);
    assert_eq!(resp.class(), MessageClass::ErrorResponse);
    assert_eq!(*resp.transaction_id(), tid);
    assert_eq!(error_code(&resp), Some(401));
    assert!(
        !has_integrity(&resp),
        "RFC 8489 §9.1.3: no MESSAGE-INTEGRITY on a 401"
    );
    assert!(events.is_empty());
    assert!(!h.ice.is_consented(browser_a()));
    assert_eq!(h.ice.counters().unauthorized, 1);
}

#[test]
fn missing_username_or_integrity_is_400() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    for r in [
        Req {
            username: None,
            ..b.req()
        },
        Req {
            integrity_pwd: None,
            ..b.req()
        },
    ] {
        let (_, req) = b.build(&r);
        let (t, _) = h.exchange(gw(), browser_a(), &req);
        let resp = decode_verified(&t.data, GW_PWD);
        assert_eq!(error_code(&resp), Some(400));
        assert!(!has_integrity(&resp));
    }
    assert_eq!(h.ice.counters().bad_request, 2);
    assert!(!h.ice.is_consented(browser_a()));
}

#[test]
fn wrong_ufrag_is_401() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let bad = [
        format!("xxxx:{BROWSER_UFRAG}"), // not our ufrag
        format!("{GW_UFRAG}:xxxx"),      // not the browser's ufrag from its SDP
        GW_UFRAG.to_string(),            // no colon at all
        format!("{GW_UFRAG}x:{BROWSER_UFRAG}"),
    ];
    for u in bad {
        let (_, req) = b.build(&Req {
            username: Some(u.clone()),
            ..b.req()
        });
        let (t, _) = h.exchange(gw(), browser_a(), &req);
        assert_eq!(
            error_code(&decode_verified(&t.data, GW_PWD)),
            Some(401),
            "{u}"
        );
    }
    assert_eq!(h.ice.counters().unauthorized, 4);
}

/// Before the browser's SDP is known any remote half is accepted; once set it must match.
#[test]
fn unknown_remote_ufrag_accepts_any_until_set() {
    let mut h = Harness::with_config(IceConfig::new(gw_credentials()));
    let mut b = Browser::new();
    b.ufrag = "earlyBird".into();
    let (t, _) = h.exchange(gw(), browser_a(), &b.check().1);
    assert_eq!(error_code(&decode_verified(&t.data, GW_PWD)), None);

    h.ice.set_remote_credentials(browser_credentials());
    let (t, _) = h.exchange(gw(), browser_a(), &b.check().1);
    assert_eq!(error_code(&decode_verified(&t.data, GW_PWD)), Some(401));
    b.ufrag = BROWSER_UFRAG.into();
    let (t, _) = h.exchange(gw(), browser_a(), &b.check().1);
    assert_eq!(error_code(&decode_verified(&t.data, GW_PWD)), None);
}

/// An unknown comprehension-required attribute (0x7F01) in an authenticated request: 420 with
/// UNKNOWN-ATTRIBUTES, integrity-protected. An unknown comprehension-optional one is ignored.
#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let mut h = Harness::new();
    let username = format!("{GW_UFRAG}:{BROWSER_UFRAG}").into_bytes();
    let tid = [7u8; 12];
    let attrs = vec![
        (0x0006, username.clone()),
        (0x7F01, vec![1, 2, 3]),
        (0xC0FE, vec![9; 5]),
    ];
    let req = raw_message(0x0001, tid, &attrs, Some(GW_PWD.as_bytes()), true);
    let (t, events) = h.exchange(gw(), browser_a(), &req);
    let resp = decode_verified(&t.data, GW_PWD);
    assert_eq!(error_code(&resp), Some(420));
    assert!(has_integrity(&resp));
    let listed = resp
        .get::<UnknownAttributes>()
        .expect("UNKNOWN-ATTRIBUTES")
        .expect_unknown_attributes();
    assert_eq!(listed.attributes(), &[0x7F01]);
    assert!(events.is_empty());
    assert_eq!(h.ice.counters().unknown_attribute, 1);

    let optional_only = vec![(0x0006, username), (0xC0FE, vec![9; 5]), (0x0025, vec![])];
    let req = raw_message(0x0001, tid, &optional_only, Some(GW_PWD.as_bytes()), true);
    let (t, events) = h.exchange(gw(), browser_a(), &req);
    assert_eq!(error_code(&decode_verified(&t.data, GW_PWD)), None);
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: gw(),
            remote: browser_a()
        }]
    );
}

#[test]
fn use_candidate_nominates_once() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let (_, events) = h.exchange(gw(), browser_a(), &b.nominate().1);
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: gw(),
            remote: browser_a()
        }]
    );
    assert_eq!(h.ice.selected(), Some((gw(), browser_a())));
    assert_eq!(h.ice.state(), IceState::Connected);
    // Chrome repeats USE-CANDIDATE on the selected pair: no new event.
    let (_, events) = h.exchange(gw(), browser_a(), &b.nominate().1);
    assert!(events.is_empty());
    assert_eq!(h.ice.counters().nominations, 1);
}

/// The response comes before the event it caused, so the browser's check completes first.
#[test]
fn response_precedes_nominated_event() {
    let mut h = Harness::new();
    let outs = h.receive(gw(), browser_a(), &Browser::new().nominate().1);
    assert!(matches!(
        outs.as_slice(),
        [
            Output::Transmit(_),
            Output::Event(IceEvent::Nominated { .. })
        ]
    ));
}

/// A peer-reflexive remote (not in any SDP) nominated after another pair: the selection
/// follows the latest nomination, and checks on the old pair no longer refresh consent.
#[test]
fn renomination_switches_the_selected_pair() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    h.exchange(gw(), browser_a(), &b.nominate().1);
    h.now = h.at(3.0);
    let (_, events) = h.exchange(gw(), browser_b(), &b.check().1);
    assert!(events.is_empty(), "a plain check does not switch");
    assert_eq!(h.ice.selected(), Some((gw(), browser_a())));
    let (_, events) = h.exchange(gw(), browser_b(), &b.nominate().1);
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: gw(),
            remote: browser_b()
        }]
    );
    assert_eq!(h.ice.selected(), Some((gw(), browser_b())));
    // Another local address (the IPv6 host candidate) with the same remote is another pair.
    let v6 = addr("[2001:db8::10]:40000");
    let (_, events) = h.exchange(v6, browser_b(), &b.nominate().1);
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: v6,
            remote: browser_b()
        }]
    );
    assert_eq!(h.ice.counters().nominations, 3);

    // Checks on a pair that is no longer selected do not keep the selected pair's consent.
    for s in (5..=25).step_by(5) {
        assert!(h.advance_to(h.at(3.0 + s as f64)).is_empty());
        h.exchange(gw(), browser_a(), &b.check().1);
        h.exchange(gw(), browser_b(), &b.check().1);
    }
    let events = h.advance_to(h.at(40.0));
    assert_eq!(
        events[0],
        (
            h.at(33.0),
            IceEvent::ConsentExpired {
                local: v6,
                remote: browser_b()
            }
        )
    );
}

/// Checks every 5 s for two minutes keep consent fresh; the 30 s after the last one expire it,
/// not a moment before. With teardown_after = 0 the failure follows at the same instant.
#[test]
fn consent_fresh_under_checks_and_expires_30s_after_the_last() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    h.exchange(gw(), browser_a(), &b.nominate().1);
    for s in (5..=120).step_by(5) {
        assert!(
            h.advance_to(h.at(s as f64)).is_empty(),
            "no event while checks arrive (t={s})"
        );
        h.exchange(gw(), browser_a(), &b.check().1);
        assert_eq!(h.ice.poll_timeout(), Some(h.at(s as f64 + 30.0)));
        assert_eq!(h.ice.next_timer().map(|(_, t)| t), Some(Timer::Consent));
    }
    assert_eq!(h.ice.selected(), Some((gw(), browser_a())));

    let just_before = h.at(150.0) - Duration::from_millis(1);
    assert!(h.advance_to(just_before).is_empty());
    assert_eq!(h.ice.selected(), Some((gw(), browser_a())));
    assert!(h.ice.is_consented(browser_a()));

    let events = h.advance_to(h.at(150.0));
    assert_eq!(
        events,
        vec![
            (
                h.at(150.0),
                IceEvent::ConsentExpired {
                    local: gw(),
                    remote: browser_a()
                }
            ),
            (
                h.at(150.0),
                IceEvent::Failed {
                    reason: FailReason::ConsentLost
                }
            ),
        ]
    );
    assert_eq!(h.ice.selected(), None);
    assert!(!h.ice.is_consented(browser_a()));
    assert_eq!(h.ice.poll_timeout(), None);

    // Terminal: requests are dropped, not answered.
    assert!(h.receive(gw(), browser_a(), &b.nominate().1).is_empty());
    assert_eq!(h.ice.counters().dropped_failed, 1);
}

/// With a grace period the media layer stops at expiry, a new nomination revives the call
/// before teardown, and without one the teardown fires `teardown_after` after expiry.
#[test]
fn teardown_grace_and_revival() {
    let mut config = IceConfig::new(gw_credentials());
    config.remote = Some(browser_credentials());
    config.settings.teardown_after = secs(10);
    config.settings.consent_timeout = secs(30);
    let mut h = Harness::with_config(config);
    let mut b = Browser::new();
    h.exchange(gw(), browser_a(), &b.nominate().1);

    let events = h.advance_to(h.at(35.0));
    assert_eq!(
        events,
        vec![(
            h.at(30.0),
            IceEvent::ConsentExpired {
                local: gw(),
                remote: browser_a()
            }
        )]
    );
    assert_eq!(h.ice.state(), IceState::ConsentExpired);
    assert_eq!(h.ice.next_timer(), Some((h.at(40.0), Timer::Teardown)));
    // A plain check answers but does not revive the pair...
    h.exchange(gw(), browser_a(), &b.check().1);
    assert_eq!(h.ice.selected(), None);
    // ...a nomination does.
    let (_, events) = h.exchange(gw(), browser_a(), &b.nominate().1);
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: gw(),
            remote: browser_a()
        }]
    );
    assert_eq!(h.ice.selected(), Some((gw(), browser_a())));

    // Silence again: expiry at 35 + 30, teardown 10 s later.
    let events = h.advance_to(h.at(200.0));
    assert_eq!(
        events,
        vec![
            (
                h.at(65.0),
                IceEvent::ConsentExpired {
                    local: gw(),
                    remote: browser_a()
                }
            ),
            (
                h.at(75.0),
                IceEvent::Failed {
                    reason: FailReason::ConsentLost
                }
            ),
        ]
    );
}

/// A late `handle_timeout` still reports the deadlines, and both transitions happen at once.
#[test]
fn late_timeout_call_fires_everything_due() {
    let mut config = IceConfig::new(gw_credentials());
    config.settings.teardown_after = secs(5);
    let mut h = Harness::with_config(config);
    h.exchange(gw(), browser_a(), &Browser::new().nominate().1);
    h.ice.handle_timeout(h.at(1000.0));
    let outs = h.drain();
    assert_eq!(
        outs,
        vec![
            Output::Event(IceEvent::ConsentExpired {
                local: gw(),
                remote: browser_a()
            }),
            Output::Event(IceEvent::Failed {
                reason: FailReason::ConsentLost
            }),
        ]
    );
}

#[test]
fn initial_timeout_without_nomination() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    assert_eq!(h.ice.next_timer(), Some((h.at(30.0), Timer::Initial)));
    // Checks without nomination do not stop the initial timer.
    for s in [1.0, 10.0, 20.0] {
        h.advance_to(h.at(s));
        h.exchange(gw(), browser_a(), &b.check().1);
    }
    let events = h.advance_to(h.at(60.0));
    assert_eq!(
        events,
        vec![(
            h.at(30.0),
            IceEvent::Failed {
                reason: FailReason::NoNomination
            }
        )]
    );
    assert_eq!(h.ice.state(), IceState::Failed);
    assert!(!h.ice.is_consented(browser_a()));
}

/// RFC 8445 §9: after a restart only the new credentials work; the selected pair keeps
/// running until the browser nominates under the new ones.
#[test]
fn ice_restart_rejects_old_credentials() {
    let mut h = Harness::new();
    let mut old = Browser::new();
    h.exchange(gw(), browser_a(), &old.nominate().1);

    h.now = h.at(10.0);
    let new_local = Credentials::new("nEwG", "newGatewayPassword123456").unwrap();
    let new_remote = Credentials::new("nEwB", "newBrowserPassword123456").unwrap();
    h.ice
        .restart(h.now, new_local.clone(), Some(new_remote.clone()));
    assert!(h.drain().is_empty());
    assert_eq!(h.ice.local_credentials(), &new_local);
    assert_eq!(h.ice.remote_credentials(), Some(&new_remote));
    assert_eq!(
        h.ice.selected(),
        Some((gw(), browser_a())),
        "data continues during restart"
    );

    let (t, _) = h.exchange(gw(), browser_a(), &old.check().1);
    assert_eq!(error_code(&decode_verified(&t.data, GW_PWD)), Some(401));

    let mut new = Browser::new();
    (new.ufrag, new.gw_ufrag, new.gw_pwd) = ("nEwB".into(), "nEwG".into(), new_local.pwd().into());
    let (t, events) = h.exchange(gw(), browser_b(), &new.nominate().1);
    let resp = decode_verified(&t.data, new_local.pwd());
    assert_eq!(mapped(&resp), Some(browser_b()));
    assert_eq!(
        events,
        vec![IceEvent::Nominated {
            local: gw(),
            remote: browser_b()
        }]
    );
    assert!(
        try_decode_verified(&t.data, GW_PWD).is_none(),
        "signed with the new password only"
    );
}

/// Restart before any nomination gives the browser a fresh initial_timeout.
#[test]
fn ice_restart_while_checking_rearms_initial_timer() {
    let mut h = Harness::new();
    h.advance_to(h.at(20.0));
    h.ice.restart(
        h.now,
        Credentials::new("nEwG", "newGatewayPassword123456").unwrap(),
        None,
    );
    assert_eq!(h.ice.next_timer(), Some((h.at(50.0), Timer::Initial)));
}

/// Both sides claim controlled: 487 with integrity, no nomination, no consent, whatever the
/// tie-breakers; the counter tells which RFC 8445 §7.3.1.1 branch applied.
#[test]
fn role_conflict_is_487() {
    let mut config = IceConfig::new(gw_credentials());
    config.remote = Some(browser_credentials());
    config.tie_breaker = 1000;
    let mut h = Harness::with_config(config);
    let mut b = Browser::new();
    for (theirs, refused) in [(5000u64, 0u64), (10, 1), (1000, 2)] {
        let r = Req {
            controlled: true,
            tie_breaker: theirs,
            use_candidate: true,
            ..b.req()
        };
        let (tid, req) = b.build(&r);
        let (t, events) = h.exchange(gw(), browser_a(), &req);
        let resp = decode_verified(&t.data, GW_PWD);
        assert_eq!(*resp.transaction_id(), tid);
        assert_eq!(error_code(&resp), Some(487));
        assert!(has_integrity(&resp));
        assert!(events.is_empty());
        assert_eq!(h.ice.counters().role_switch_refused, refused);
    }
    assert_eq!(h.ice.counters().role_conflict, 3);
    assert_eq!(h.ice.selected(), None);
    assert!(!h.ice.is_consented(browser_a()));
    // The browser switches to controlling and checks again: served.
    let (_, events) = h.exchange(gw(), browser_a(), &b.nominate().1);
    assert_eq!(events.len(), 1);
}

#[test]
fn non_requests_and_corruption_are_dropped_and_counted() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    let (_, good) = b.check();

    // Binding success response, Binding indication, Allocate request (TURN), all well-formed.
    for msg_type in [0x0101u16, 0x0011, 0x0003] {
        let mut m = good.clone();
        m[0..2].copy_from_slice(&msg_type.to_be_bytes());
        refingerprint(&mut m);
        assert!(h.receive(gw(), browser_a(), &m).is_empty());
    }
    assert_eq!(h.ice.counters().dropped_unexpected, 3);

    let mut bad_crc = good.clone();
    bad_crc[25] ^= 0x40;
    assert!(h.receive(gw(), browser_a(), &bad_crc).is_empty());
    assert_eq!(h.ice.counters().dropped_fingerprint, 1);

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0, 0]);
    assert!(h.receive(gw(), browser_a(), &trailing).is_empty());
    assert!(h
        .receive(gw(), browser_a(), &good[..good.len() - 4])
        .is_empty());
    assert_eq!(h.ice.counters().dropped_malformed, 2);

    // A source nobody can answer.
    assert!(h.receive(gw(), addr("0.0.0.0:5000"), &good).is_empty());
    assert!(h.receive(gw(), addr("198.51.100.7:0"), &good).is_empty());
    assert_eq!(h.ice.counters().dropped(), 8);

    // Not STUN at all (DTLS, RTP): an error, and nothing counted.
    let dtls = [
        22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let input = Input::Receive {
        local: gw(),
        source: browser_a(),
        data: &dtls,
    };
    assert_eq!(h.ice.handle_input(h.now, input), Err(IceError::NotStun));
    assert_eq!(h.ice.counters().dropped(), 8);
    assert_eq!(h.ice.state(), IceState::Checking);
}

/// Consent for `is_consented` is per checked pair and ages out after consent_timeout; the table
/// is bounded and never forgets the selected pair.
#[test]
fn checked_pairs_age_out_and_are_bounded() {
    let mut config = IceConfig::new(gw_credentials());
    config.settings.max_checked_pairs = 2;
    let mut h = Harness::with_config(config);
    let mut b = Browser::new();
    h.exchange(gw(), browser_a(), &b.nominate().1);
    h.now = h.at(1.0);
    h.exchange(gw(), browser_b(), &b.check().1);
    assert_eq!(h.ice.next_timer(), Some((h.at(30.0), Timer::Consent)));
    let c = addr("192.0.2.55:1234");
    h.now = h.at(2.0);
    h.exchange(gw(), c, &b.check().1);
    assert!(h.ice.is_consented(browser_a()), "selected pair kept");
    assert!(
        !h.ice.is_consented(browser_b()),
        "oldest other pair evicted"
    );
    assert!(h.ice.is_consented(c));

    // Keep the selected pair alive; c ages out at 32 s.
    h.advance_to(h.at(20.0));
    h.exchange(gw(), browser_a(), &b.check().1);
    assert_eq!(h.ice.next_timer(), Some((h.at(32.0), Timer::CheckedPair)));
    assert!(h.advance_to(h.at(33.0)).is_empty());
    assert!(!h.ice.is_consented(c));
    assert!(h.ice.is_consented(browser_a()));
}

/// A driver that never drains: responses beyond the backlog are dropped and counted.
#[test]
fn undrained_outputs_are_bounded() {
    let mut h = Harness::new();
    let mut b = Browser::new();
    for _ in 0..70 {
        let (_, req) = b.check();
        h.ice
            .handle_input(
                h.now,
                Input::Receive {
                    local: gw(),
                    source: browser_a(),
                    data: &req,
                },
            )
            .unwrap();
    }
    assert_eq!(h.drain().len(), 64);
    assert_eq!(h.ice.counters().dropped_backlog, 6);
}

#[test]
fn generated_credentials_drive_an_agent() {
    let local = Credentials::generate(&mut estuary_keys::KeySource::os());
    let mut ice = IceLite::new(IceConfig::new(local.clone()), epoch());
    let mut b = Browser::new();
    (b.gw_ufrag, b.gw_pwd) = (local.ufrag().into(), local.pwd().into());
    let (_, req) = b.nominate();
    ice.handle_input(
        epoch(),
        Input::Receive {
            local: gw(),
            source: browser_a(),
            data: &req,
        },
    )
    .unwrap();
    let Some(Output::Transmit(t)) = ice.poll_output() else {
        panic!("response expected")
    };
    assert_eq!(error_code(&decode_verified(&t.data, local.pwd())), None);
}
