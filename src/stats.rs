//! What the people's pages show about the cache at work: hits, bytes by source, the upstream's
//! last answers and the most requested projects. The same events `/metrics` counts, kept here
//! as plain numbers because a Prometheus handle can only render text.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use crate::cache::Outcome;
use crate::index::ProjectName;

/// At most this many project names are counted; later names are not (a bounded map, so a
/// client asking for random names cannot grow it).
const MAX_COUNTED_PROJECTS: usize = 10_000;

#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    upstream: Mutex<UpstreamSeen>,
    requested: Mutex<HashMap<ProjectName, u64>>,
}

/// The upstream's last good and bad answers, as clients saw them.
#[derive(Clone, Default)]
pub struct UpstreamSeen {
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<(SystemTime, u16)>,
}

impl Stats {
    /// One page or file answer; `len` is the body's length when known.
    pub fn answered(&self, outcome: Outcome, status: u16, len: Option<u64>) {
        let from_upstream = outcome == Outcome::Miss;
        if from_upstream { &self.misses } else { &self.hits }.fetch_add(1, Relaxed);
        if let Some(len) = len {
            if from_upstream { &self.bytes_from_upstream } else { &self.bytes_from_cache }.fetch_add(len, Relaxed);
        }
        if from_upstream && status < 400 {
            self.upstream.lock().expect("stats lock").last_ok = Some(SystemTime::now());
        }
    }

    /// A 502 or 504: the upstream failed a client.
    pub fn upstream_failed(&self, status: u16) {
        self.upstream.lock().expect("stats lock").last_error = Some((SystemTime::now(), status));
    }

    pub fn upstream(&self) -> UpstreamSeen {
        self.upstream.lock().expect("stats lock").clone()
    }

    /// A project page served from the upstream's side to a public reader (private names, and
    /// what readers of private projects ask for, are never counted: the list is shown to anyone).
    pub fn requested(&self, name: &ProjectName) {
        let mut counts = self.requested.lock().expect("stats lock");
        if let Some(n) = counts.get_mut(name) {
            *n += 1;
            return;
        }
        if counts.len() >= MAX_COUNTED_PROJECTS {
            // Full: halve every count and forget the names that reach zero, so a flood of
            // one-off names cannot fix the list for good, and recent interest wins.
            counts.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
            if counts.len() >= MAX_COUNTED_PROJECTS {
                return;
            }
        }
        counts.insert(name.clone(), 1);
    }

    /// The `n` most requested projects, most first.
    pub fn most_requested(&self, n: usize) -> Vec<(ProjectName, u64)> {
        let counts = self.requested.lock().expect("stats lock");
        let mut all: Vec<_> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bounded_and_ordered() {
        let stats = Stats::default();
        for i in 0..MAX_COUNTED_PROJECTS + 10 {
            stats.requested(&ProjectName::parse(&format!("p{i}")).unwrap());
        }
        // The map filled at MAX_COUNTED_PROJECTS: halving dropped every one-off name.
        assert!(stats.requested.lock().unwrap().len() <= MAX_COUNTED_PROJECTS);
        let b = ProjectName::parse("popular").unwrap();
        for _ in 0..3 {
            stats.requested(&b);
        }
        assert_eq!(stats.most_requested(1), vec![(b, 3)]);
        stats.answered(Outcome::Miss, 200, Some(10));
        stats.answered(Outcome::Hit, 200, Some(5));
        assert_eq!(stats.bytes_from_upstream.load(Relaxed), 10);
        assert_eq!(stats.bytes_from_cache.load(Relaxed), 5);
        assert!(stats.upstream().last_ok.is_some());
    }
}
