//! The settings of issue 23's sections: where the audit log goes and the `[[webhooks]]`
//! (who may publish is `policy::publishers`; retention is `policy::retention`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// The audit events a webhook can ask for (the names `audit::Action` gives them).
pub const WEBHOOK_EVENTS: [&str; 4] = ["upload", "yank", "unyank", "delete"];

/// Where the lines go (`audit_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// `audit_log = "-"` or `"stdout"` is standard output; anything else a file path.
    pub fn parse(raw: &str) -> Destination {
        match raw {
            "-" | "stdout" => Destination::Stdout,
            path => Destination::File(PathBuf::from(path)),
        }
    }
}

/// `[[webhooks]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A label for metrics and logs (default: the URL's host).
    pub name: Option<String>,
    pub url: url::Url,
    /// Any of `upload`, `yank`, `unyank`, `delete`.
    pub events: Vec<String>,
    /// The environment variable holding the signing secret.
    pub secret_env: String,
}

/// A resolved webhook.
#[derive(Clone)]
pub struct Webhook {
    pub name: String,
    pub url: url::Url,
    /// Of `WEBHOOK_EVENTS`.
    pub events: Vec<&'static str>,
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        // Never the secret, nor the URL's path (chat webhooks carry a secret there).
        f.debug_struct("Webhook").field("name", &self.name).field("host", &self.url.host_str()).finish()
    }
}

impl Webhook {
    pub fn from_config(c: &WebhookConfig) -> Result<Webhook, String> {
        let name = c.name.clone().unwrap_or_else(|| c.url.host_str().unwrap_or("webhook").to_string());
        let at = |what: String| format!("[[webhooks]] `{name}`: {what}");
        if !matches!(c.url.scheme(), "http" | "https") {
            return Err(at("the url must be http or https".into()));
        }
        let events = c
            .events
            .iter()
            .map(|e| {
                WEBHOOK_EVENTS
                    .iter()
                    .copied()
                    .find(|known| known == e)
                    .ok_or_else(|| at(format!("unknown event `{e}`; use {}", WEBHOOK_EVENTS.join(", "))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Err(at("list the events to send in `events`".into()));
        }
        let secret = std::env::var(&c.secret_env)
            .map_err(|_| at(format!("environment variable `{}` (secret_env) is not set", c.secret_env)))?;
        if secret.len() < 16 {
            return Err(at("the signing secret is shorter than 16 characters".into()));
        }
        Ok(Webhook { name, url: c.url.clone(), events, secret: Arc::from(secret.into_bytes()) })
    }
}
