//! Block lists (issue 14): `[[block]]` entries by name, by name and PEP 440 version
//! specifier, or by file sha256, each with a reason. The live list is swapped whole on reload
//! (SIGHUP), so a request sees one list or the other, never half of each.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use pep440_rs::{Version, VersionSpecifiers};
use serde::Deserialize;

use crate::index::{DistFile, ProjectName, filename};

/// One `[[block]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// A project name: with no `version`, the whole project.
    pub name: Option<String>,
    /// A PEP 440 specifier such as `==1.2.3` or `>=2.0,<2.0.4`: only these versions of `name`.
    pub version: Option<String>,
    /// One file, by its sha256, whatever its name.
    pub sha256: Option<String>,
    /// Shown to clients with the refusal.
    pub reason: String,
}

#[derive(Clone)]
struct VersionRule {
    versions: VersionSpecifiers,
    reason: String,
}

/// A parsed block list, with the rules imported advisories add (issue 25).
#[derive(Clone, Default)]
pub struct BlockList {
    projects: HashMap<ProjectName, String>,
    versions: HashMap<ProjectName, Vec<VersionRule>>,
    files: HashMap<String, String>,
    rules: usize,
    advisories: Arc<AdvisoryRules>,
}

/// Blocks from advisories (OSV `MAL-` records): they apply to upstream files only, never to
/// a private upload of the same name.
#[derive(Default)]
pub struct AdvisoryRules {
    by_name: HashMap<ProjectName, Vec<AdvisoryRule>>,
    count: usize,
}

pub struct AdvisoryRule {
    /// Matched as OSV defines it (PEP 440 order, listed versions).
    pub advisory: Arc<crate::advisories::Advisory>,
    /// Shown with the refusal: the advisory's id and summary.
    pub reason: String,
    /// For metrics: `malicious` or `vulnerability`.
    pub kind: &'static str,
    /// Break-glass entries for this advisory (`[[advisories.allow]]`).
    pub allows: Vec<crate::advisories::Allow>,
}

/// What the advisories say about one upstream file.
pub enum AdvisoryVerdict<'a> {
    Clear,
    Blocked(&'a AdvisoryRule),
    /// Blocked, but a break-glass entry lets it through until `until` (seconds since the epoch).
    Allowed {
        rule: &'a AdvisoryRule,
        allow: &'a crate::advisories::Allow,
    },
}

impl AdvisoryRules {
    pub fn add(&mut self, name: ProjectName, rule: AdvisoryRule) {
        self.by_name.entry(name).or_default().push(rule);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl std::fmt::Debug for BlockList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockList").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl BlockList {
    pub fn parse(entries: &[BlockConfig]) -> Result<BlockList, String> {
        let mut list = BlockList::default();
        for (i, e) in entries.iter().enumerate() {
            let at = |what: String| format!("[[block]] entry {}: {what}", i + 1);
            let reason = e.reason.trim();
            if reason.is_empty() || reason.len() > 500 || reason.contains(['\r', '\n']) {
                return Err(at("`reason` must be one line of 1 to 500 characters".into()));
            }
            match (&e.name, &e.version, &e.sha256) {
                (Some(name), version, None) => {
                    let name = ProjectName::parse(name).map_err(|err| at(err.to_string()))?;
                    match version {
                        None => {
                            list.projects.insert(name, reason.to_string());
                        }
                        Some(v) => {
                            let versions = VersionSpecifiers::from_str(v)
                                .map_err(|err| at(format!("invalid version specifier `{v}`: {err}")))?;
                            list.versions
                                .entry(name)
                                .or_default()
                                .push(VersionRule { versions, reason: reason.into() });
                        }
                    }
                }
                (None, None, Some(sha)) => {
                    let sha = sha.trim().to_ascii_lowercase();
                    if !crate::index::is_sha256_hex(&sha) {
                        return Err(at(format!("`{sha}` is not a sha256 (64 hex digits)")));
                    }
                    list.files.insert(sha, reason.to_string());
                }
                _ => return Err(at("give `name` (optionally with `version`), or `sha256` alone".into())),
            }
            list.rules += 1;
        }
        Ok(list)
    }

    pub fn len(&self) -> usize {
        self.rules + self.advisories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reason the whole project is blocked, if it is.
    pub fn project(&self, name: &ProjectName) -> Option<&str> {
        self.projects.get(name).map(String::as_str)
    }

    /// Whether some rule names files by sha256.
    pub fn has_sha_rules(&self) -> bool {
        !self.files.is_empty()
    }

    /// Whether some rule may hide files on `name`'s page.
    pub fn touches(&self, name: &ProjectName) -> bool {
        !self.files.is_empty() || self.versions.contains_key(name) || self.advisories.by_name.contains_key(name)
    }

    /// The advisory that blocks this upstream file, if one does (a version that cannot be read
    /// is blocked when the project has any: fail closed).
    /// `now`: seconds since the epoch, for the break-glass entries' expiry.
    pub fn advisory(&self, name: &ProjectName, file: &DistFile, now: u64) -> AdvisoryVerdict<'_> {
        let Some(rules) = self.advisories.by_name.get(name) else { return AdvisoryVerdict::Clear };
        let version = filename::version_of(name, &file.filename).and_then(|v| Version::from_str(&v).ok());
        let mut allowed = None;
        for rule in rules.iter().filter(|r| r.advisory.affects(name, version.as_ref())) {
            let allow = rule.allows.iter().find(|a| {
                now < a.expires_unix
                    && a.versions.as_ref().is_none_or(|spec| version.as_ref().is_some_and(|v| spec.contains(v)))
            });
            match allow {
                Some(allow) => allowed = allowed.or(Some(AdvisoryVerdict::Allowed { rule, allow })),
                None => return AdvisoryVerdict::Blocked(rule),
            }
        }
        allowed.unwrap_or(AdvisoryVerdict::Clear)
    }

    /// The reason this file is blocked, if it is: by its sha256, or by its version.
    pub fn file(&self, name: &ProjectName, file: &DistFile) -> Option<&str> {
        if let Some(reason) = file.sha256().and_then(|sha| self.files.get(sha)) {
            return Some(reason);
        }
        let rules = self.versions.get(name)?;
        // A file whose version cannot be read might be any version: blocked when the project
        // has version rules (fail closed).
        let version = filename::version_of(name, &file.filename).and_then(|v| Version::from_str(&v).ok());
        let Some(version) = version else { return rules.first().map(|r| r.reason.as_str()) };
        rules.iter().find(|r| r.versions.contains(&version)).map(|r| r.reason.as_str())
    }

    /// The reason a file with this sha256 is blocked, if it is.
    pub fn sha256(&self, sha: &str) -> Option<&str> {
        self.files.get(sha).map(String::as_str)
    }
}

/// The block list in force, replaced whole by `reload`; `generation` tells cached page views
/// made under an older list.
#[derive(Default)]
pub struct Blocks {
    /// The list and its generation, swapped together: a view is never kept under a
    /// generation whose list it was not made with.
    current: RwLock<(Arc<BlockList>, u64)>,
    generation: AtomicU64,
    /// The list in force is empty: the hit path checks this and takes no lock.
    empty: AtomicBool,
    /// Writers (SIGHUP's list, an import's advisories) read, change and swap one at a time:
    /// interleaved, one would put back what the other just replaced.
    writer: std::sync::Mutex<()>,
}

impl Blocks {
    pub fn new(list: BlockList) -> Blocks {
        metrics::gauge!("larder_block_rules").set(list.len() as f64);
        let empty = AtomicBool::new(list.is_empty());
        let (current, generation, writer) = (RwLock::new((Arc::new(list), 1)), AtomicU64::new(1), Default::default());
        Blocks { current, generation, empty, writer }
    }

    pub fn is_empty(&self) -> bool {
        self.empty.load(Ordering::Acquire)
    }

    pub fn current(&self) -> (Arc<BlockList>, u64) {
        self.current.read().expect("block list lock").clone()
    }

    /// A new configured list (SIGHUP); the advisory rules in force stay.
    pub fn replace(&self, mut list: BlockList) {
        let _one_writer = self.writer.lock().expect("block list writer lock");
        list.advisories = self.current().0.advisories.clone();
        self.swap(list);
    }

    /// New advisory rules (an import); the configured list stays.
    pub fn set_advisories(&self, rules: AdvisoryRules) {
        let _one_writer = self.writer.lock().expect("block list writer lock");
        let mut list = (*self.current().0).clone();
        list.advisories = Arc::new(rules);
        self.swap(list);
    }

    fn swap(&self, list: BlockList) {
        metrics::gauge!("larder_block_rules").set(list.len() as f64);
        let empty = list.is_empty();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.current.write().expect("block list lock") = (Arc::new(list), generation);
        self.empty.store(empty, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: Option<&str>, version: Option<&str>, sha: Option<&str>) -> BlockConfig {
        BlockConfig {
            name: name.map(Into::into),
            version: version.map(Into::into),
            sha256: sha.map(Into::into),
            reason: "bad".into(),
        }
    }

    fn file(filename: &str, sha: &str) -> DistFile {
        DistFile {
            filename: filename.into(),
            url: format!("http://up/{filename}"),
            hashes: [("sha256".to_string(), sha.to_string())].into(),
            requires_python: None,
            yanked: Default::default(),
            core_metadata: None,
            size: None,
            upload_time: None,
            metadata_on_demand: false,
            provenance: None,
        }
    }

    #[test]
    fn names_versions_and_hashes() {
        let sha = "ab".repeat(32);
        let list = BlockList::parse(&[
            entry(Some("Evil_Pkg"), None, None),
            entry(Some("lib"), Some(">=2.0,<2.0.4"), None),
            entry(None, None, Some(&sha.to_uppercase())),
        ])
        .unwrap();
        let name = |s| ProjectName::parse(s).unwrap();
        assert_eq!(list.project(&name("evil-pkg")), Some("bad"));
        assert_eq!(list.project(&name("lib")), None, "a version rule blocks versions, not the project");
        let other = "cd".repeat(32);
        assert!(list.file(&name("lib"), &file("lib-2.0.3-py3-none-any.whl", &other)).is_some());
        assert!(list.file(&name("lib"), &file("lib-2.0.4.tar.gz", &other)).is_none());
        // Issue 22, item 8: read as pip reads it, 2.0.3.post1, not `1` (the split at the last dash).
        assert!(list.file(&name("lib"), &file("lib-2.0.3-1.tar.gz", &other)).is_some());
        assert!(list.file(&name("lib"), &file("lib-1.9-py3-none-any.whl", &other)).is_none());
        assert!(list.file(&name("x"), &file("x-1.0.tar.gz", &sha)).is_some(), "by sha256, any name");
        assert!(list.touches(&name("x")), "a sha256 rule may hide a file on any page");
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn bad_entries_say_which_and_why() {
        for (e, why) in [
            (entry(None, None, None), "give `name`"),
            (entry(Some("a"), None, Some(&"ab".repeat(32))), "give `name`"),
            (entry(None, Some("==1"), None), "give `name`"),
            (entry(Some("a"), Some("=>1"), None), "invalid version specifier"),
            (entry(None, None, Some("abc")), "not a sha256"),
            (entry(Some("a b"), None, None), "invalid project name"),
        ] {
            let err = BlockList::parse(&[entry(Some("fine"), None, None), e]).err().unwrap();
            assert!(err.starts_with("[[block]] entry 2: ") && err.contains(why), "{err}");
        }
        let mut blank = entry(Some("a"), None, None);
        blank.reason = " ".into();
        assert!(BlockList::parse(&[blank]).is_err());
    }
}
