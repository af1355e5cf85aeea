//! A circuit breaker for the bucket (issue 27). When an operation fails (a timeout, a 5xx after
//! object_store's own retries, a reset), the bucket is not asked again for a short pause that
//! doubles while it keeps failing: requests that need it get their 503 at once instead of each
//! waiting out its own timeout, one after another, and a struggling bucket is not hammered.
//! When the pause ends, one operation probes; the others keep failing fast until it answers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first pause after a failure.
const MIN_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause: the bucket is probed at least this often while it fails, so service
/// comes back within about this long of the bucket doing so.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// A probe that has not answered within this (a long listing or upload part, or a stall) no
/// longer holds the others back: the next caller probes too.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Open until then: every operation fails at once.
    open_until: Option<Instant>,
    /// The next pause, if the next operation fails too.
    pause: Duration,
    /// A probe is under way since then (the pause ended): the others fail fast until it answers.
    probing: Option<Instant>,
}

/// What the caller may do now.
#[derive(Debug, PartialEq)]
pub enum Permit {
    /// The bucket is believed to answer.
    Go,
    /// The pause ended: this operation probes; report its outcome.
    Probe,
    /// Failing fast: the bucket failed a moment ago.
    Refused,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker { state: Mutex::new(State { open_until: None, pause: MIN_PAUSE, probing: None }) }
    }
}

impl Breaker {
    pub fn permit(&self) -> Permit {
        let mut s = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        let probe_running = s.probing.is_some_and(|since| now < since + PROBE_TIMEOUT);
        match s.open_until {
            None => Permit::Go,
            Some(until) if now < until || probe_running => Permit::Refused,
            Some(_) => {
                s.probing = Some(now);
                Permit::Probe
            }
        }
    }

    /// The bucket answered (even "not found"): closed again.
    pub fn success(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        *s = State { open_until: None, pause: MIN_PAUSE, probing: None };
    }

    /// The bucket failed: open for the pause, and double the next one.
    pub fn failure(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        let was_open = s.open_until.is_some();
        s.open_until = Some(Instant::now() + s.pause);
        s.probing = None;
        if !was_open {
            tracing::warn!(pause = ?s.pause, "the bucket failed; failing fast until it answers again");
        }
        s.pause = (s.pause * 2).min(MAX_PAUSE);
    }

    /// A probe ended without an answer either way (it was cancelled): let another probe.
    pub fn abandon_probe(&self) {
        self.state.lock().expect("breaker lock").probing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_it_a_probe_closes_it() {
        let b = Breaker::default();
        assert_eq!(b.permit(), Permit::Go);
        b.failure();
        assert_eq!(b.permit(), Permit::Refused, "open: fail fast");
        std::thread::sleep(MIN_PAUSE + Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Probe, "the pause ended: one probe");
        assert_eq!(b.permit(), Permit::Refused, "the others wait for the probe");
        b.success();
        assert_eq!(b.permit(), Permit::Go);
    }

    #[test]
    fn pauses_double_while_it_keeps_failing_up_to_a_bound() {
        let b = Breaker::default();
        for _ in 0..10 {
            b.failure();
        }
        assert_eq!(b.state.lock().unwrap().pause, MAX_PAUSE);
        let until = b.state.lock().unwrap().open_until.unwrap();
        assert!(until <= Instant::now() + MAX_PAUSE);
        b.success();
        assert_eq!(b.state.lock().unwrap().pause, MIN_PAUSE, "a success starts over");
    }

    #[test]
    fn a_probe_that_hangs_stops_holding_the_others_back() {
        let b = Breaker::default();
        b.failure();
        std::thread::sleep(MIN_PAUSE + Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Refused);
        // As if PROBE_TIMEOUT had passed since the probe began.
        b.state.lock().unwrap().probing = Some(Instant::now() - PROBE_TIMEOUT);
        assert_eq!(b.permit(), Permit::Probe);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_through() {
        let b = Breaker::default();
        b.failure();
        std::thread::sleep(MIN_PAUSE + Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Probe);
        b.abandon_probe();
        assert_eq!(b.permit(), Permit::Probe);
    }
}
