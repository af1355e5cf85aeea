//! What an audit event says (the vocabulary config and webhooks share, without the sink).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
