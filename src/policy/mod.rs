//! What a scope may be given of the upstreams (issue 14): which upstreams it uses, how long a
//! new release is held back (`min_release_age`), what is blocked, and the status of its
//! private projects. Pure rules and a pure page filter; the engine (`Cache`) applies them to
//! every page and every file request, and caches the filtered pages on the page itself.

pub mod block;
pub mod publishers;
pub mod retention;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use std::fmt::Write;

use serde::Deserialize;

use crate::index::{self, DistFile, NamePattern, ProjectName, ProjectPage, ProjectStatus, filename};
pub use block::{BlockConfig, BlockList, Blocks};

/// Files an upstream lists without an upload time, under a cooldown: hidden (the default:
/// an HTML upstream, which gives no times, must not switch the cooldown off, issue 22) or
/// shown (logged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownUploadTime {
    Show,
    #[default]
    Hide,
}

/// Files an upstream lists without a sha256: served (their hash is learned on download), or
/// refused and hidden. Unset: refused whenever the block list has sha256 rules, since such a
/// file cannot be checked against them before its bytes go out (issue 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnhashedFiles {
    Allow,
    Refuse,
}

/// The rules of one scope: a project, or a group of projects.
#[derive(Debug, Default)]
pub struct ScopeRules {
    /// Tells rule sets apart in the page view cache.
    pub id: u64,
    /// The upstreams this scope may be served from; `None`: all.
    pub upstreams: Option<BTreeSet<String>>,
    /// Overrides the upstream's and the global cooldown.
    pub min_release_age: Option<Duration>,
    pub exempt: Vec<NamePattern>,
    /// The status shown on this scope's private projects (PEP 792).
    pub status: Option<ProjectStatus>,
    /// A group's projects: its cooldown is the longest any of them would apply.
    pub members: Vec<Arc<ScopeRules>>,
}

impl ScopeRules {
    pub fn uses(&self, upstream: &str) -> bool {
        self.upstreams.as_ref().is_none_or(|set| set.contains(upstream))
    }
}

/// Every rule but the block list (which reloads): fixed for the life of the process.
#[derive(Debug, Default)]
pub struct Rules {
    pub min_release_age: Option<Duration>,
    pub exempt: Vec<NamePattern>,
    pub unknown_upload_time: UnknownUploadTime,
    /// `None`: refuse unhashed files while sha256 rules are in force.
    pub unhashed_files: Option<UnhashedFiles>,
    /// Per-upstream cooldowns, by upstream name.
    pub upstream_ages: BTreeMap<String, Duration>,
    /// By project id.
    pub projects: BTreeMap<String, Arc<ScopeRules>>,
    /// By group id.
    pub groups: BTreeMap<String, Arc<ScopeRules>>,
    /// Projects without settings of their own.
    pub default_scope: Arc<ScopeRules>,
}

impl Rules {
    pub fn for_project(&self, id: &str) -> Arc<ScopeRules> {
        self.projects.get(id).unwrap_or(&self.default_scope).clone()
    }

    pub fn for_group(&self, id: &str) -> Arc<ScopeRules> {
        self.groups.get(id).unwrap_or(&self.default_scope).clone()
    }

    /// The rules of a group: the strictest of its projects' (an upstream only if every
    /// project uses it, the longest cooldown, an exemption only if every project has it).
    pub fn combine(id: u64, members: &[Arc<ScopeRules>]) -> ScopeRules {
        let mut upstreams: Option<BTreeSet<String>> = None;
        for m in members {
            if let Some(set) = &m.upstreams {
                upstreams = Some(match upstreams {
                    None => set.clone(),
                    Some(acc) => acc.intersection(set).cloned().collect(),
                });
            }
        }
        // Cooldowns are decided per member (`Rules::cooldown`): a member without a setting of
        // its own inherits the upstream's or the global one, which may be the longest.
        ScopeRules { id, upstreams, members: members.to_vec(), ..ScopeRules::default() }
    }

    /// How long releases of `name`, served from `upstream`, are held back in `scope`.
    pub fn cooldown(&self, scope: &ScopeRules, upstream: &str, name: &ProjectName) -> Option<Duration> {
        if !scope.members.is_empty() {
            return scope.members.iter().filter_map(|m| self.cooldown(m, upstream, name)).max();
        }
        let age = scope
            .min_release_age
            .or_else(|| self.upstream_ages.get(upstream).copied())
            .or(self.min_release_age)
            .filter(|d| !d.is_zero())?;
        // Patterns are matched only when a cooldown applies at all (the hit path).
        (!self.exempt.iter().chain(&scope.exempt).any(|p| p.matches(name))).then_some(age)
    }
}

/// The rules that apply to one page for one scope at one moment.
pub struct Filter<'a> {
    pub cooldown: Option<Duration>,
    pub unknown: UnknownUploadTime,
    pub blocks: &'a BlockList,
    /// Shown on the page (a private project's configured status).
    pub status: Option<&'a ProjectStatus>,
    /// Seconds since the epoch.
    pub now: u64,
    /// Files listed without a sha256 are refused (`unhashed_files`).
    pub refuse_unhashed: bool,
    /// Advisory blocks apply (upstream files; a private upload is never matched against them).
    pub advisories: bool,
}

/// Why a file is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// On the block list: 403 with the reason.
    Blocked(String),
    /// Too new for the cooldown, or its upload time is unknown and such files are hidden: 404.
    Held(String),
    /// Named by an advisory that blocks (a malicious package): 403 with the advisory.
    Advisory { reason: String, kind: &'static str },
}

/// What a filter made of a page.
pub struct Filtered {
    /// `None`: every file stays.
    pub page: Option<ProjectPage>,
    /// When this result stops being true (a held-back file comes out of its cooldown), in
    /// seconds since the epoch; `u64::MAX`: never, by time.
    pub until: u64,
    /// The newest moment a file came out of its cooldown (the view changed then).
    pub released: u64,
    /// Files without an upload time shown although a cooldown applies.
    pub shown_unknown: usize,
}

impl Filter<'_> {
    /// Why `file` of project `name` may not be served, if it may not.
    /// `resolved_sha` is the file's sha256 when the page lists none (a `u-` key, resolved
    /// after a download): a sha256 block applies to it too.
    pub fn check(&self, name: &ProjectName, file: &DistFile, resolved_sha: Option<&str>) -> Result<(), Refusal> {
        if self.refuse_unhashed && file.sha256().is_none() {
            return Err(Refusal::Blocked(format!(
                "`{}` is listed upstream without a sha256, and this index refuses such files: they cannot be checked against its sha256 block rules (unhashed_files = \"refuse\")",
                file.filename
            )));
        }
        let by_resolved = resolved_sha.filter(|_| file.sha256().is_none()).and_then(|sha| self.blocks.sha256(sha));
        if let Some(reason) = by_resolved.or_else(|| self.blocks.file(name, file)) {
            return Err(Refusal::Blocked(format!("`{}` is blocked on this index: {reason}", file.filename)));
        }
        if self.advisories
            && let block::AdvisoryVerdict::Blocked(rule) = self.blocks.advisory(name, file, self.now)
        {
            let reason = format!("`{}` is blocked on this index: {}", file.filename, rule.reason);
            return Err(Refusal::Advisory { reason, kind: rule.kind });
        }
        let Some(age) = self.cooldown else { return Ok(()) };
        match file.upload_time.as_deref().and_then(index::parse_upload_time) {
            Some(uploaded) if uploaded.saturating_add(age.as_secs()) > self.now => {
                // Written with `write!`: an upload time past year 9999 (the upstream's word)
                // cannot be formatted, and must not panic.
                let mut until = String::new();
                let free =
                    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(uploaded.saturating_add(age.as_secs())));
                if free.is_none_or(|t| write!(until, "{}", humantime::format_rfc3339_seconds(t)).is_err()) {
                    until = "a date too far away to write".into();
                }
                Err(Refusal::Held(format!(
                    "`{}` was uploaded {} ago; this index holds new releases back for {} (min_release_age), until {until}",
                    file.filename,
                    humantime::format_duration(Duration::from_secs(self.now.saturating_sub(uploaded))),
                    humantime::format_duration(age),
                )))
            }
            None if self.unknown == UnknownUploadTime::Hide => Err(Refusal::Held(format!(
                "`{}` has no upload time upstream, and this index hides such files while new releases are held back (min_release_age_unknown = \"hide\")",
                file.filename
            ))),
            _ => Ok(()),
        }
    }

    /// Whether this filter can change `page` at all (no page copy is made otherwise).
    pub fn may_change(&self, name: &ProjectName) -> bool {
        self.cooldown.is_some() || self.blocks.touches(name) || self.status.is_some() || self.refuse_unhashed
    }

    /// The page as this scope sees it: blocked and held-back files gone, and with them the
    /// versions that have no file left (PEP 700 `versions`). `None`: nothing changes.
    pub fn apply(&self, page: &ProjectPage) -> Option<Filtered> {
        if !self.may_change(&page.name) {
            return None;
        }
        let mut until = u64::MAX;
        let mut released = 0;
        let mut shown_unknown = 0;
        let mut files = Vec::with_capacity(page.files.len());
        let mut hidden_versions = HashSet::new();
        let mut kept_versions = HashSet::new();
        for f in &page.files {
            let version = filename::version_of(&page.name, &f.filename).map(|v| normalize_version(&v));
            let uploaded = f.upload_time.as_deref().and_then(index::parse_upload_time);
            let refused = self.check(&page.name, f, None);
            // A file let through by a break-glass entry: this view stops being true when it expires.
            if self.advisories
                && let block::AdvisoryVerdict::Allowed { allow, .. } = self.blocks.advisory(&page.name, f, self.now)
            {
                until = until.min(allow.expires_unix);
            }
            if let (Some(age), Some(t)) = (self.cooldown, uploaded) {
                let free = t.saturating_add(age.as_secs());
                if free > self.now {
                    until = until.min(free);
                } else {
                    released = released.max(free);
                }
            }
            if self.cooldown.is_some() && uploaded.is_none() && refused.is_ok() {
                shown_unknown += 1;
            }
            match refused {
                Ok(()) => {
                    kept_versions.extend(version);
                    files.push(f.clone());
                }
                Err(_) => {
                    hidden_versions.extend(version);
                }
            }
        }
        let status = self.status.cloned().or_else(|| page.status.clone());
        if files.len() == page.files.len() && status == page.status {
            return Some(Filtered { page: None, until, released, shown_unknown });
        }
        let versions = page.versions.as_ref().map(|vs| {
            vs.iter()
                .filter(|v| {
                    let v = normalize_version(v);
                    !hidden_versions.contains(&v) || kept_versions.contains(&v)
                })
                .cloned()
                .collect()
        });
        let page = ProjectPage { name: page.name.clone(), files, versions, status };
        Some(Filtered { page: Some(page), until, released, shown_unknown })
    }
}

/// A version in PEP 440 normal form when it parses, so that two spellings of one version
/// (`1.0-rc1` in a filename, `1.0rc1` in `versions`) match.
fn normalize_version(v: &str) -> String {
    v.parse::<pep440_rs::Version>().map(|v| v.to_string()).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_800_000_000;

    fn time(unix: u64) -> String {
        humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
    }

    fn file(filename: &str, uploaded: Option<u64>) -> DistFile {
        DistFile {
            filename: filename.into(),
            url: format!("http://up/{filename}"),
            hashes: [("sha256".to_string(), crate::digest::sha256_hex(filename.as_bytes()))].into(),
            requires_python: None,
            yanked: Default::default(),
            core_metadata: None,
            size: Some(1),
            upload_time: uploaded.map(time),
            metadata_on_demand: false,
            provenance: None,
        }
    }

    fn page() -> ProjectPage {
        ProjectPage {
            name: ProjectName::parse("lib").unwrap(),
            files: vec![
                file("lib-1.0-py3-none-any.whl", Some(NOW - 30 * DAY)),
                file("lib-1.0.tar.gz", Some(NOW - 30 * DAY)),
                file("lib-2.0-py3-none-any.whl", Some(NOW - 2 * DAY)),
                file("lib-2.0.tar.gz", Some(NOW - 9 * DAY)),
                file("lib-3.0rc1-py3-none-any.whl", Some(NOW - 3600)),
                file("lib-4.0.tar.gz", None),
            ],
            versions: Some(vec!["1.0".into(), "2.0".into(), "3.0-rc1".into(), "4.0".into(), "5.0".into()]),
            status: None,
        }
    }

    fn filter(blocks: &BlockList, cooldown: Option<u64>, unknown: UnknownUploadTime) -> Filter<'_> {
        Filter {
            cooldown: cooldown.map(Duration::from_secs),
            unknown,
            blocks,
            status: None,
            now: NOW,
            refuse_unhashed: false,
            advisories: true,
        }
    }

    fn names(p: &ProjectPage) -> Vec<&str> {
        p.files.iter().map(|f| f.filename.as_str()).collect()
    }

    #[test]
    fn cooldown_hides_fresh_files_and_their_versions() {
        let blocks = BlockList::default();
        let f = filter(&blocks, Some(7 * DAY), UnknownUploadTime::Show);
        let out = f.apply(&page()).unwrap();
        let p = out.page.unwrap();
        assert_eq!(
            names(&p),
            ["lib-1.0-py3-none-any.whl", "lib-1.0.tar.gz", "lib-2.0.tar.gz", "lib-4.0.tar.gz"],
            "files younger than 7 days are gone; no upload time: shown by default"
        );
        // 2.0 keeps its sdist, so it stays; 3.0rc1 (spelled 3.0-rc1 in `versions`) has no file
        // left; 5.0 lists no file at all and stays.
        assert_eq!(p.versions.unwrap(), ["1.0", "2.0", "4.0", "5.0"]);
        assert_eq!(out.until, NOW - 2 * DAY + 7 * DAY, "the next file out of cooldown");
        assert_eq!(out.released, NOW - 9 * DAY + 7 * DAY, "the newest file that came out");
        assert_eq!(out.shown_unknown, 1);

        let hide = filter(&blocks, Some(7 * DAY), UnknownUploadTime::Hide);
        assert!(!names(&hide.apply(&page()).unwrap().page.unwrap()).contains(&"lib-4.0.tar.gz"));

        let none = filter(&blocks, None, UnknownUploadTime::Hide);
        assert!(none.apply(&page()).is_none(), "no rule: not even a copy of the page");
        let short = filter(&blocks, Some(60), UnknownUploadTime::Show);
        assert!(short.apply(&page()).unwrap().page.is_none(), "nothing that young: the page as it is");
    }

    #[test]
    fn the_file_route_says_why() {
        let blocks = BlockList::parse(&[BlockConfig {
            name: Some("lib".into()),
            version: Some("==1.0".into()),
            sha256: None,
            reason: "CVE-2026-0001".into(),
        }])
        .unwrap();
        let f = filter(&blocks, Some(7 * DAY), UnknownUploadTime::Show);
        let name = ProjectName::parse("lib").unwrap();
        let p = page();
        match f.check(&name, &p.files[0], None) {
            Err(Refusal::Blocked(why)) => assert!(why.contains("CVE-2026-0001"), "{why}"),
            other => panic!("{other:?}"),
        }
        match f.check(&name, &p.files[2], None) {
            Err(Refusal::Held(why)) => {
                assert!(why.contains("uploaded 2days ago") && why.contains("min_release_age"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.check(&name, &p.files[3], None), Ok(()));
        let out = f.apply(&p).unwrap().page.unwrap();
        assert!(!names(&out).iter().any(|n| n.starts_with("lib-1.0")), "blocked files vanish");
        assert!(!out.versions.unwrap().contains(&"1.0".to_string()));
    }

    #[test]
    fn an_upload_time_past_year_9999_is_refused_without_a_panic() {
        let blocks = BlockList::default();
        let f = filter(&blocks, Some(7 * DAY), UnknownUploadTime::Show);
        let mut far = file("lib-9.0.tar.gz", None);
        far.upload_time = Some("9999-12-31T23:59:59Z".into());
        let name = ProjectName::parse("lib").unwrap();
        assert!(matches!(f.check(&name, &far, None), Err(Refusal::Held(_))));
        let mut p = page();
        p.files.push(far);
        assert!(f.apply(&p).is_some());
    }

    #[test]
    fn the_most_specific_cooldown_wins() {
        let pat = |s: &str| NamePattern::parse(s).unwrap();
        let rules = Rules {
            min_release_age: Some(Duration::from_secs(7 * DAY)),
            exempt: vec![pat("internal-*")],
            upstream_ages: [("vendor".to_string(), Duration::from_secs(DAY))].into(),
            ..Rules::default()
        };
        let plain = ScopeRules::default();
        let own = ScopeRules { min_release_age: Some(Duration::from_secs(3 * DAY)), ..ScopeRules::default() };
        let off = ScopeRules { min_release_age: Some(Duration::ZERO), ..ScopeRules::default() };
        let exempt = ScopeRules { exempt: vec![pat("torch")], ..ScopeRules::default() };
        let n = |s: &str| ProjectName::parse(s).unwrap();
        let days = |d: Option<Duration>| d.map(|d| d.as_secs() / DAY);
        assert_eq!(days(rules.cooldown(&plain, "default", &n("lib"))), Some(7));
        assert_eq!(days(rules.cooldown(&plain, "vendor", &n("lib"))), Some(1), "the upstream's over the global");
        assert_eq!(days(rules.cooldown(&own, "vendor", &n("lib"))), Some(3), "the project's over both");
        assert_eq!(days(rules.cooldown(&off, "default", &n("lib"))), None, "0s turns it off");
        assert_eq!(days(rules.cooldown(&plain, "default", &n("Internal_Tools"))), None, "global exemption");
        assert_eq!(days(rules.cooldown(&exempt, "default", &n("torch"))), None, "project exemption");
        assert_eq!(days(rules.cooldown(&exempt, "default", &n("lib"))), Some(7));
    }

    #[test]
    fn a_group_takes_the_strictest_of_its_projects() {
        let set = |names: &[&str]| Some(names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        let a = Arc::new(ScopeRules {
            upstreams: set(&["default", "vendor"]),
            min_release_age: Some(Duration::from_secs(DAY)),
            ..ScopeRules::default()
        });
        let b = Arc::new(ScopeRules {
            upstreams: set(&["default"]),
            min_release_age: Some(Duration::from_secs(5 * DAY)),
            ..ScopeRules::default()
        });
        let off = Arc::new(ScopeRules { min_release_age: Some(Duration::ZERO), ..ScopeRules::default() });
        let g = Rules::combine(9, &[a, b, Arc::new(ScopeRules::default()), off.clone()]);
        assert_eq!(g.upstreams, set(&["default"]));
        assert!(g.uses("default") && !g.uses("vendor"));
        let rules = Rules { min_release_age: Some(Duration::from_secs(7 * DAY)), ..Rules::default() };
        let n = ProjectName::parse("lib").unwrap();
        let days = |d: Option<Duration>| d.map(|d| d.as_secs() / DAY);
        assert_eq!(days(rules.cooldown(&g, "default", &n)), Some(7), "a member without a setting inherits 7d");
        let g2 = Rules::combine(10, &[off]);
        assert_eq!(days(rules.cooldown(&g2, "default", &n)), None);
    }

    #[test]
    fn a_configured_status_is_shown() {
        let blocks = BlockList::default();
        let status = ProjectStatus { status: crate::index::StatusMarker::Deprecated, reason: Some("use lib2".into()) };
        let f = Filter { status: Some(&status), ..filter(&blocks, None, UnknownUploadTime::Show) };
        let p = f.apply(&page()).unwrap().page.unwrap();
        assert_eq!(p.status.as_ref(), Some(&status));
        assert_eq!(p.files.len(), 6, "a status hides nothing");
    }
}
