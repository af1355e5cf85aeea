//! PEP 740 provenance passed through (issue 14): `files/<sha256>/<file>.provenance` answers
//! the upstream's provenance object for a file its page links one for, byte for byte. It is
//! fetched on first request (coalesced), stored as a record so that it survives restarts and
//! air gaps, and refreshed after `index_ttl` like a page, because it may change upstream
//! (PROV-03); when the upstream fails, the stored copy is served.

use bytes::Bytes;

use super::records::{self, ProvenanceRecord, RecordKey};
use super::{Cache, Error, Outcome, Reader};
use crate::index::FileKey;

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
        let confirmed = |r: &ProvenanceRecord| {
            let checked = self.provenance_checked.lock().expect("provenance lock").get(&sha).copied();
            checked.unwrap_or(0).max(r.fetched_unix)
        };
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
            .provenance_flight
            .run(url.clone(), move || async move { Ok(upstream.fetch_provenance(&url).await?) })
            .await;
        match fetched {
            Ok(body) => {
                let unchanged = stored.as_ref().is_some_and(|r| r.body.as_bytes() == &body[..]);
                if unchanged {
                    let mut checked = self.provenance_checked.lock().expect("provenance lock");
                    if checked.len() >= 10_000 {
                        checked.clear(); // a bound; forgetting only means one more write
                    }
                    checked.insert(sha.clone(), now);
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
