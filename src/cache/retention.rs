//! Retention applied (issue 23): the plan from `crate::retention`, carried out with the same
//! delete a client's `DELETE` runs (the name stays claimed, a tombstone stays), each delete
//! audited, then one `retention` event for the run.

use super::{Cache, Error};
use crate::audit::{self, Event, Outcome, Who};
use crate::policy::retention::{Doomed, Uploaded, plan};

/// A background run deletes at most this many files of a package at once, unless that is at
/// most half of its files: a burst of bogus high versions (a leaked upload token) must not
/// make the job delete a package's real releases; an operator's `larder retention` can.
const CAREFUL_MAX: usize = 5;

/// What a run found, and what it deleted.
pub struct RetentionRun {
    /// Every file the policy lets go (with `dry_run`, nothing was deleted).
    pub doomed: Vec<Doomed>,
    /// How many were deleted.
    pub deleted: usize,
    /// Deletes that failed, with why (the next run tries again).
    pub failed: Vec<(Doomed, String)>,
}

impl Cache {
    /// Applies `project`'s retention policy: lists what it lets go and, unless `dry_run`,
    /// deletes it. `careful` (the background job): a package would lose more than
    /// `CAREFUL_MAX` files and more than half of them is left alone. `who` and `peer` are for
    /// the audit log.
    pub async fn apply_retention(
        &self,
        project: &str,
        dry_run: bool,
        careful: bool,
        who: Who,
        peer: Option<std::net::IpAddr>,
    ) -> Result<RetentionRun, Error> {
        let policy = self.config.projects.get(project).and_then(|p| p.retention).ok_or_else(|| {
            Error::NotFound(format!(
                "project `{project}` has no retention policy ([projects.{project}] retention = {{ … }})"
            ))
        })?;
        // Replicas: the records as the bucket has them now.
        if self.private.is_shared() {
            self.private.refresh_names().await.map_err(Error::from)?;
        }
        let now = self.clock.system_time();
        let mut held = Vec::new();
        let doomed: Vec<Doomed> = self
            .private
            .files_of(project)
            .iter()
            .flat_map(|(name, files)| {
                let files: Vec<Uploaded> = files
                    .iter()
                    .map(|f| Uploaded {
                        filename: f.filename.clone(),
                        version: f.version.clone(),
                        sha256: f.sha256.clone(),
                        upload_time: f.upload_time.clone(),
                        yanked: !matches!(f.yanked, crate::index::Yanked::No),
                    })
                    .collect();
                let doomed = plan(&policy, name, &files, now);
                if careful && doomed.len() > CAREFUL_MAX && doomed.len() * 2 > files.len() {
                    held.push(format!(
                        "`{name}`: the policy lets {} of its {} files go at once; run `larder retention --project {project}` to confirm",
                        doomed.len(),
                        files.len()
                    ));
                    return Vec::new();
                }
                doomed
            })
            .collect();
        for why in &held {
            tracing::warn!(%project, "retention held back: {why}");
            self.audit.record(
                Event::new(audit::Action::Retention, who.clone())
                    .project(project)
                    .peer(peer)
                    .ended(Outcome::Refused, Some(why.clone())),
            );
        }
        let mut run = RetentionRun { doomed: doomed.clone(), deleted: 0, failed: Vec::new() };
        if !dry_run {
            for d in doomed {
                let result = self.delete(project, &d.sha256, &d.filename).await;
                let event = Event::new(audit::Action::Delete, who.clone())
                    .project(project)
                    .file(&d.filename, Some(&d.sha256))
                    .peer(peer);
                match result {
                    Ok(()) => {
                        self.audit.record(event.ended(Outcome::Ok, Some(format!("retention: {}", d.why))));
                        run.deleted += 1;
                    }
                    // Gone already (another replica's run): nothing to do.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => {
                        self.audit.record(event.ended(Outcome::Failed, Some(format!("retention: {e}"))));
                        run.failed.push((d, e.to_string()));
                    }
                }
            }
        }
        let summary = match dry_run {
            true => format!("dry run: {} files would be deleted", run.doomed.len()),
            false => format!("{} files deleted, {} failed", run.deleted, run.failed.len()),
        };
        let result = if run.failed.is_empty() { Outcome::Ok } else { Outcome::Failed };
        self.audit
            .record(Event::new(audit::Action::Retention, who).project(project).peer(peer).ended(result, Some(summary)));
        Ok(run)
    }

    /// The projects with a retention policy (the background job's list).
    pub fn retained_projects(&self) -> Vec<String> {
        self.config.projects.iter().filter(|(_, p)| p.retention.is_some()).map(|(id, _)| id.clone()).collect()
    }
}
