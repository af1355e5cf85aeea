//! The engine's side of advisories (issue 25): the imported set in force, reloaded when the
//! store's record changes (another process imported), and its `MAL-` records turned into
//! block rules for upstream files.

use std::sync::Arc;

use pep440_rs::Version;

use super::Cache;
use crate::advisories::{Advisory, Db, Kind};
use crate::index::ProjectName;
use crate::policy::block::{AdvisoryRule, AdvisoryRules};

impl Cache {
    /// Reads the advisories again if their record changed in the store (a no-op otherwise:
    /// one record read). A set that cannot be read leaves the one in force, logged.
    pub async fn reload_advisories(&self) {
        let known = self.advisories.read().expect("advisories lock").1.clone();
        let now = match crate::advisories::version(&*self.store).await {
            Ok(now) if now == known => return,
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot check the advisories in the store; keeping the ones in force");
                return;
            }
        };
        match crate::advisories::load(&*self.store).await {
            Ok((db, version)) => {
                // The set exists nowhere else once imported: never evicted.
                if let Some(sha) = &db.sha256 {
                    self.bounded.pin(sha).await;
                }
                let rules = block_rules(&db);
                tracing::info!(advisories = db.len(), blocking = rules.len(), "advisories loaded");
                metrics::gauge!("larder_advisories").set(db.len() as f64);
                self.blocks.set_advisories(rules);
                *self.advisories.write().expect("advisories lock") = (Arc::new(db), version);
            }
            // Not retried until the record changes again (a broken set costs one read, not one
            // every check).
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the advisories in the store; keeping the ones in force until the next import");
                self.advisories.write().expect("advisories lock").1 = now;
            }
        }
    }

    /// The advisories in force.
    pub fn advisories(&self) -> Arc<Db> {
        self.advisories.read().expect("advisories lock").0.clone()
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
fn block_rules(db: &Db) -> AdvisoryRules {
    let mut rules = AdvisoryRules::default();
    for a in db.of_kind(Kind::Malicious) {
        let summary = if a.summary.is_empty() { "a malicious package" } else { a.summary.as_str() };
        let reason = format!("advisory {} (malicious package): {summary}", a.id);
        let mut names: Vec<&ProjectName> = a.names().collect();
        names.dedup();
        for name in names {
            let rule = AdvisoryRule { advisory: a.clone(), reason: reason.clone(), kind: Kind::Malicious.as_str() };
            rules.add(name.clone(), rule);
        }
    }
    rules
}
