//! Page writes waiting for the disk (issue 21): one entry per page, however often it changes
//! before it is written (a miss, then the relink after its metadata arrived, then its HTML),
//! the newest state winning; bounded by the bytes the waiting pages hold, not by their number,
//! so a cold resolve's hundred pages are all kept while a flood of misses cannot queue memory
//! without limit. A few workers drain it, never two on one page at once (an older state
//! finishing last would roll the page back); each runs on the engine's task tracker and stops
//! when nothing is left for it, so shutdown waits for every write that was queued.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::index::ProjectName;

/// What `push` did with a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// Queued; `start_worker`: the caller starts one more worker to drain it.
    New { start_worker: bool },
    /// Merged into the job already waiting for this page.
    Merged,
    /// Over the byte budget: not queued (the page stays in memory only).
    Full,
}

pub struct WriteQueue<J> {
    inner: Mutex<Inner<J>>,
    budget: usize,
    max_workers: usize,
}

struct Inner<J> {
    jobs: HashMap<ProjectName, (J, usize)>,
    order: VecDeque<ProjectName>,
    bytes: usize,
    workers: usize,
    /// Pages a worker is writing now.
    writing: HashSet<ProjectName>,
}

impl<J> WriteQueue<J> {
    pub fn new(budget: usize, max_workers: usize) -> WriteQueue<J> {
        let inner =
            Inner { jobs: HashMap::new(), order: VecDeque::new(), bytes: 0, workers: 0, writing: HashSet::new() };
        WriteQueue { inner: Mutex::new(inner), budget, max_workers: max_workers.max(1) }
    }

    /// Queues `job` (weighing `weight` bytes) for `name`; a job already waiting for it is
    /// replaced by `merge(waiting, job)`, in its place in the queue.
    pub fn push(&self, name: ProjectName, job: J, weight: usize, merge: impl FnOnce(J, J) -> J) -> Queued {
        let mut inner = self.inner.lock().expect("write queue lock");
        if let Some((waiting, waiting_weight)) = inner.jobs.remove(&name) {
            let bytes = inner.bytes - waiting_weight + weight;
            inner.bytes = bytes;
            inner.jobs.insert(name, (merge(waiting, job), weight));
            return Queued::Merged;
        }
        // One job always fits, however big: a page that large must still be storable.
        if !inner.jobs.is_empty() && inner.bytes + weight > self.budget {
            return Queued::Full;
        }
        inner.bytes += weight;
        inner.jobs.insert(name.clone(), (job, weight));
        inner.order.push_back(name);
        let start_worker = inner.workers < self.max_workers;
        if start_worker {
            inner.workers += 1;
        }
        Queued::New { start_worker }
    }

    /// The next job for a worker that just wrote `finished` (`None` on its first call): the
    /// oldest one whose page no other worker is writing. `None` when there is none, and the
    /// worker then stops (counted off under the same lock, so a job pushed meanwhile starts a
    /// new one, and a job waiting behind another worker's page is taken by that worker).
    pub fn next(&self, finished: Option<&ProjectName>) -> Option<(ProjectName, J)> {
        let mut inner = self.inner.lock().expect("write queue lock");
        if let Some(name) = finished {
            inner.writing.remove(name);
        }
        let free = inner.order.iter().position(|n| !inner.writing.contains(n));
        let Some(name) = free.and_then(|i| inner.order.remove(i)) else {
            inner.workers -= 1;
            return None;
        };
        let (job, weight) = inner.jobs.remove(&name).expect("every queued name has its job");
        inner.bytes -= weight;
        inner.writing.insert(name.clone());
        Some((name, job))
    }

    /// Jobs waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().expect("write queue lock").jobs.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_two_workers_write_one_page_at_once() {
        let q = WriteQueue::new(1000, 2);
        assert_eq!(q.push(n("a"), 1, 1, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.next(None), Some((n("a"), 1)));
        // `a` changes while it is being written: queued again, not given to a second worker.
        assert_eq!(q.push(n("a"), 2, 1, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 3, 1, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.next(None), Some((n("b"), 3)));
        assert_eq!(q.next(Some(&n("b"))), None, "the second worker stops: `a` is the first one's");
        // The first worker finishes `a` and takes its newer state.
        assert_eq!(q.next(Some(&n("a"))), Some((n("a"), 2)));
        assert_eq!(q.next(Some(&n("a"))), None);
    }

    use super::*;

    fn n(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }

    #[test]
    fn a_page_changed_while_waiting_is_written_once_in_its_newest_state() {
        let q = WriteQueue::new(1000, 1);
        assert_eq!(q.push(n("a"), 1, 10, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 2, 10, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.push(n("a"), 3, 10, |a, b| a + b), Queued::Merged);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next(None), Some((n("a"), 4)));
        assert_eq!(q.next(Some(&n("a"))), Some((n("b"), 2)));
        assert_eq!(q.next(Some(&n("b"))), None);
        // The worker stopped: the next job starts one again.
        assert_eq!(q.push(n("c"), 5, 10, |_, b| b), Queued::New { start_worker: true });
    }

    #[test]
    fn the_budget_bounds_bytes_but_one_job_always_fits() {
        let q = WriteQueue::new(100, 2);
        // Around the budget: one job larger than all of it, then exactly at it, then one over.
        assert_eq!(q.push(n("huge"), 0, 500, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("next"), 0, 1, |_, b| b), Queued::Full);
        assert!(q.next(None).is_some());
        // The first worker is still writing `huge`: a second one may start.
        assert_eq!(q.push(n("a"), 0, 60, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 0, 40, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.push(n("c"), 0, 1, |_, b| b), Queued::Full);
        assert_eq!(q.push(n("c"), 0, 0, |_, b| b), Queued::New { start_worker: false });
        // A merge re-weighs the job it replaces.
        assert_eq!(q.push(n("a"), 0, 10, |_, b| b), Queued::Merged);
        assert_eq!(q.push(n("d"), 0, 50, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.len(), 4);
    }
}
