//! PEP 740 provenance passed through (issue 14): `files/<sha256>/<file>.provenance` answers
//! the upstream's provenance object for a file its page links one for, byte for byte. It is
//! fetched on first request (coalesced), stored as a record so that it survives restarts and
//! air gaps, and refreshed after `index_ttl` like a page, because it may change upstream
//! (PROV-03); when the upstream fails, the stored copy is served.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::records::{self, ProvenanceRecord, RecordKey};
use super::{Cache, Error, Outcome, Reader};
use crate::coalesce::{Coalescer, SharedResult};
use crate::index::FileKey;

/// What the engine keeps for provenance: when stored objects were last found unchanged, the
/// fetches under way, and the origins pages with provenance are rendered for.
pub(super) struct Provenance {
    /// By file sha256: when its stored object was last found unchanged upstream.
    checked: Mutex<HashMap<String, u64>>,
    /// Fetches under way, one per URL.
    flight: std::sync::Arc<Coalescer<String, SharedResult<Bytes, super::fill::Error>>>,
    pub(super) origins: Origins,
}

impl Provenance {
    pub(super) fn new(tasks: tokio_util::task::TaskTracker) -> Provenance {
        Provenance { checked: Mutex::default(), flight: Coalescer::new(tasks), origins: Origins::default() }
    }

    fn checked_at(&self, sha: &str) -> Option<u64> {
        self.checked.lock().expect("provenance lock").get(sha).copied()
    }

    /// Found unchanged upstream at `now` (kept in memory: rewriting an unchanged record would
    /// only grow the store).
    fn unchanged_at(&self, sha: &str, now: u64) {
        let mut checked = self.checked.lock().expect("provenance lock");
        if checked.len() >= 10_000 {
            checked.clear(); // a bound; forgetting only means one more write
        }
        checked.insert(sha.to_string(), now);
    }
}

impl Cache {
    /// The provenance object of `dist_name` (listed under `key`), and how it was produced.
    pub async fn provenance(&self, reader: &Reader, key: &FileKey, dist_name: &str) -> Result<(Bytes, Outcome), Error> {
        let none = || Error::NotFound(format!("no provenance is known for `{dist_name}`"));
        self.refresh_claims(&reader.projects, dist_name, true).await?;
        // PROV-05: private uploads get none (Larder verifies no attestations).
        if !matches!(key, FileKey::Sha256(_)) || self.private.claimed_by_file(&reader.projects, dist_name).is_some() {
            return Err(none());
        }
        let (project, dist) = self.find_upstream(key, dist_name).await.map_err(|e| match e {
            Error::NotFound(_) => none(),
            e => e,
        })?;
        let sha = dist.sha256().ok_or_else(none)?.to_string();
        let url = dist.provenance.clone().ok_or_else(none)?;
        let record_key = RecordKey::Provenance(sha.clone()).to_string();
        let stored = match self.store.get_record(&record_key).await {
            Ok(Some(b)) => records::decode_provenance(&b).ok(),
            _ => None,
        };
        let now = self.clock.unix();
        // When it was last confirmed upstream: the record's time, or a later check that found it
        // unchanged (kept in memory: rewriting an unchanged record would only grow the store).
        let confirmed = |r: &ProvenanceRecord| self.provenance.checked_at(&sha).unwrap_or(0).max(r.fetched_unix);
        let fresh = |r: &ProvenanceRecord| now.saturating_sub(confirmed(r)) < self.config.index_ttl.as_secs();
        // The same rules as the file itself: a blocked or held-back file has no provenance here.
        self.check_upstream_file(reader, &project, &dist, None)?;
        // Offline (or no client for it): what is stored is what there is.
        let upstream = self.allow_upstream_file(reader, &project, &dist).ok();
        if let Some(r) = &stored
            && (fresh(r) || upstream.is_none())
        {
            return Ok((Bytes::from(r.body.clone()), Outcome::Hit));
        }
        let upstream = upstream.ok_or_else(none)?;
        let fetched = self
            .provenance
            .flight
            .run(url.clone(), move || async move { Ok(upstream.fetch_provenance(&url).await?) })
            .await;
        match fetched {
            Ok(body) => {
                let unchanged = stored.as_ref().is_some_and(|r| r.body.as_bytes() == &body[..]);
                if unchanged {
                    self.provenance.unchanged_at(&sha, now);
                    return Ok((body, Outcome::Revalidated));
                }
                // The body parsed as JSON, so it is UTF-8: kept byte for byte (PROV-03).
                let record = ProvenanceRecord { fetched_unix: now, body: String::from_utf8_lossy(&body).into_owned() };
                let bytes = serde_json::to_vec(&record).expect("a provenance record serializes");
                if let Err(e) = self.store.put_record(&record_key, bytes).await {
                    tracing::warn!(file = %dist_name, error = %e, "cannot store the provenance; serving it anyway");
                }
                Ok((body, Outcome::Miss))
            }
            Err(e) => match stored {
                Some(r) => {
                    tracing::warn!(file = %dist_name, error = %e, "upstream failed; serving the stored provenance");
                    Ok((Bytes::from(r.body), Outcome::Stale))
                }
                None => Err(Error::Unavailable(e.to_string())),
            },
        }
    }
}

/// How many origins (scheme, Host and route) get pages with provenance links of their own.
/// PEP 740 wants those links absolute, so a page with provenance is rendered per origin; a
/// client rotating its `Host` header must not make every request a new rendering of a page of
/// thousands of files (issue 22, item 7). `public_url` makes it one origin for everyone.
const MAX_ORIGINS: usize = 3;

/// The origins admitted so far: the first `MAX_ORIGINS` that asked. Others get the page
/// without provenance links (still a whole, valid index page), and one warning says why.
#[derive(Default)]
pub(super) struct Origins(Mutex<(Vec<String>, bool)>);

impl Origins {
    /// May pages be rendered with provenance links under `files_base`?
    pub(super) fn admit(&self, files_base: &str) -> bool {
        let mut guard = self.0.lock().expect("origins lock");
        let (known, warned) = &mut *guard;
        if known.iter().any(|o| o == files_base) {
            return true;
        }
        if known.len() < MAX_ORIGINS {
            known.push(files_base.to_string());
            return true;
        }
        if !*warned {
            *warned = true;
            tracing::warn!(
                origin = %crate::upstream::guard::redact(files_base),
                "pages are asked for under more than {MAX_ORIGINS} origins (Host headers): further ones get no provenance links; set public_url to the address clients use"
            );
        }
        metrics::counter!("larder_provenance_origins_refused_total").increment(1);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_origins_get_their_own_rendering() {
        let origins = Origins::default();
        for i in 0..MAX_ORIGINS {
            assert!(origins.admit(&format!("http://h{i}/files/")));
        }
        assert!(!origins.admit("http://evil/files/"));
        assert!(!origins.admit("http://evil2/files/"));
        assert!(origins.admit("http://h0/files/"), "a known origin stays admitted");
    }
}
