//! The jitter buffer on a virtual clock: reordering, duplicates, late packets, loss with the
//! next packet handed along for FEC, wrap-around of sequence numbers and timestamps, source
//! restarts, hostile input, and delay adaptation under jitter and back.

use std::time::{Duration, Instant};

use estuary_transcoder::{Frame, JitterBuffer, JitterConfig, Push};

const PTIME: Duration = Duration::from_millis(20);

/// What the consumer saw, one entry per frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Packet(u16, u32, u8),
    Lost(u16, Option<u8>),
    Underrun,
}

fn take(f: Frame<'_>) -> Seen {
    match f {
        Frame::Packet {
            seq,
            timestamp,
            payload,
            ..
        } => Seen::Packet(seq, timestamp, payload[0]),
        Frame::Lost { seq, next, .. } => Seen::Lost(seq, next.map(|p| p[0])),
        Frame::Underrun { .. } => Seen::Underrun,
    }
}

/// A G.711 packet (160 bytes = 20 ms) whose first byte tags it.
fn payload(tag: u8) -> [u8; 160] {
    let mut p = [0u8; 160];
    p[0] = tag;
    p
}

/// Drives `jb` on a virtual clock: `arrivals` are (ms after t0, seq, ts) in any order; pops
/// every frame as it falls due until `end_ms`. Returns the frames with their due times.
fn drive(
    jb: &mut JitterBuffer,
    t0: Instant,
    arrivals: &[(u64, u16, u32)],
    end_ms: u64,
) -> Vec<(Duration, Seen)> {
    let mut arrivals = arrivals.to_vec();
    arrivals.sort_by_key(|a| a.0);
    let mut out = Vec::new();
    let mut i = 0;
    let end = t0 + Duration::from_millis(end_ms);
    loop {
        let next_arrival = arrivals.get(i).map(|a| t0 + Duration::from_millis(a.0));
        let next_pop = jb.poll_timeout();
        let now = match (next_arrival, next_pop) {
            (Some(a), Some(p)) => a.min(p),
            (Some(a), None) => a,
            (None, Some(p)) => p,
            (None, None) => break,
        };
        if now > end {
            break;
        }
        // Arrivals at an instant go before the frame due at that instant.
        while let Some(&(ms, seq, ts)) = arrivals.get(i) {
            if t0 + Duration::from_millis(ms) > now {
                break;
            }
            jb.push(now, seq, ts, &payload(seq as u8));
            i += 1;
        }
        while let Some(f) = jb.pop(now) {
            out.push((now - t0, take(f)));
        }
    }
    out
}

fn steady(first_seq: u16, first_ts: u32, n: u16) -> Vec<(u64, u16, u32)> {
    (0..n)
        .map(|k| {
            (
                20 * u64::from(k),
                first_seq.wrapping_add(k),
                first_ts.wrapping_add(160 * u32::from(k)),
            )
        })
        .collect()
}

fn packets(seen: &[(Duration, Seen)]) -> Vec<u16> {
    seen.iter()
        .filter_map(|(_, s)| match s {
            Seen::Packet(seq, ..) => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn in_order_stream_plays_at_a_steady_cadence_after_the_initial_delay() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let seen = drive(&mut jb, t0, &steady(100, 5000, 50), 1020);
    assert_eq!(packets(&seen), (100..150).collect::<Vec<_>>());
    // First frame after the 40 ms initial delay, then exactly every 20 ms.
    for (k, (at, _)) in seen.iter().enumerate() {
        assert_eq!(
            *at,
            Duration::from_millis(40) + PTIME * k as u32,
            "frame {k}"
        );
    }
    assert_eq!(jb.stats().lost, 0);
    assert_eq!(jb.stats().underruns, 0);
}

#[test]
fn reordered_packets_play_in_sequence_order() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut arrivals = steady(0, 0, 20);
    // Swap arrival times of 5/6 and 10/11/12 (12 first, 10 last, within the 40 ms delay).
    arrivals[5].0 = 120;
    arrivals[6].0 = 100;
    arrivals[10].0 = 235;
    arrivals[12].0 = 200;
    let seen = drive(&mut jb, t0, &arrivals, 500);
    assert_eq!(packets(&seen), (0..20).collect::<Vec<_>>());
    assert_eq!(jb.stats().lost, 0);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    assert_eq!(jb.push(t0, 7, 0, &payload(7)), Push::Accept);
    assert_eq!(jb.push(t0, 7, 0, &payload(7)), Push::Duplicate);
    assert_eq!(jb.push(t0, 8, 160, &payload(8)), Push::Accept);
    assert_eq!(jb.push(t0, 8, 160, &payload(8)), Push::Duplicate);
    assert_eq!(jb.stats().duplicate, 2);
    assert_eq!(jb.len(), 2);
    let due = jb.poll_timeout().unwrap();
    assert_eq!(take(jb.pop(due).unwrap()), Seen::Packet(7, 0, 7));
    // Once played, the same packet again is late, not a duplicate.
    assert_eq!(jb.push(due, 7, 0, &payload(7)), Push::Late);
}

#[test]
fn loss_is_reported_with_the_next_packet_for_fec_and_late_arrivals_are_dropped() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut arrivals = steady(0, 0, 10);
    arrivals.remove(4); // seq 4 never comes in time...
    let seen = drive(&mut jb, t0, &arrivals, 260);
    let kinds: Vec<Seen> = seen.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(kinds[4], Seen::Lost(4, Some(5)), "{kinds:?}");
    assert_eq!(packets(&seen), vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    // ...and when it does, it is late.
    assert_eq!(
        jb.push(t0 + Duration::from_millis(300), 4, 640, &payload(4)),
        Push::Late
    );
    assert_eq!(jb.stats().lost, 1);
    assert_eq!(jb.stats().late, 1);
}

#[test]
fn two_losses_in_a_row_hand_along_only_the_adjacent_packet() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut arrivals = steady(0, 0, 10);
    arrivals.retain(|a| a.1 != 3 && a.1 != 4);
    let seen = drive(&mut jb, t0, &arrivals, 200);
    let kinds: Vec<Seen> = seen.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(kinds[3], Seen::Lost(3, None));
    assert_eq!(kinds[4], Seen::Lost(4, Some(5)));
    assert_eq!(kinds[5], Seen::Packet(5, 800, 5));
}

#[test]
fn sequence_and_timestamp_wrap_around_is_seamless() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    // Sequence numbers 65530..=65535, 0..; timestamps cross 2^32 on the way.
    let first_ts = u32::MAX - 160 * 3 + 1;
    let mut arrivals = steady(65530, first_ts, 20);
    // Reorder right across the wrap too.
    arrivals[5].0 = 125; // seq 65535
    arrivals[6].0 = 110; // seq 0
    let seen = drive(&mut jb, t0, &arrivals, 500);
    let expect: Vec<u16> = (0..20u16).map(|k| 65530u16.wrapping_add(k)).collect();
    assert_eq!(packets(&seen), expect);
    let stats = jb.stats();
    assert_eq!((stats.lost, stats.restarts, stats.late), (0, 0, 0));
    // The timestamps handed out are the ones sent, across the wrap.
    let ts: Vec<u32> = seen
        .iter()
        .filter_map(|(_, s)| match s {
            Seen::Packet(_, ts, _) => Some(*ts),
            _ => None,
        })
        .collect();
    for w in ts.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 160);
    }
}

#[test]
fn a_source_restart_flushes_without_moving_the_playout_clock() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut arrivals = steady(1000, 0, 10);
    // The sender restarts: new random sequence and timestamp base, same cadence.
    arrivals.extend(
        steady(40000, 123_456_789, 10)
            .into_iter()
            .map(|(ms, s, t)| (ms + 300, s, t)),
    );
    let seen = drive(&mut jb, t0, &arrivals, 600);
    assert_eq!(jb.stats().restarts, 1);
    let played = packets(&seen);
    assert_eq!(&played[..10], &(1000..1010).collect::<Vec<_>>()[..]);
    assert_eq!(&played[10..], &(40000..40010).collect::<Vec<_>>()[..]);
    // Frames stay exactly 20 ms apart through the restart (underruns fill the refill).
    for w in seen.windows(2) {
        assert_eq!(w[1].0 - w[0].0, PTIME);
    }
    // A restart backwards in sequence space too.
    let t = t0 + Duration::from_millis(700);
    assert_eq!(jb.push(t, 100, 5, &payload(1)), Push::Restart);
}

#[test]
fn a_late_packet_after_an_underrun_still_plays_and_the_buffer_refills() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut arrivals = steady(0, 0, 20);
    // Seq 5 and everything after it is 70 ms late: the buffer runs dry.
    for a in arrivals.iter_mut().skip(5) {
        a.0 += 70;
    }
    let seen = drive(&mut jb, t0, &arrivals, 700);
    assert_eq!(packets(&seen), (0..20).collect::<Vec<_>>(), "nothing lost");
    assert!(jb.stats().underruns >= 3, "{:?}", jb.stats());
    assert_eq!(jb.stats().lost, 0);
}

#[test]
fn hostile_input_is_rejected_or_survived() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    assert_eq!(jb.push(t0, 1, 1, &[]), Push::Reject);
    assert_eq!(jb.push(t0, 1, 1, &[0u8; 1501]), Push::Reject);
    assert_eq!(jb.stats().rejected, 2);
    // Opus config with garbage payloads: durations fall back to the default.
    let mut opus = JitterBuffer::new(JitterConfig::opus());
    let mut x = 0x9E37_79B9u32;
    let mut now = t0;
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        now += Duration::from_micros(u64::from(x % 30_000));
        let len = (x as usize >> 8) % 40 + 1;
        let p = vec![(x >> 3) as u8; len];
        jb.push(now, (x >> 16) as u16, x.rotate_left(7), &p);
        opus.push(now, (x >> 12) as u16 % 70, x % 100_000, &p);
        while jb.pop(now).is_some() {}
        while let Some(f) = opus.pop(now) {
            assert!(f.ticks() > 0);
        }
    }
}

/// Tiny deterministic RNG (xorshift) so the jitter test is repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn delay_grows_under_jitter_and_shrinks_back() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::g711());
    let mut rng = Rng(0x5EED);
    // 10 s of packets delayed 0..=80 ms at random, then 20 s of steady arrivals.
    let n = 1500u16;
    let arrivals: Vec<(u64, u16, u32)> = (0..n)
        .map(|k| {
            let base = 20 * u64::from(k);
            // The first packet on time, so the initial delay is not luckily large.
            let extra = if k > 0 && k < 500 { rng.next() % 81 } else { 0 };
            (base + extra, k, 160 * u32::from(k))
        })
        .collect();

    // Playout latency of each played packet: when it was popped minus when it arrived.
    let latency = |seen: &[(Duration, Seen)]| -> Vec<Duration> {
        seen.iter()
            .filter_map(|(at, s)| match s {
                Seen::Packet(seq, ..) => {
                    let (arrived, ..) = arrivals[usize::from(*seq)];
                    Some(at.saturating_sub(Duration::from_millis(arrived)))
                }
                _ => None,
            })
            .collect()
    };
    let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len() as u32;

    let seen_jittery = drive(&mut jb, t0, &arrivals[..500], 10_000);
    let target_jittery = jb.target_delay();
    let lat = latency(&seen_jittery);
    let lat_jittery = mean(&lat[lat.len() - 100..]);
    eprintln!(
        "after jitter: J={:?} target={:?} mean latency of last 100 {:?} {:?}",
        jb.jitter(),
        target_jittery,
        lat_jittery,
        jb.stats()
    );
    // Uniform 0..80 ms delays: mean |D| is about 27 ms, so the target heads for 20 + 4·27.
    assert!(
        target_jittery >= Duration::from_millis(80),
        "{target_jittery:?}"
    );
    // Measured from arrival, a packet's wait is the target minus its own extra delay: mean
    // extra is 40 ms, so a 130+ ms playout point leaves a mean wait near 90 ms.
    assert!(lat_jittery >= Duration::from_millis(60), "{lat_jittery:?}");
    // Late packets during the adaptation are the price; most still play.
    assert!(packets(&seen_jittery).len() > 450);

    // The rest: steady arrivals. Continue the same drive from where it stopped.
    let seen_steady = drive(&mut jb, t0, &arrivals[500..], 30_000);
    let lat = latency(&seen_steady);
    let lat_steady = mean(&lat[lat.len() - 100..]);
    let stats = jb.stats();
    eprintln!(
        "after steady: J={:?} target={:?} mean latency of last 100 {:?} {:?}",
        jb.jitter(),
        jb.target_delay(),
        lat_steady,
        stats
    );
    assert!(jb.target_delay() <= Duration::from_millis(25));
    assert!(lat_steady <= Duration::from_millis(40), "{lat_steady:?}");
    assert!(stats.discarded > 0, "delay shrank by discarding");
    // In the steady part nothing is lost or late once the delay has settled.
    let tail = &seen_steady[seen_steady.len() - 500..];
    assert!(tail.iter().all(|(_, s)| matches!(s, Seen::Packet(..))));
}
