//! Who may start how many upstream downloads at once (issue 22, item 1).
//!
//! A download holds an upstream permit until it ends. Two rules keep a few clients from
//! holding them all: a client (an address, or a token when it sent one) may have at most
//! `max_downloads_per_client` downloads of large files under way that it started (joining a
//! download another client started is free), and a download nobody reads any more goes on
//! only within a small budget for background work (`Fills` cancels the rest).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Files at least this large (or of unknown size) count against a client's downloads; smaller
/// ones end quickly and are bounded by the upstream permits alone.
pub const LARGE_FILE: u64 = 16 * 1024 * 1024;

/// How long a request beyond its client's cap waits for one of that client's downloads to end
/// before it is answered 503. It holds no upstream permit meanwhile.
pub const CLIENT_WAIT: Duration = Duration::from_secs(300);

/// Whom a download is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An anonymous client by its address; IPv6 by its /64, which one host usually holds whole.
    Addr(IpAddr),
    /// A client that sent a valid token, by the token's name (a build farm behind one NAT).
    Token(String),
}

impl ClientKey {
    pub fn from_addr(ip: IpAddr) -> ClientKey {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let seg = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        ClientKey::Addr(ip)
    }
}

/// A client has as many large downloads under way as it may start (503, Retry-After).
#[derive(Debug, thiserror::Error)]
#[error(
    "this client already has {limit} downloads of large files from the upstream under way (max_downloads_per_client); retry when one ends"
)]
pub struct Busy {
    pub limit: usize,
}

/// The downloads each client has under way.
pub struct Downloads {
    limit: usize,
    active: Mutex<HashMap<ClientKey, usize>>,
    freed: Notify,
}

/// One download counted against a client; dropping it frees the place.
pub struct Slot {
    downloads: Arc<Downloads>,
    key: ClientKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.downloads.active.lock().expect("downloads lock");
        if let Some(n) = active.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.key);
            }
        }
        drop(active);
        self.downloads.freed.notify_waiters();
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl Downloads {
    /// `limit` downloads per client; 0 means no limit.
    pub fn new(limit: usize) -> Arc<Downloads> {
        Arc::new(Downloads { limit, active: Mutex::new(HashMap::new()), freed: Notify::new() })
    }

    fn try_slot(self: &Arc<Self>, key: &ClientKey) -> Option<Slot> {
        let mut active = self.active.lock().expect("downloads lock");
        let n = active.entry(key.clone()).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot { downloads: Arc::clone(self), key: key.clone() })
    }

    /// A place for one more download of `key`'s, waiting up to `wait` for one to free.
    pub async fn slot(self: &Arc<Self>, key: &ClientKey, wait: Duration) -> Result<Slot, Busy> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a place freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_slot(key) {
                return Ok(slot);
            }
            metrics::counter!("larder_client_download_waits_total").increment(1);
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                metrics::counter!("larder_client_download_refusals_total").increment(1);
                return Err(Busy { limit: self.limit });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = ClientKey::from_addr("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::from_addr("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientKey::from_addr("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = ClientKey::from_addr("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, ClientKey::from_addr("192.0.2.7".parse().unwrap()));
    }

    /// The cap holds per client, a freed place goes to a waiter, and a wait ends in `Busy`.
    #[tokio::test]
    async fn a_client_waits_for_its_own_downloads_only() {
        let downloads = Downloads::new(2);
        let me = ClientKey::from_addr("192.0.2.1".parse().unwrap());
        let other = ClientKey::Token("ci".into());
        let first = downloads.slot(&me, Duration::ZERO).await.unwrap();
        let _second = downloads.slot(&me, Duration::ZERO).await.unwrap();
        assert!(downloads.slot(&me, Duration::from_millis(50)).await.is_err(), "a third was allowed");
        let _theirs = downloads.slot(&other, Duration::ZERO).await.expect("another client is not limited by mine");
        let waiter = {
            let downloads = Arc::clone(&downloads);
            let me = me.clone();
            tokio::spawn(async move { downloads.slot(&me, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(third.is_ok(), "the freed place did not go to the waiter");
        assert!(Downloads::new(0).slot(&me, Duration::ZERO).await.is_ok(), "0 means no limit");
    }
}
