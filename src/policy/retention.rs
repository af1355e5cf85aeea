//! Retention of private packages (issue 23): which uploaded files a project's policy lets go.
//!
//! `[projects.<id>] retention = { keep_versions = 20, delete_prereleases_after = "30d" }`:
//! of each package, the files of versions older than the newest `keep_versions` go, and so do
//! pre-releases (and dev releases) last uploaded longer ago than `delete_prereleases_after`,
//! unless that pre-release is the package's newest version (a package never vanishes whole).
//! The newest version that is not yanked (a final release, when there is one) always stays:
//! clients can still install something.
//! Upstream-cached files are never touched: this sees private records only. A version that
//! does not parse (PEP 440) is never deleted. This file decides; `cache::retention` deletes.

use std::time::{Duration, SystemTime};

use pep440_rs::Version;
use serde::Deserialize;

use crate::index::ProjectName;

/// One uploaded file, as far as retention cares.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub filename: String,
    pub version: String,
    pub sha256: String,
    /// RFC 3339.
    pub upload_time: String,
    pub yanked: bool,
}

/// `retention = { … }` in a project's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep this many newest versions of each package (at least 1).
    pub keep_versions: Option<usize>,
    /// Delete pre-releases uploaded longer ago than this.
    #[serde(default, with = "humantime_serde")]
    pub delete_prereleases_after: Option<Duration>,
}

impl Retention {
    pub fn check(&self) -> Result<(), String> {
        if self.keep_versions == Some(0) {
            return Err("retention.keep_versions must be at least 1 (to delete a package, delete its files)".into());
        }
        if self.keep_versions.is_none() && self.delete_prereleases_after.is_none() {
            return Err("retention needs keep_versions, delete_prereleases_after, or both".into());
        }
        Ok(())
    }
}

/// A file the policy lets go, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub name: ProjectName,
    pub filename: String,
    pub sha256: String,
    pub version: String,
    pub why: String,
}

/// The files of one package that `policy` deletes at `now`.
pub fn plan(policy: &Retention, name: &ProjectName, files: &[Uploaded], now: SystemTime) -> Vec<Doomed> {
    let mut versions: Vec<(Version, &str)> = Vec::new();
    for f in files {
        if let Ok(v) = f.version.parse::<Version>()
            && !versions.iter().any(|(seen, _)| *seen == v)
        {
            versions.push((v, f.version.as_str()));
        }
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0)); // newest first
    let newest = versions.first().map(|(v, _)| v.clone());
    // The newest version a client installs by default (not yanked; a final release when there
    // is one) is never deleted, whatever the policy.
    let installable: Vec<Version> =
        files.iter().filter(|f| !f.yanked).filter_map(|f| f.version.parse::<Version>().ok()).collect();
    let newest_installable =
        installable.iter().filter(|v| !v.any_prerelease()).max().or_else(|| installable.iter().max()).cloned();
    let mut doomed = Vec::new();
    for (rank, (version, _)) in versions.iter().enumerate() {
        let of_version: Vec<&Uploaded> =
            files.iter().filter(|f| f.version.parse::<Version>().is_ok_and(|v| v == *version)).collect();
        let why = if Some(version) == newest_installable.as_ref() {
            None
        } else if policy.keep_versions.is_some_and(|keep| rank >= keep) {
            Some(format!("older than the newest {} versions", policy.keep_versions.unwrap_or_default()))
        } else if let Some(after) = policy.delete_prereleases_after
            && (version.any_prerelease())
            && Some(version) != newest.as_ref()
            && of_version.iter().all(|f| uploaded_before(f, now, after))
        {
            Some(format!("a pre-release uploaded more than {} ago", humantime::format_duration(after)))
        } else {
            None
        };
        if let Some(why) = why {
            doomed.extend(of_version.iter().map(|f| Doomed {
                name: name.clone(),
                filename: f.filename.clone(),
                sha256: f.sha256.clone(),
                version: f.version.clone(),
                why: why.clone(),
            }));
        }
    }
    doomed
}

/// Was the file uploaded longer than `after` before `now`? A time that does not parse counts
/// as recent (never deleted for its age).
fn uploaded_before(f: &Uploaded, now: SystemTime, after: Duration) -> bool {
    humantime::parse_rfc3339_weak(f.upload_time.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(&f.upload_time))
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age > after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: &str, kind: &str, days_ago: u64, now: SystemTime) -> Uploaded {
        let at = now - Duration::from_secs(days_ago * 86_400);
        Uploaded {
            filename: format!("pkg-{version}{kind}"),
            version: version.into(),
            sha256: format!("{version}{kind}"),
            upload_time: humantime::format_rfc3339_micros(at).to_string(),
            yanked: false,
        }
    }

    fn names(d: &[Doomed]) -> Vec<&str> {
        d.iter().map(|d| d.filename.as_str()).collect()
    }

    #[test]
    fn the_newest_versions_stay_by_pep440_order_not_upload_order() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let name = ProjectName::parse("pkg").unwrap();
        let files = vec![
            file("1.10", ".tar.gz", 9, now),
            file("1.10", "-py3-none-any.whl", 9, now),
            file("1.9", ".tar.gz", 1, now), // uploaded last, still older by version
            file("1.2", ".tar.gz", 20, now),
            file("2.0rc1", ".tar.gz", 3, now),
            file("not a version", ".tar.gz", 100, now),
        ];
        let keep2 = Retention { keep_versions: Some(2), delete_prereleases_after: None };
        assert_eq!(names(&plan(&keep2, &name, &files, now)), ["pkg-1.9.tar.gz", "pkg-1.2.tar.gz"]);
        let keep1 = Retention { keep_versions: Some(1), delete_prereleases_after: None };
        // 2.0rc1 is the newest version, 1.10 the newest final release: both stay.
        assert_eq!(names(&plan(&keep1, &name, &files, now)), ["pkg-1.9.tar.gz", "pkg-1.2.tar.gz"]);
        let finals: Vec<Uploaded> = files.iter().filter(|f| f.version != "2.0rc1").cloned().collect();
        assert_eq!(plan(&keep1, &name, &finals, now).len(), 2, "1.10 is the newest: 1.9 and 1.2 go");
        let mut two_files = finals.clone();
        two_files.retain(|f| f.version != "1.10");
        two_files.push(file("1.0", ".tar.gz", 30, now));
        two_files.push(file("1.0", "-py3-none-any.whl", 30, now));
        let doomed = plan(&keep1, &name, &two_files, now);
        assert_eq!(doomed.len(), 3, "both files of 1.0 go too: {doomed:?}");
        // With 1.10 and 1.9 yanked, 1.2 is the newest installable version: it stays.
        let mut yanked = files.clone();
        yanked.iter_mut().filter(|f| f.version == "1.10" || f.version == "1.9").for_each(|f| f.yanked = true);
        let doomed = plan(&keep2, &name, &yanked, now);
        assert_eq!(names(&doomed), ["pkg-1.9.tar.gz"], "{doomed:?}");
        let keep9 = Retention { keep_versions: Some(9), delete_prereleases_after: None };
        assert!(plan(&keep9, &name, &files, now).is_empty());
        assert!(plan(&keep2, &name, &[], now).is_empty());
    }

    #[test]
    fn old_prereleases_go_unless_they_are_the_newest_version() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let name = ProjectName::parse("pkg").unwrap();
        let month = Duration::from_secs(30 * 86_400);
        let policy = Retention { keep_versions: None, delete_prereleases_after: Some(month) };
        let files = vec![
            file("1.0a1", ".tar.gz", 60, now),
            file("1.0.dev3", ".tar.gz", 45, now),
            file("1.0b1", ".tar.gz", 10, now), // recent: stays
            file("1.0", ".tar.gz", 40, now),   // a release: stays however old
            file("2.0a1", ".tar.gz", 90, now), // the newest version: stays
        ];
        assert_eq!(names(&plan(&policy, &name, &files, now)), ["pkg-1.0a1.tar.gz", "pkg-1.0.dev3.tar.gz"]);
        // Exactly at the limit: not yet.
        let edge = vec![file("0.1a1", ".tar.gz", 30, now), file("1.0", ".tar.gz", 1, now)];
        assert!(plan(&policy, &name, &edge, now).is_empty());
        assert_eq!(plan(&policy, &name, &edge, now + Duration::from_secs(1)).len(), 1);
    }
}
