//! An upstream's "slow down": after a 429 (or a 503 with `Retry-After`), nothing more is sent to
//! that origin until the time it asked for has passed (issue 27). Pages meanwhile serve their
//! stale copy (stale-if-error), and requests that need the upstream get 503 with the time left,
//! instead of a retry storm against an index that is already shedding load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode, header};
use url::Url;

/// The longest pause an upstream can impose: a hostile or confused one cannot take Larder's
/// misses offline for a day with one header.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The pause after a 429 that names no time.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// Origins remembered at once (an upstream's files may live on a few other hosts).
const MAX_ORIGINS: usize = 64;

/// Per origin (`scheme://host:port`), the instant before which no request is sent.
#[derive(Default)]
pub struct Throttle {
    until: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// How long `url`'s origin asked us to wait still, if it did.
    pub fn remaining(&self, url: &Url) -> Option<Duration> {
        let until = self.until.lock().expect("throttle lock").get(&origin(url)).copied()?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Reads a response's status and headers: a 429, or a 503 with `Retry-After`, pauses its
    /// origin. Returns the pause, if one started.
    pub fn note(&self, url: &Url, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        let asked = headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let pause = match status {
            StatusCode::TOO_MANY_REQUESTS => asked.unwrap_or(DEFAULT_PAUSE),
            StatusCode::SERVICE_UNAVAILABLE => asked?,
            _ => return None,
        }
        .clamp(DEFAULT_PAUSE, MAX_PAUSE);
        let now = Instant::now();
        let mut until = self.until.lock().expect("throttle lock");
        until.retain(|_, t| *t > now);
        if until.len() >= MAX_ORIGINS {
            return Some(pause); // answered as throttled, but not remembered: the map stays bounded
        }
        let entry = until.entry(origin(url)).or_insert(now);
        *entry = (*entry).max(now + pause);
        Some(pause)
    }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// RFC 9110 §10.2.3: delay-seconds or an HTTP-date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(header::RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_429_pauses_its_origin_only_for_the_time_asked() {
        let t = Throttle::default();
        let a = Url::parse("https://index.test/simple/x/").unwrap();
        let b = Url::parse("https://files.test/x.whl").unwrap();
        assert_eq!(t.note(&a, StatusCode::TOO_MANY_REQUESTS, &headers(Some("30"))), Some(Duration::from_secs(30)));
        let left = t.remaining(&a).unwrap();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
        assert!(t.remaining(&Url::parse("https://index.test/other/").unwrap()).is_some(), "same origin");
        assert_eq!(t.remaining(&b), None, "another origin is not paused");
    }

    #[test]
    fn pauses_are_bounded_and_dates_are_read() {
        let t = Throttle::default();
        let a = Url::parse("https://index.test/").unwrap();
        assert_eq!(t.note(&a, StatusCode::TOO_MANY_REQUESTS, &headers(Some("86400"))), Some(MAX_PAUSE));
        assert_eq!(t.note(&a, StatusCode::TOO_MANY_REQUESTS, &headers(None)), Some(DEFAULT_PAUSE));
        assert_eq!(t.note(&a, StatusCode::TOO_MANY_REQUESTS, &headers(Some("soon"))), Some(DEFAULT_PAUSE));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let pause = t.note(&a, StatusCode::SERVICE_UNAVAILABLE, &headers(Some(&date))).unwrap();
        assert!(pause > Duration::from_secs(110) && pause <= Duration::from_secs(120), "{pause:?}");
        // A 503 without Retry-After and a 500 are failures, not a request to wait.
        assert_eq!(t.note(&a, StatusCode::SERVICE_UNAVAILABLE, &headers(None)), None);
        assert_eq!(t.note(&a, StatusCode::INTERNAL_SERVER_ERROR, &headers(Some("5"))), None);
    }

    #[test]
    fn the_origin_map_stays_bounded() {
        let t = Throttle::default();
        for i in 0..1000 {
            let u = Url::parse(&format!("https://h{i}.test/")).unwrap();
            assert!(t.note(&u, StatusCode::TOO_MANY_REQUESTS, &headers(Some("60"))).is_some());
        }
        assert_eq!(t.until.lock().unwrap().len(), MAX_ORIGINS);
    }
}
