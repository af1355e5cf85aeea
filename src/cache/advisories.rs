//! The engine's side of advisories (issue 25): the imported set in force, reloaded when the
//! store's record changes (another process imported), and its `MAL-` records turned into
//! block rules for upstream files.

use std::sync::{Arc, RwLock};

use pep440_rs::Version;

use super::Cache;
use crate::advisories::{Advisory, Db, Kind, Policy};

/// The advisories in force: the imported set with the version of the record naming it, and
/// the `[advisories]` policy (both replaced whole: an import, a SIGHUP).
pub(super) struct AdvisoryState {
    db: RwLock<(Arc<Db>, Option<String>)>,
    policy: RwLock<Arc<Policy>>,
}

impl AdvisoryState {
    pub(super) fn new(policy: Policy) -> AdvisoryState {
        AdvisoryState { db: RwLock::default(), policy: RwLock::new(Arc::new(policy)) }
    }

    fn db(&self) -> Arc<Db> {
        self.db.read().expect("advisories lock").0.clone()
    }

    fn version(&self) -> Option<String> {
        self.db.read().expect("advisories lock").1.clone()
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("advisory policy lock").clone()
    }
}
use crate::index::ProjectName;
use crate::policy::block::{AdvisoryRule, AdvisoryRules};

impl Cache {
    /// Reads the advisories again if their record changed in the store (a no-op otherwise:
    /// one record read). A set that cannot be read leaves the one in force, logged.
    pub async fn reload_advisories(&self) {
        let known = self.advisory_state.version();
        let now = match crate::cache::advisory_store::version(&*self.store).await {
            Ok(now) if now == known => return,
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot check the advisories in the store; keeping the ones in force");
                return;
            }
        };
        match crate::cache::advisory_store::load(&*self.store).await {
            Ok((db, version)) => {
                // The set exists nowhere else once imported: never evicted.
                if let Some(sha) = &db.sha256 {
                    self.bounded.pin(sha).await;
                }
                tracing::info!(advisories = db.len(), "advisories loaded");
                metrics::gauge!("larder_advisories").set(db.len() as f64);
                *self.advisory_state.db.write().expect("advisories lock") = (Arc::new(db), version);
                self.apply_advisories();
            }
            // Not retried until the record changes again (a broken set costs one read, not one
            // every check).
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the advisories in the store; keeping the ones in force until the next import");
                self.advisory_state.db.write().expect("advisories lock").1 = now;
            }
        }
    }

    /// Where `[advisories] url` is set: imports OSV's export when the set in the store is
    /// older than `refresh` (any replica's import counts), then loads it.
    pub async fn refresh_advisories_from_url(&self) {
        let policy = self.advisory_state.policy();
        let Some(url) = &policy.url else { return };
        let spool = self.config.spool_dir();
        match crate::cache::advisory_store::refresh_from(&*self.store, url, policy.refresh, &spool).await {
            Ok(Some(done)) => {
                tracing::info!(%url, added = done.added, updated = done.updated, withdrawn = done.withdrawn, skipped = done.skipped, total = done.total, "advisories refreshed");
                metrics::counter!("larder_advisory_refreshes_total", "result" => "ok").increment(1);
                self.reload_advisories().await;
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("larder_advisory_refreshes_total", "result" => "failed").increment(1);
                tracing::warn!(%url, error = %format!("{e:#}"), "cannot refresh the advisories; the ones in force stay");
            }
        }
    }

    /// A new `[advisories]` policy (SIGHUP): the block rules are made again from it.
    pub fn replace_advisory_policy(&self, policy: Policy) {
        *self.advisory_state.policy.write().expect("advisory policy lock") = Arc::new(policy);
        self.apply_advisories();
    }

    /// The block rules from the advisories and the policy in force; break-glass entries are
    /// logged, so that what is let through is on record.
    fn apply_advisories(&self) {
        let (policy, db) = (self.advisory_state.policy(), self.advisories());
        let now = self.clock.unix();
        for a in &policy.allow {
            let active = now < a.expires_unix;
            let versions = a.versions.as_ref().map_or("every version".to_string(), |v| v.to_string());
            tracing::warn!(advisory = %a.id, %versions, reason = %a.reason, expires_unix = a.expires_unix, active, known = db.get(&a.id).is_some(), "advisory break-glass entry in force ([[advisories.allow]])");
        }
        let rules = block_rules(&db, &policy);
        tracing::info!(rules = rules.len(), "advisory block rules in force");
        self.blocks.set_advisories(rules);
    }

    /// Whether advisories apply to a page or file from `private` uploads (`match_private`).
    pub(crate) fn advisories_apply(&self, private: bool) -> bool {
        !private || self.advisory_state.policy().match_private
    }

    /// The advisories in force.
    pub fn advisories(&self) -> Arc<Db> {
        self.advisory_state.db()
    }

    /// The advisories that affect `version` of `name` (`None`: every one of the name).
    pub fn advisories_for(&self, name: &ProjectName, version: Option<&str>) -> Vec<Arc<Advisory>> {
        let db = self.advisories();
        match version {
            None => db.affecting_any(name),
            Some(v) => db.affecting(name, v.parse::<Version>().ok().as_ref()),
        }
    }
}

/// Default policy: every `MAL-` advisory blocks the versions it names; vulnerabilities are
/// reported, not blocked.
/// with `[advisories] block_severity`, vulnerabilities from that CVSS score block too.
fn block_rules(db: &Db, policy: &Policy) -> AdvisoryRules {
    let mut rules = AdvisoryRules::default();
    for a in db.all().filter(|a| policy.blocks(a)) {
        let reason = match a.kind {
            Kind::Malicious => {
                let summary = if a.summary.is_empty() { "a malicious package" } else { a.summary.as_str() };
                format!("advisory {} (malicious package): {summary}", a.id)
            }
            Kind::Vulnerability => format!(
                "advisory {} (vulnerability, CVSS {:.1}, at or above block_severity): {}",
                a.id,
                a.score.unwrap_or_default(),
                a.summary
            ),
        };
        let allows: Vec<_> = policy.allow.iter().filter(|al| al.id == a.id).cloned().collect();
        let mut names: Vec<&ProjectName> = a.names().collect();
        names.dedup();
        for name in names {
            let (advisory, reason, kind, allows) = (a.clone(), reason.clone(), a.kind.as_str(), allows.clone());
            rules.add(name.clone(), AdvisoryRule { advisory, reason, kind, allows });
        }
    }
    rules
}
