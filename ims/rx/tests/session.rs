//! RxClient ⇄ Pcrf facility, in memory on a virtual clock: the whole Rx session life.

mod common;

use std::time::Duration;

use common::*;
use estuary_diameter::dictionary as dict;
use estuary_diameter::message::{application, command};
use estuary_diameter::{result_code, Avp, AvpKey, Message};
use estuary_rx::media::*;
use estuary_rx::pcrf::AarAnswer;
use estuary_rx::{
    experimental, AarKind, AbortCause, CallKey, RxClient, RxError, RxEvent, SessionStatus, SpecificAction,
    TerminationCause,
};

const CALL: CallKey = CallKey(7);

fn open() -> Wire {
    let mut w = Wire::new();
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    assert_eq!(
        w.take_events(),
        [RxEvent::Authorized {
            call: CALL,
            kind: AarKind::Initial,
            result_code: 2001
        }]
    );
    w
}

fn session_id(w: &Wire) -> String {
    w.rx.session_id(CALL).expect("session").to_string()
}

#[test]
fn start_is_authorized_and_the_session_id_follows_rfc_6733() {
    let w = open();
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
    assert_eq!(session_id(&w), "pcscf.estuary.test;1700000000;1");
    assert!(w.pcrf.has_session(&session_id(&w)));
    let aar = w.pcrf.aars().next().unwrap();
    assert_eq!(aar.request_type, Some(0));
    assert_eq!(aar.session_id, session_id(&w));
    let c = w.rx.counters();
    assert_eq!((c.aar_initial_sent, c.aaa.success), (1, 1));
    assert_eq!(w.rx.poll_timeout(), None, "an open session has no deadline");
}

#[test]
fn session_ids_count_up_from_the_seed() {
    let mut w = Wire::new();
    w.start(CallKey(1), vec![audio(Direction::SendRecv)]);
    w.start(CallKey(2), vec![audio(Direction::SendRecv)]);
    assert_eq!(
        w.rx.session_id(CallKey(1)),
        Some("pcscf.estuary.test;1700000000;1")
    );
    assert_eq!(
        w.rx.session_id(CallKey(2)),
        Some("pcscf.estuary.test;1700000000;2")
    );
    assert_eq!(w.rx.len(), 2);
}

#[test]
fn refusal_by_result_code_ends_the_session() {
    let mut w = Wire::new();
    w.pcrf
        .set_aar_answer(AarAnswer::ResultCode(result_code::AUTHORIZATION_REJECTED));
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    assert_eq!(
        w.take_events(),
        [RxEvent::Refused {
            call: CALL,
            kind: AarKind::Initial,
            result_code: Some(5003),
            experimental: None
        }]
    );
    assert_eq!(w.rx.session_id(CALL), None);
    assert!(w.rx.is_empty());
    assert_eq!(
        w.rx.end(w.now, CALL, TerminationCause::Logout),
        Err(RxError::UnknownCall(CALL))
    );
    assert_eq!(w.rx.counters().aaa.permanent_failure, 1);
    assert_eq!(
        w.rx.counters().str_sent,
        0,
        "a refused AAR leaves nothing to terminate"
    );
}

#[test]
fn refusal_by_experimental_result_carries_the_ts_29_214_code() {
    let mut w = Wire::new();
    w.pcrf.set_aar_answer(AarAnswer::Experimental(
        experimental::IP_CAN_SESSION_NOT_AVAILABLE,
    ));
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    assert_eq!(
        w.take_events(),
        [RxEvent::Refused {
            call: CALL,
            kind: AarKind::Initial,
            result_code: None,
            experimental: Some(5065)
        }]
    );
    assert_eq!(w.rx.counters().aaa.permanent_failure, 1);
}

#[test]
fn protocol_error_answer_is_a_refusal() {
    let mut w = Wire::new();
    w.pcrf
        .set_aar_answer(AarAnswer::ResultCode(result_code::UNABLE_TO_DELIVER));
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    assert_eq!(
        w.take_events(),
        [RxEvent::Refused {
            call: CALL,
            kind: AarKind::Initial,
            result_code: Some(3002),
            experimental: None
        }]
    );
    assert_eq!(w.rx.counters().aaa.protocol_error, 1);
}

#[test]
fn silence_times_out_after_the_configured_timeout() {
    let mut w = Wire::new();
    w.pcrf.set_aar_answer(AarAnswer::Silent);
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    assert_eq!(w.rx.poll_timeout(), Some(w.now + Duration::from_secs(5)));
    w.advance(Duration::from_millis(4_999));
    assert!(w.take_events().is_empty());
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Pending));
    w.advance(Duration::from_millis(1));
    assert_eq!(
        w.take_events(),
        [RxEvent::TimedOut {
            call: CALL,
            kind: AarKind::Initial
        }]
    );
    // The clean-up STR went out (DIAMETER_SERVICE_NOT_PROVIDED); its answer ends it silently.
    let strs: Vec<_> = w.pcrf.strs().collect();
    assert_eq!(strs.len(), 1);
    assert_eq!(strs[0].termination_cause, Some(2));
    assert!(w.rx.is_empty());
    assert_eq!(w.rx.counters().aar_timeouts, 1);
    w.advance(Duration::from_secs(10));
    assert!(
        w.take_events().is_empty(),
        "no Terminated after a timed-out initial AAR"
    );
}

#[test]
fn configured_timeout_is_used() {
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(2);
    let mut w = Wire::with(cfg);
    w.pcrf.set_aar_answer(AarAnswer::Silent);
    w.start(CALL, vec![audio(Direction::SendRecv)]);
    w.advance(Duration::from_millis(1_999));
    assert!(w.take_events().is_empty());
    w.advance(Duration::from_millis(1));
    assert_eq!(w.take_events().len(), 1);
}

#[test]
fn update_uses_update_request_on_the_same_session_id() {
    let mut w = open();
    let sid = session_id(&w);
    // Hold audio, add video.
    let components = vec![audio(Direction::SendOnly), video(Direction::SendRecv)];
    w.rx.update(w.now, CALL, params(components)).unwrap();
    assert_eq!(
        w.rx.status(CALL).map(|s| s.0),
        Some(SessionStatus::Updating)
    );
    w.pump();
    assert_eq!(
        w.take_events(),
        [RxEvent::Authorized {
            call: CALL,
            kind: AarKind::Update,
            result_code: 2001
        }]
    );
    let aars: Vec<_> = w.pcrf.aars().collect();
    assert_eq!(aars.len(), 2);
    let update = aars[1];
    assert_eq!(update.session_id, sid);
    assert_eq!(update.request_type, Some(1));
    assert!(
        update.specific_actions.is_empty(),
        "§5.3.13: only in the initial AAR"
    );
    assert_eq!(update.framed_ip, None);
    assert_eq!(update.components.len(), 2);
    assert_eq!(update.components[0].flow_status, Some(0));
    assert_eq!(update.components[1].media_type, Some(1));
    // Later requests of the session name the PCRF that answered (RFC 6733 §6.5).
    assert_eq!(aars[0].destination_host, None);
    assert_eq!(update.destination_host.as_deref(), Some(PCRF_HOST));
    assert_eq!(w.rx.counters().aar_update_sent, 1);
}

#[test]
fn removing_video_sends_flow_status_removed() {
    let mut w = Wire::new();
    w.start(
        CALL,
        vec![audio(Direction::SendRecv), video(Direction::SendRecv)],
    );
    w.take_events();
    let mut gone = video(Direction::SendRecv);
    gone.removed = true;
    w.rx.update(w.now, CALL, params(vec![audio(Direction::SendRecv), gone]))
        .unwrap();
    w.pump();
    let update = w.pcrf.aars().nth(1).unwrap().clone();
    assert_eq!(update.components[1].flow_status, Some(4));
    assert!(update.components[1].sub_components.is_empty());
    assert_eq!(update.components[1].max_ul, None);
}

#[test]
fn updates_during_an_outstanding_aar_wait_and_the_latest_wins() {
    let mut w = Wire::new();
    w.pcrf.set_aar_answer(AarAnswer::Silent);
    w.rx.start(w.now, CALL, params(vec![audio(Direction::SendRecv)]))
        .unwrap();
    w.pump();
    w.rx.update(w.now, CALL, params(vec![audio(Direction::Inactive)]))
        .unwrap();
    w.rx.update(w.now, CALL, params(vec![audio(Direction::RecvOnly)]))
        .unwrap();
    w.pump();
    assert_eq!(w.pcrf.aars().count(), 1, "one AAR in flight at a time");
    // The PCRF now answers the AAR it held.
    w.pcrf.set_aar_answer(AarAnswer::Success);
    let held = w.unanswered.pop().unwrap();
    let answer = w.pcrf.handle_request(&held).unwrap();
    w.rx.handle_answer(w.now, &answer).unwrap();
    w.pump();
    let aars: Vec<_> = w.pcrf.aars().collect();
    assert_eq!(
        aars.len(),
        3,
        "the held AAR seen twice by the PCRF, then the update"
    );
    assert_eq!(aars[2].request_type, Some(1));
    assert_eq!(
        aars[2].components[0].flow_status,
        Some(1),
        "recvonly, the latest"
    );
    assert_eq!(
        w.take_events(),
        [
            RxEvent::Authorized {
                call: CALL,
                kind: AarKind::Initial,
                result_code: 2001
            },
            RxEvent::Authorized {
                call: CALL,
                kind: AarKind::Update,
                result_code: 2001
            }
        ]
    );
}

#[test]
fn an_unanswered_update_times_out_and_the_session_stays_open() {
    let mut w = open();
    w.pcrf.set_aar_answer(AarAnswer::Silent);
    w.rx.update(w.now, CALL, params(vec![audio(Direction::Inactive)]))
        .unwrap();
    w.advance(Duration::from_secs(5));
    assert_eq!(
        w.take_events(),
        [RxEvent::TimedOut {
            call: CALL,
            kind: AarKind::Update
        }]
    );
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
    assert_eq!(w.rx.counters().str_sent, 0);
}

#[test]
fn a_refused_update_keeps_the_session() {
    let mut w = open();
    w.pcrf.set_aar_answer(AarAnswer::Experimental(
        experimental::REQUESTED_SERVICE_NOT_AUTHORIZED,
    ));
    w.rx.update(
        w.now,
        CALL,
        params(vec![audio(Direction::SendRecv), video(Direction::SendRecv)]),
    )
    .unwrap();
    w.pump();
    assert_eq!(
        w.take_events(),
        [RxEvent::Refused {
            call: CALL,
            kind: AarKind::Update,
            result_code: None,
            experimental: Some(5063)
        }]
    );
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
}

#[test]
fn rar_loss_of_bearer_is_answered_2001_and_reported() {
    let mut w = open();
    let rar = w.pcrf.rar(
        &session_id(&w),
        &[SpecificAction::IndicationOfLossOfBearer],
        &[1],
    );
    let raa = w.pcrf_sends(rar);
    assert_eq!(raa.command_code, command::RE_AUTH);
    assert!(!raa.is_request());
    assert_eq!(raa.result_code(), Some(2001));
    assert_eq!(raa.session_id(), Some(session_id(&w).as_str()));
    assert_eq!(raa.origin_host(), Some(AF_HOST));
    assert_eq!(
        w.take_events(),
        [RxEvent::BearerLost {
            call: CALL,
            action: SpecificAction::IndicationOfLossOfBearer,
            components: vec![1]
        }]
    );
    assert_eq!(w.rx.counters().rar_received, 1);
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
}

#[test]
fn rar_out_of_credit_is_answered_2001_and_reported_with_the_final_unit_action() {
    let mut w = open();
    let rar = w.pcrf.rar_out_of_credit(&session_id(&w), &[1, 2], 0);
    // Final-Unit-Action carries the M bit: the dictionary must know it, or this were a 5001.
    assert_eq!(w.pcrf_sends(rar).result_code(), Some(2001));
    assert_eq!(
        w.take_events(),
        [RxEvent::OutOfCredit {
            call: CALL,
            components: vec![1, 2],
            action: Some(estuary_rx::FinalUnitAction::Terminate),
        }]
    );
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
}

#[test]
fn rar_release_of_bearer_and_other_actions() {
    let mut w = open();
    let rar = w.pcrf.rar(
        &session_id(&w),
        &[
            SpecificAction::IndicationOfRecoveryOfBearer,
            SpecificAction::IndicationOfReleaseOfBearer,
        ],
        &[],
    );
    assert_eq!(w.pcrf_sends(rar).result_code(), Some(2001));
    assert_eq!(
        w.take_events(),
        [
            RxEvent::BearerLost {
                call: CALL,
                action: SpecificAction::IndicationOfReleaseOfBearer,
                components: vec![]
            },
            RxEvent::Notified {
                call: CALL,
                actions: vec![SpecificAction::IndicationOfRecoveryOfBearer]
            }
        ]
    );
}

#[test]
fn asr_is_answered_then_the_af_sends_str() {
    let mut w = open();
    let sid = session_id(&w);
    let asa = w.pcrf.asr(&sid, AbortCause::InsufficientBearerResources);
    let asa = w.pcrf_sends(asa);
    assert_eq!(asa.command_code, command::ABORT_SESSION);
    assert_eq!(asa.result_code(), Some(2001));
    assert_eq!(
        w.take_events(),
        [
            RxEvent::Aborted {
                call: CALL,
                cause: AbortCause::InsufficientBearerResources
            },
            RxEvent::Terminated { call: CALL }
        ]
    );
    let strs: Vec<_> = w.pcrf.strs().collect();
    assert_eq!(strs.len(), 1);
    assert_eq!(strs[0].session_id, sid);
    assert_eq!(
        strs[0].termination_cause,
        Some(4),
        "DIAMETER_ADMINISTRATIVE"
    );
    assert!(!w.pcrf.has_session(&sid));
    assert!(w.rx.is_empty());
    assert_eq!(w.rx.counters().asr_received, 1);
}

#[test]
fn end_sends_str_logout_then_terminated() {
    let mut w = open();
    let sid = session_id(&w);
    w.rx.end(w.now, CALL, TerminationCause::Logout).unwrap();
    assert_eq!(
        w.rx.status(CALL).map(|s| s.0),
        Some(SessionStatus::Terminating)
    );
    // Ending twice is harmless; updating a terminating session is refused.
    w.rx.end(w.now, CALL, TerminationCause::Logout).unwrap();
    assert_eq!(
        w.rx.update(w.now, CALL, params(vec![audio(Direction::SendRecv)])),
        Err(RxError::Terminating(CALL))
    );
    w.pump();
    assert_eq!(w.take_events(), [RxEvent::Terminated { call: CALL }]);
    let strs: Vec<_> = w.pcrf.strs().collect();
    assert_eq!(strs.len(), 1, "one STR despite two end() calls");
    assert_eq!(strs[0].termination_cause, Some(1));
    assert!(!w.pcrf.has_session(&sid));
    assert_eq!(w.rx.session_id(CALL), None);
    let c = w.rx.counters();
    assert_eq!((c.str_sent, c.sta.success), (1, 1));
}

#[test]
fn an_unanswered_str_still_terminates_after_the_timeout() {
    let mut w = open();
    w.deliver = false;
    w.rx.end(w.now, CALL, TerminationCause::Logout).unwrap();
    w.advance(Duration::from_millis(4_999));
    assert!(w.take_events().is_empty());
    w.advance(Duration::from_millis(1));
    assert_eq!(w.take_events(), [RxEvent::Terminated { call: CALL }]);
    assert_eq!(w.rx.counters().str_timeouts, 1);
    assert!(w.rx.is_empty());
}

#[test]
fn transport_failure_counts_as_the_deadline() {
    let mut w = Wire::new();
    w.deliver = false;
    w.rx.start(w.now, CALL, params(vec![audio(Direction::SendRecv)]))
        .unwrap();
    w.pump();
    let aar = w.unanswered.pop().unwrap();
    assert_eq!(w.rx.handle_failure(w.now, &aar), Ok(CALL));
    w.pump();
    assert_eq!(
        w.take_events(),
        [RxEvent::TimedOut {
            call: CALL,
            kind: AarKind::Initial
        }]
    );
    // The clean-up STR fails too; the session is gone without a Terminated event.
    let str = w.unanswered.pop().unwrap();
    assert_eq!(str.command_code, command::SESSION_TERMINATION);
    assert_eq!(w.rx.handle_failure(w.now, &str), Ok(CALL));
    assert!(w.rx.is_empty());
    assert!(w.take_events().is_empty());
    assert!(matches!(
        w.rx.handle_failure(w.now, &str),
        Err(RxError::UnknownSession(_))
    ));
}

#[test]
fn late_and_malformed_answers_are_dropped() {
    let mut w = Wire::new();
    w.pcrf.set_aar_answer(AarAnswer::Silent);
    w.rx.start(w.now, CALL, params(vec![audio(Direction::SendRecv)]))
        .unwrap();
    w.pump();
    let held = w.unanswered.pop().unwrap();
    w.pcrf.set_aar_answer(AarAnswer::Success);
    let good = w.pcrf.handle_request(&held).unwrap();
    // Without Origin-Host the AAA breaks §5.6.2: 5005, dropped, the AAR still pending.
    let mut broken = good.clone();
    broken.avps.retain(|a| a.key() != dict::ORIGIN_HOST);
    assert!(matches!(
        w.rx.handle_answer(w.now, &broken),
        Err(RxError::MalformedAnswer {
            result_code: 5005,
            ..
        })
    ));
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Pending));
    assert_eq!(w.rx.counters().malformed_answers, 1);
    // The deadline passes; the good AAA arrives too late.
    w.advance(Duration::from_secs(5));
    assert_eq!(w.take_events().len(), 1);
    assert!(matches!(
        w.rx.handle_answer(w.now, &good),
        Err(RxError::UnknownSession(_)) | Err(RxError::NotOutstanding { .. })
    ));
    assert!(w.rx.counters().stale_answers >= 1);
    assert!(matches!(
        w.rx.handle_answer(w.now, &held),
        Err(RxError::NotAnAnswer(265))
    ));
}

#[test]
fn misuse_is_refused_with_typed_errors() {
    let mut w = open();
    assert_eq!(
        w.rx.start(w.now, CALL, params(vec![audio(Direction::SendRecv)])),
        Err(RxError::CallExists(CALL))
    );
    assert_eq!(
        w.rx.update(w.now, CallKey(99), params(vec![])),
        Err(RxError::UnknownCall(CallKey(99)))
    );
    let mut zero = audio(Direction::SendRecv);
    zero.number = 0;
    assert!(matches!(
        w.rx.start(w.now, CallKey(8), params(vec![zero])),
        Err(RxError::InvalidParams(
            estuary_rx::ParamError::ZeroComponentNumber
        ))
    ));
    let mut twice = audio(Direction::SendRecv);
    twice.number = 1;
    assert!(matches!(
        w.rx.start(
            w.now,
            CallKey(8),
            params(vec![audio(Direction::SendRecv), twice])
        ),
        Err(RxError::InvalidParams(
            estuary_rx::ParamError::DuplicateComponentNumber(1)
        ))
    ));
    let mut mixed = audio(Direction::SendRecv);
    mixed.flows = vec![IpFlow::udp(
        sa("[2001:db8::1]:5000"),
        sa("198.51.100.7:40000"),
    )];
    assert!(matches!(
        w.rx.start(w.now, CallKey(8), params(vec![mixed])),
        Err(RxError::InvalidParams(
            estuary_rx::ParamError::MixedAddressFamilies { component: 1 }
        ))
    ));
    let mut three = audio(Direction::SendRecv);
    three
        .codec_data
        .push("uplink\noffer\nm=audio 1 RTP/AVP 0".into());
    assert!(matches!(
        w.rx.start(w.now, CallKey(8), params(vec![three])),
        Err(RxError::InvalidParams(
            estuary_rx::ParamError::TooManyCodecData { count: 3, .. }
        ))
    ));
    let mut no_icid = params(vec![audio(Direction::SendRecv)]);
    no_icid.af_charging_id.clear();
    assert!(matches!(
        w.rx.start(w.now, CallKey(8), no_icid),
        Err(RxError::InvalidParams(
            estuary_rx::ParamError::EmptyChargingId
        ))
    ));
    assert_eq!(w.rx.len(), 1, "refused starts leave no session");
    assert!(w.rx.poll_request().is_none());
}

// ---- requests from the PCRF that must be refused ----

fn error_answer(w: &mut Wire, request: Message) -> Message {
    let answer = w.pcrf_sends(request);
    assert!(
        w.take_events().is_empty(),
        "refused requests raise no events"
    );
    answer
}

fn failed_avp(answer: &Message) -> Avp {
    answer
        .find(dict::FAILED_AVP)
        .expect("Failed-AVP")
        .grouped_avps()
        .unwrap()
        .remove(0)
}

#[test]
fn rar_for_an_unknown_session_is_5002() {
    let mut w = open();
    let rar = w.pcrf.rar(
        "pcscf.estuary.test;1;999",
        &[SpecificAction::IndicationOfLossOfBearer],
        &[],
    );
    let raa = error_answer(&mut w, rar);
    assert_eq!(raa.result_code(), Some(result_code::UNKNOWN_SESSION_ID));
    assert!(!raa.flags.error, "5xxx is not a protocol error");
    assert_eq!(raa.session_id(), Some("pcscf.estuary.test;1;999"));
    let asr = w
        .pcrf
        .asr("pcscf.estuary.test;1;999", AbortCause::BearerReleased);
    assert_eq!(error_answer(&mut w, asr).result_code(), Some(5002));
    assert_eq!(w.rx.counters().requests_rejected, 2);
    assert_eq!(w.rx.status(CALL).map(|s| s.0), Some(SessionStatus::Open));
}

#[test]
fn rar_without_session_id_is_5005() {
    let mut w = open();
    let mut rar = w.pcrf.rar(
        &session_id(&w),
        &[SpecificAction::IndicationOfLossOfBearer],
        &[],
    );
    rar.avps.retain(|a| a.key() != dict::SESSION_ID);
    let raa = error_answer(&mut w, rar);
    assert_eq!(raa.result_code(), Some(result_code::MISSING_AVP));
    assert_eq!(failed_avp(&raa).key(), dict::SESSION_ID);
}

#[test]
fn rar_without_specific_action_is_5005() {
    let mut w = open();
    let rar = w.pcrf.rar(&session_id(&w), &[], &[]);
    let raa = error_answer(&mut w, rar);
    assert_eq!(raa.result_code(), Some(result_code::MISSING_AVP));
    assert_eq!(failed_avp(&raa).key(), dict::SPECIFIC_ACTION);
}

#[test]
fn rar_with_an_unknown_mandatory_avp_is_5001() {
    let mut w = open();
    let odd = Avp::octets(AvpKey::vendor(9999, 10_415), vec![1, 2, 3]).with_mandatory(true);
    let rar = w
        .pcrf
        .rar(
            &session_id(&w),
            &[SpecificAction::IndicationOfLossOfBearer],
            &[],
        )
        .with(odd.clone());
    let raa = error_answer(&mut w, rar);
    assert_eq!(raa.result_code(), Some(result_code::AVP_UNSUPPORTED));
    assert_eq!(failed_avp(&raa), odd);
    // The same AVP without M is ignored (RFC 6733 §4.1) and the RAR is served.
    let rar = w
        .pcrf
        .rar(
            &session_id(&w),
            &[SpecificAction::IndicationOfLossOfBearer],
            &[],
        )
        .with(odd.with_mandatory(false));
    assert_eq!(w.pcrf_sends(rar).result_code(), Some(2001));
    assert_eq!(w.take_events().len(), 1);
}

#[test]
fn other_commands_and_applications_are_protocol_errors() {
    let mut w = open();
    let mut wrong_app = w.pcrf.rar(
        &session_id(&w),
        &[SpecificAction::IndicationOfLossOfBearer],
        &[],
    );
    wrong_app.application_id = 16_777_238; // Gx
    let answer = error_answer(&mut w, wrong_app);
    assert_eq!(
        answer.result_code(),
        Some(result_code::APPLICATION_UNSUPPORTED)
    );
    assert!(answer.flags.error);
    let aar = Message::request(command::AA, application::RX)
        .with(Avp::utf8(dict::SESSION_ID, &session_id(&w)))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::identity(dict::ORIGIN_HOST, PCRF_HOST))
        .with(Avp::identity(dict::ORIGIN_REALM, PCRF_REALM))
        .with(Avp::identity(dict::DESTINATION_REALM, AF_REALM));
    let answer = error_answer(&mut w, aar);
    assert_eq!(answer.result_code(), Some(result_code::COMMAND_UNSUPPORTED));
    assert!(answer.flags.error);
    // An answer is not a request: nothing to say.
    let raa = Message::answer_to(&Message::request(command::RE_AUTH, application::RX));
    assert_eq!(w.rx.handle_request(w.now, &raa), None);
}

#[test]
fn rar_while_terminating_is_answered_without_events() {
    let mut w = open();
    w.deliver = false;
    w.rx.end(w.now, CALL, TerminationCause::Logout).unwrap();
    w.pump();
    let rar = w.pcrf.rar(
        &session_id(&w),
        &[SpecificAction::IndicationOfReleaseOfBearer],
        &[],
    );
    assert_eq!(w.pcrf_sends(rar).result_code(), Some(2001));
    let asr = w.pcrf.asr(&session_id(&w), AbortCause::BearerReleased);
    assert_eq!(w.pcrf_sends(asr).result_code(), Some(2001));
    assert!(w.take_events().is_empty());
    assert_eq!(w.rx.counters().str_sent, 1, "no second STR");
}

#[test]
fn a_session_another_gateway_opened_is_ended_by_its_session_id() {
    // The gateway that opened it (it died after this).
    let mut w = Wire::new();
    w.rx.start(w.now, CALL, params(vec![audio(Direction::SendRecv)])).unwrap();
    w.pump();
    let session = w.pcrf.aars().next().unwrap().session_id.clone();
    assert!(w.pcrf.has_session(&session));

    // The gateway that took the call over knows the session by its Session-Id alone.
    let mut survivor = RxClient::new(config(), SEED + 1);
    survivor.end_foreign(w.now, CallKey(99), session.clone(), TerminationCause::Logout).unwrap();
    let (key, str) = survivor.poll_request().expect("an STR");
    assert_eq!(key, CallKey(99));
    let str = over_the_wire(&str).1;
    assert_eq!((str.command_code, str.session_id()), (command::SESSION_TERMINATION, Some(session.as_str())));
    let sta = w.pcrf.handle_request(&str).expect("an STA");
    assert!(!w.pcrf.has_session(&session), "the PCRF released it");
    assert_eq!(survivor.handle_answer(w.now, &over_the_wire(&sta).1).unwrap(), CallKey(99), "the STA finds the session");
    assert!(survivor.is_empty() && survivor.poll_event().is_none(), "forgotten, with no event");
    assert_eq!(survivor.counters().stale_answers, 0);
    assert!(matches!(
        survivor.end_foreign(w.now, CallKey(99), "x;1;2".into(), TerminationCause::Logout),
        Ok(())
    ));
    assert!(matches!(
        survivor.end_foreign(w.now, CallKey(99), "x;1;3".into(), TerminationCause::Logout),
        Err(RxError::CallExists(CallKey(99)))
    ));
}
