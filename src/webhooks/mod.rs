//! Webhooks (issue 23): each audited write that succeeded (upload, yank, unyank, delete) is
//! POSTed as JSON to the `[[webhooks]]` subscribed to it, signed with HMAC-SHA256 over the
//! body (`X-Larder-Signature: sha256=<hex>`, the secret from `secret_env`).
//!
//! Delivery never delays the write that caused it: the audit log hands the event over
//! (`try_send` into a bounded queue per webhook; a full queue drops it, counted), and one task
//! per webhook delivers in order, retrying with backoff. Failures are counted in /metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::audit::{Event, Listener, Outcome};
use crate::config::publishing::Webhook;

/// Events waiting per webhook; past it they are dropped (and counted), never buffered without end.
const QUEUE: usize = 1024;
/// Attempts per event, and the pause before the first retry (doubled each time).
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// `sha256=<hex>` of HMAC-SHA256(secret, body): what a receiver recomputes and compares.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The running webhooks: one queue and one delivery task each.
pub struct Webhooks {
    queues: Mutex<Vec<(Webhook, mpsc::Sender<Arc<Event>>)>>,
    tasks: tokio_util::task::TaskTracker,
}

impl Webhooks {
    /// Starts a delivery task per webhook (on the current runtime).
    pub fn start(hooks: &[Webhook]) -> anyhow::Result<Arc<Webhooks>> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("larder/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let tasks = tokio_util::task::TaskTracker::new();
        let mut queues = Vec::new();
        for hook in hooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.spawn(deliver_all(hook.clone(), client.clone(), rx));
            queues.push((hook.clone(), tx));
        }
        Ok(Arc::new(Webhooks { queues: Mutex::new(queues), tasks }))
    }

    /// Stops taking events and waits (up to `within`) for the queued ones to be delivered.
    pub async fn close(&self, within: Duration) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait()).await.is_err() {
            tracing::warn!("webhook deliveries still queued at shutdown are dropped");
        }
    }
}

impl Listener for Webhooks {
    fn event(&self, event: &Event) {
        if event.result != Outcome::Ok {
            return;
        }
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut shared = None;
        for (hook, tx) in queues.iter().filter(|(h, _)| h.events.contains(&event.action.as_str())) {
            let event = shared.get_or_insert_with(|| Arc::new(event.clone())).clone();
            if tx.try_send(event).is_err() {
                metrics::counter!("larder_webhook_dropped_total", "webhook" => hook.name.clone()).increment(1);
                tracing::warn!(webhook = %hook.name, "webhook queue full; event dropped");
            }
        }
    }
}

async fn deliver_all(hook: Webhook, client: reqwest::Client, mut rx: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = rx.recv().await {
        let delivery = format!("{:032x}", rand::random::<u128>());
        let mut body = serde_json::to_value(&*event).expect("an event encodes");
        body["event"] = event.action.as_str().into();
        body["delivery"] = delivery.clone().into();
        let body = body.to_string();
        let signature = signature(&hook.secret, body.as_bytes());
        let mut pause = FIRST_RETRY;
        let mut outcome = "failed";
        for attempt in 1..=ATTEMPTS {
            let sent = client
                .post(hook.url.clone())
                .header("content-type", "application/json")
                .header("x-larder-event", event.action.as_str())
                .header("x-larder-delivery", &delivery)
                .header("x-larder-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(r) if r.status().is_success() => {
                    outcome = "delivered";
                    break;
                }
                Ok(r) => format!("answered {}", r.status()),
                // Without the URL: a webhook URL often carries a secret of its own.
                Err(e) => e.without_url().to_string(),
            };
            if attempt == ATTEMPTS {
                tracing::warn!(webhook = %hook.name, %delivery, error = %why, "webhook delivery failed; giving up");
                break;
            }
            tracing::info!(webhook = %hook.name, %delivery, attempt, error = %why, "webhook delivery failed; retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        metrics::counter!("larder_webhook_deliveries_total", "webhook" => hook.name.clone(), "result" => outcome)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
