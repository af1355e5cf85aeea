//! The engine's clock: real time, plus an offset that tests move forward, so that TTL,
//! stale-if-error and not-found tests control time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to real time (tests only ever move it forward).
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Real time.
    pub fn system() -> Clock {
        Clock::default()
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Wall-clock time (upload times, retention ages).
    pub fn system_time(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> u64 {
        self.system_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    /// Moves this clock (and every copy of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}
