//! The audit log (issue 23): every write, one JSON line.
//!
//! Uploads, yanks, un-yanks, deletes, token mints and burns, block-list reloads, imports and
//! retention runs each become one [`Event`]: when, what, on which project and file, who (a
//! token's name or a trusted publisher's identity, never a secret), from where, and how it
//! ended. `record` writes the line to `audit_log` (a file opened for appending, or stdout),
//! keeps the last few in memory for the pages for people, puts it as an object under
//! `<prefix>/audit/` on a shared store (so every replica's events are in one place), and hands
//! it to the webhooks.

use std::collections::VecDeque;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::Store;

pub use crate::config::publishing::Destination;

/// How many events the pages for people can show without reading the log back.
const RECENT: usize = 200;
/// Audit objects being written to the bucket at once; past it events go to the log only
/// (counted), so a flood of refused requests cannot queue bucket writes without end.
const MAX_PENDING_PUTS: usize = 256;
/// A reason longer than this is cut (it may quote what a client sent).
const MAX_REASON: usize = 300;

/// Receives every recorded event after it is written (the webhooks).
pub trait Listener: Send + Sync {
    fn event(&self, event: &Event);
}

/// The audit sink. Cheap to share; `record` never waits for the network.
pub struct Audit {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    destination: Option<Destination>,
    /// A store other replicas write too: each event also becomes an object there.
    shared: Option<Arc<dyn Store>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    listeners: Mutex<Vec<Arc<dyn Listener>>>,
    tasks: tokio_util::task::TaskTracker,
}

impl Audit {
    /// Opens `destination` for appending (created if missing). `shared`: the store, when
    /// other processes write to it.
    pub fn open(destination: Option<&Destination>, shared: Option<Arc<dyn Store>>) -> anyhow::Result<Audit> {
        let out: Option<Box<dyn Write + Send>> = match destination {
            None => None,
            Some(Destination::Stdout) => Some(Box::new(std::io::stdout())),
            Some(Destination::File(path)) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("audit_log: cannot create {}: {e}", dir.display()))?;
                }
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                    anyhow::anyhow!(
                        "audit_log: cannot open {} for appending: {e}; fix the path or its permissions",
                        path.display()
                    )
                })?;
                Some(Box::new(file))
            }
        };
        Ok(Audit {
            out: out.map(Mutex::new),
            destination: destination.cloned(),
            shared,
            recent: Mutex::default(),
            listeners: Mutex::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// An audit that writes nowhere (tests, library use); events are still kept in memory.
    pub fn none() -> Audit {
        Audit::open(None, None).expect("an audit without a destination always opens")
    }

    pub fn add_listener(&self, listener: Arc<dyn Listener>) {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(listener);
    }

    /// Records one event: the log line (one `write` of a whole line, so lines from concurrent
    /// writers never interleave in an append-only file), the recent list, the shared store,
    /// the listeners.
    pub fn record(&self, mut event: Event) {
        if let Some(reason) = event.reason.as_mut() {
            tidy(reason);
        }
        let line = match serde_json::to_string(&event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit event");
                return;
            }
        };
        if let Some(out) = &self.out {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                metrics::counter!("larder_audit_failures_total", "to" => "log").increment(1);
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::from(line.as_str()));
        }
        // Refusals of requests that proved no identity are this replica's business only: the
        // bucket is written for what somebody with a token or a trusted identity did.
        let anonymous_refusal = event.who == Who::Anonymous && event.result != Outcome::Ok;
        if let Some(store) = &self.shared
            && !anonymous_refusal
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            if self.tasks.len() >= MAX_PENDING_PUTS {
                metrics::counter!("larder_audit_failures_total", "to" => "bucket").increment(1);
                tracing::warn!("too many audit objects being written; this event goes to the log only");
                return self.notify(&event);
            }
            let key = format!("audit/{}/{}-{:016x}", event.day(), event.time, rand::random::<u64>());
            let store = store.clone();
            let body = line.clone().into_bytes();
            self.tasks.spawn_on(
                async move {
                    if let Err(e) = store.put_record(&key, body).await {
                        metrics::counter!("larder_audit_failures_total", "to" => "bucket").increment(1);
                        tracing::error!(error = %e, %key, "cannot write an audit event to the bucket");
                    }
                },
                &handle,
            );
        }
        self.notify(&event);
    }

    fn notify(&self, event: &Event) {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for l in listeners {
            l.event(event);
        }
    }

    /// Waits for the audit objects under way (at shutdown, and before a command exits).
    pub async fn flush(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// The newest events, newest first, at most `limit`: from the shared store (every
    /// replica's, today's and yesterday's), else the log file's tail, else this process's.
    pub async fn newest(&self, limit: usize) -> Vec<Event> {
        let lines: Vec<String> = if let Some(store) = &self.shared {
            match newest_in_store(&**store, limit).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list audit events in the bucket; showing this replica's");
                    self.in_memory(limit)
                }
            }
        } else if let Some(Destination::File(path)) = &self.destination {
            match tail_lines(path, limit) {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the audit log back; showing this process's events");
                    self.in_memory(limit)
                }
            }
        } else {
            self.in_memory(limit)
        };
        lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn in_memory(&self, limit: usize) -> Vec<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).map(|l| l.to_string()).collect()
    }
}

/// One line of at most `MAX_REASON` bytes, control characters replaced.
fn tidy(reason: &mut String) {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    if reason.chars().any(char::is_control) {
        *reason = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    }
}

/// At most this much of the log file's end is read back for the pages.
const TAIL_BYTES: u64 = 256 * 1024;

/// The last `limit` lines of a file, newest first, reading at most `TAIL_BYTES`.
fn tail_lines(path: &std::path::Path, limit: usize) -> std::io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // the first line read may be cut
    }
    Ok(lines.iter().rev().take(limit).map(|l| l.to_string()).collect())
}

/// The newest `limit` audit objects of today and yesterday (UTC), newest first.
async fn newest_in_store(store: &dyn Store, limit: usize) -> Result<Vec<String>, crate::store::Error> {
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for days_ago in 0..2u64 {
        let at = now - std::time::Duration::from_secs(days_ago * 86_400);
        let day = humantime::format_rfc3339(at).to_string();
        let prefix = format!("audit/{}/", &day[..10]);
        let mut keys: Vec<String> = store.list_record_keys(&prefix).await?.into_iter().map(|(k, _)| k).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for key in keys {
            if out.len() == limit {
                return Ok(out);
            }
            if let Some(bytes) = store.get_record(&key).await? {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line_without_empty_fields() {
        let e = Event::new(Action::Upload, Who::Token { name: "ci".into() })
            .project("team")
            .file("app-1.0.tar.gz", Some("ab"))
            .peer(Some("127.0.0.1".parse().unwrap()));
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["action"], "upload");
        assert_eq!(v["who"]["kind"], "token");
        assert_eq!(v["who"]["name"], "ci");
        assert_eq!(v["result"], "ok");
        assert!(v.get("reason").is_none());
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        let mut long = format!("a\nb\r{}", "é".repeat(400));
        tidy(&mut long);
        assert!(long.len() <= MAX_REASON + '…'.len_utf8() && !long.contains(['\n', '\r']), "{long}");
        let mut short = "fine".to_string();
        tidy(&mut short);
        assert_eq!(short, "fine");
    }

    #[test]
    fn lines_are_appended_and_read_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let audit = Audit::open(Some(&Destination::File(path.clone())), None).unwrap();
        for i in 0..5 {
            audit.record(Event::new(Action::Delete, Who::Anonymous).project(&format!("p{i}")));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let back = tail_lines(&path, 2).unwrap();
        assert!(back[0].contains("\"p4\"") && back[1].contains("\"p3\""), "{back:?}");
        // Opened again (a restart): appended, not truncated.
        let again = Audit::open(Some(&Destination::File(path.clone())), None).unwrap();
        again.record(Event::new(Action::Yank, Who::Anonymous));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6);
    }

    #[test]
    fn a_long_log_is_read_back_from_its_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
        std::fs::write(&path, line.repeat(1000)).unwrap(); // 1 MB
        let back = tail_lines(&path, 10_000).unwrap();
        assert!(back.len() <= (TAIL_BYTES / 1000) as usize);
        assert!(back.iter().all(|l| l.len() == line.len() - 1), "no cut line is returned");
    }
}

// The event: what an audit line says (the vocabulary config and webhooks share).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Upload,
    Yank,
    Unyank,
    Delete,
    MintToken,
    BurnToken,
    BlockListReload,
    Import,
    Retention,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Upload => "upload",
            Action::Yank => "yank",
            Action::Unyank => "unyank",
            Action::Delete => "delete",
            Action::MintToken => "mint_token",
            Action::BurnToken => "burn_token",
            Action::BlockListReload => "block_list_reload",
            Action::Import => "import",
            Action::Retention => "retention",
        }
    }
}

/// Who did it. Names and identities only: a secret never reaches an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Who {
    /// A configured token, by its name.
    Token { name: String },
    /// A token minted for a trusted publisher (issue 23): the issuer and the identity its
    /// OIDC token carried (repository or project path, and the workflow).
    Publisher {
        publisher: String,
        issuer: String,
        subject: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<String>,
    },
    /// Somebody on the server's machine: a signal or a command (`larder import`, `larder retention`).
    Operator { via: String },
    /// Larder itself (the background retention job).
    Server { job: String },
    /// Nobody proved who they are (a refused request without a valid token).
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

/// One audited write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub who: Who,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    pub fn new(action: Action, who: Who) -> Event {
        Event {
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            action,
            project: None,
            filename: None,
            sha256: None,
            who,
            peer: None,
            result: Outcome::Ok,
            reason: None,
        }
    }

    pub fn project(mut self, project: &str) -> Event {
        self.project = Some(project.to_string());
        self
    }

    pub fn file(mut self, filename: &str, sha256: Option<&str>) -> Event {
        self.filename = Some(filename.to_string());
        self.sha256 = sha256.map(str::to_string);
        self
    }

    pub fn peer(mut self, peer: Option<IpAddr>) -> Event {
        self.peer = peer.map(|p| p.to_string());
        self
    }

    /// How it ended: `Ok`, or refused / failed with the one-line reason the client was given.
    pub fn ended(mut self, result: Outcome, reason: Option<String>) -> Event {
        self.result = result;
        self.reason = reason;
        self
    }

    /// The day part of `time` (`2026-12-07`): audit objects are grouped by day.
    pub(crate) fn day(&self) -> &str {
        self.time.get(..10).unwrap_or("unknown")
    }
}
