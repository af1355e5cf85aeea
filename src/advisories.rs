//! Advisories from OSV (issue 25): records in OSV's schema (1.x) for the PyPI ecosystem,
//! imported from OSV's export (`all.zip`) or a directory of JSON files, kept in the store (so
//! they travel in bundles and reach every replica on a shared bucket), matched as OSV defines
//! it for PyPI (ECOSYSTEM ranges in PEP 440 order, `versions` lists, normalized names), and
//! served back through OSV's own API (`server::handlers::osv`).
//!
//! This module is the model (records, matching, the set, the operator's policy);
//! `cache::advisory_store` keeps the set in the store: one immutable blob (zstd JSON lines, one record per line) named
//! by a small record, `advisories`; an import writes a new blob, then swaps the record by
//! compare-and-swap.

/// The record naming the current set's blob.
pub const RECORD_KEY: &str = "advisories";

use std::collections::HashMap;
use std::io::Read;
use std::str::FromStr;
use std::sync::Arc;

use pep440_rs::Version;
use serde::{Deserialize, Serialize};

use crate::index::ProjectName;

/// One OSV JSON record may be this large at most (the largest real PyPI records are ~200 KB).
pub(crate) const MAX_RECORD_BYTES: u64 = 4 << 20;
/// Files read from one export at most (OSV's PyPI export has ~20,000).
pub(crate) const MAX_RECORDS: usize = 1_000_000;
/// A whole export, and the stored set, may unpack to this much at most (OSV's PyPI export is
/// well under 100 MB): a hostile bundle's or export's compression bomb stops here.
pub(crate) const MAX_EXPORT_BYTES: u64 = 512 << 20;

/// What an advisory is about: malicious packages are blocked; vulnerabilities reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Malicious,
    Vulnerability,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Malicious => "malicious",
            Kind::Vulnerability => "vulnerability",
        }
    }
}

/// One advisory: its id, when it last changed, the PyPI packages and versions it affects, and
/// the record (compact JSON with sorted keys, as the API serves it back).
#[derive(Debug)]
pub struct Advisory {
    pub id: String,
    pub modified: String,
    modified_unix: u64,
    pub summary: String,
    pub details: String,
    pub aliases: Vec<String>,
    pub kind: Kind,
    /// The highest CVSS base score the record gives (v3 or v4 vectors), else its severity
    /// word (GitHub's `database_specific.severity`) as a representative score.
    pub score: Option<f64>,
    affected: Vec<Affected>,
    pub raw: Box<serde_json::value::RawValue>,
}

#[derive(Debug)]
struct Affected {
    name: ProjectName,
    /// Explicit versions; `None`: one that is not PEP 440 (it cannot be matched, so every
    /// version is taken as affected: fail closed).
    versions: Vec<Option<Version>>,
    /// Affected intervals in PEP 440 order; `None` in a bound: unbounded.
    ranges: Vec<Interval>,
}

/// `introduced <= v < fixed` (or `<= last_affected`), compared in PEP 440 order: unlike a
/// `<1.4` specifier, `1.4rc1` and `1.4.dev0` sort before 1.4 and are affected, as OSV means.
#[derive(Clone, Debug)]
pub struct Interval {
    introduced: Option<Version>,
    upper: Option<(Version, bool)>,
}

impl Interval {
    const ALL: Interval = Interval { introduced: None, upper: None };

    fn contains(&self, v: &Version) -> bool {
        self.introduced.as_ref().is_none_or(|low| v >= low)
            && self.upper.as_ref().is_none_or(|(up, inclusive)| if *inclusive { v <= up } else { v < up })
    }
}

/// The fields read from an OSV record (the rest is kept in `raw`).
#[derive(Deserialize)]
struct OsvRecord {
    id: String,
    modified: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    schema_version: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    affected: Vec<OsvAffected>,
    #[serde(default)]
    severity: Vec<OsvSeverity>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct OsvSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

/// The base score of a record: the highest of its CVSS v3/v4 vectors, else its severity word.
fn score_of(osv: &OsvRecord) -> Option<f64> {
    let vectors = osv
        .severity
        .iter()
        .filter(|s| matches!(s.kind.as_str(), "CVSS_V3" | "CVSS_V4"))
        .filter_map(|s| cvss::Cvss::from_str(s.score.trim()).ok())
        .map(|c| c.score())
        .fold(None, |best: Option<f64>, s| Some(best.map_or(s, |b| b.max(s))));
    vectors.or_else(|| {
        let word = osv.database_specific.as_ref()?.get("severity")?.as_str()?.to_ascii_uppercase();
        Some(match word.as_str() {
            "CRITICAL" => 9.5,
            "HIGH" => 8.0,
            "MODERATE" | "MEDIUM" => 5.0,
            "LOW" => 2.0,
            _ => return None,
        })
    })
}

/// What an operator set under `[advisories]`: which vulnerabilities block too, and the
/// break-glass entries that let one advisory (or one version) through until they expire.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Vulnerabilities with a base score at least this block (`block_severity`).
    pub block_from: Option<f64>,
    pub allow: Vec<Allow>,
    /// Where there is a network: OSV's export to import on a schedule (`url`, `refresh`).
    pub url: Option<url::Url>,
    pub refresh: std::time::Duration,
    /// Private uploads are matched against the advisories of their name too (`match_private`;
    /// default off: an upstream advisory is about the upstream's package of that name).
    pub match_private: bool,
}

#[derive(Clone, Debug)]
pub struct Allow {
    pub id: String,
    /// `None`: every version the advisory names.
    pub versions: Option<pep440_rs::VersionSpecifiers>,
    pub reason: String,
    /// Seconds since the epoch; the entry does nothing from then on.
    pub expires_unix: u64,
}

/// `[advisories]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `low`, `medium`, `high` or `critical` (CVSS v3/v4 bands); unset: none blocks.
    pub block_severity: Option<String>,
    #[serde(default)]
    pub allow: Vec<AllowConfig>,
    /// Match private uploads against the advisories of their name too (default false).
    #[serde(default)]
    pub match_private: bool,
    /// OSV's export (an `all.zip`) to import every `refresh` (default 6h).
    pub url: Option<url::Url>,
    #[serde(default, with = "humantime_serde")]
    pub refresh: Option<std::time::Duration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    pub id: String,
    pub version: Option<String>,
    pub reason: String,
    /// An RFC 3339 date (`2026-12-31`, the end of that day UTC) or time.
    pub expires: String,
}

impl Policy {
    pub fn from_config(c: &PolicyConfig) -> Result<Policy, String> {
        let block_from = match c.block_severity.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") => None,
            Some("low") => Some(0.1),
            Some("medium") => Some(4.0),
            Some("high") => Some(7.0),
            Some("critical") => Some(9.0),
            Some(other) => {
                return Err(format!("[advisories] block_severity `{other}`: use none, low, medium, high or critical"));
            }
        };
        let mut allow = Vec::new();
        for (i, a) in c.allow.iter().enumerate() {
            let at = |why: String| format!("[[advisories.allow]] entry {}: {why}", i + 1);
            let reason = a.reason.trim();
            if reason.is_empty() || reason.len() > 500 || reason.contains(['\r', '\n']) {
                return Err(at("`reason` must be one line of 1 to 500 characters".into()));
            }
            let expires = a.expires.trim();
            let expires_unix = match expires.len() {
                10 => crate::index::parse_upload_time(&format!("{expires}T23:59:59Z")),
                _ => crate::index::parse_upload_time(expires),
            }
            .ok_or_else(|| at(format!("`expires` is not an RFC 3339 date or time: `{expires}`")))?;
            let versions = match &a.version {
                None => None,
                Some(v) => Some(
                    pep440_rs::VersionSpecifiers::from_str(v)
                        .map_err(|e| at(format!("invalid version specifier `{v}`: {e}")))?,
                ),
            };
            allow.push(Allow { id: a.id.trim().to_string(), versions, reason: reason.to_string(), expires_unix });
        }
        if let Some(u) = &c.url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(format!("[advisories] url `{u}`: use an http(s) URL"));
        }
        let refresh = c.refresh.unwrap_or(std::time::Duration::from_secs(6 * 3600));
        if refresh < std::time::Duration::from_secs(60) {
            return Err("[advisories] refresh: at least 1m".into());
        }
        Ok(Policy { block_from, allow, url: c.url.clone(), refresh, match_private: c.match_private })
    }

    /// Whether this advisory blocks (malicious always; vulnerabilities from `block_from`).
    pub fn blocks(&self, a: &Advisory) -> bool {
        a.kind == Kind::Malicious || self.block_from.is_some_and(|from| a.score.is_some_and(|s| s >= from))
    }
}

#[derive(Deserialize)]
struct OsvAffected {
    #[serde(default)]
    package: Option<OsvPackage>,
    #[serde(default)]
    ranges: Vec<OsvRange>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct OsvPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct OsvRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<HashMap<String, String>>,
}

/// Why one record was skipped.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("not an OSV record: {0}")]
    Json(String),
    #[error("`id` must be 1 to 100 characters of letters, digits and `-._:`")]
    Id,
    #[error("`modified` is not an RFC 3339 time: `{0}`")]
    Modified(String),
    #[error("schema_version `{0}` is not 1.x")]
    Schema(String),
    #[error("it affects no PyPI package")]
    NotPypi,
    #[error("withdrawn")]
    Withdrawn,
}

impl Advisory {
    /// Parses and validates one OSV record. Affected entries of other ecosystems are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Advisory, Invalid> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Invalid::Json(e.to_string()))?;
        let osv = OsvRecord::deserialize(&value).map_err(|e| Invalid::Json(e.to_string()))?;
        // Compact, keys sorted: one spelling per record, so a re-import compares equal.
        let raw = serde_json::value::to_raw_value(&value).map_err(|e| Invalid::Json(e.to_string()))?;
        let id_ok = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
        if osv.id.is_empty() || osv.id.len() > 100 || !osv.id.chars().all(id_ok) {
            return Err(Invalid::Id);
        }
        let Some(modified_unix) = crate::index::parse_upload_time(&osv.modified) else {
            return Err(Invalid::Modified(osv.modified.chars().take(40).collect()));
        };
        if let Some(v) = osv.schema_version.as_deref().filter(|v| !(*v == "1" || v.starts_with("1."))) {
            return Err(Invalid::Schema(v.chars().take(20).collect()));
        }
        if osv.withdrawn.is_some() {
            return Err(Invalid::Withdrawn);
        }
        let affected: Vec<Affected> = osv.affected.iter().filter_map(affected_on_pypi).collect();
        if affected.is_empty() {
            return Err(Invalid::NotPypi);
        }
        let malicious = std::iter::once(&osv.id).chain(&osv.aliases).any(|id| id.starts_with("MAL-"));
        let score = score_of(&osv);
        let details: String = osv.details.clone().unwrap_or_default().chars().take(10_000).collect();
        let aliases: Vec<String> = osv.aliases.iter().take(50).map(|a| a.chars().take(100).collect()).collect();
        let summary = osv.summary.or(osv.details).unwrap_or_default();
        let summary: String = summary.lines().next().unwrap_or_default().chars().take(200).collect();
        Ok(Advisory {
            id: osv.id,
            modified: osv.modified,
            modified_unix,
            summary,
            kind: if malicious { Kind::Malicious } else { Kind::Vulnerability },
            details,
            aliases,
            score,
            affected,
            raw,
        })
    }

    /// Whether this advisory affects `version` of `name` (`None`: a version that cannot be
    /// read, which any advisory of the name affects: fail closed).
    pub fn affects(&self, name: &ProjectName, version: Option<&Version>) -> bool {
        self.affected.iter().filter(|a| &a.name == name).any(|a| match version {
            None => true,
            Some(v) => {
                a.versions.iter().any(|listed| listed.as_ref().is_none_or(|l| l == v))
                    || a.ranges.iter().any(|r| r.contains(v))
            }
        })
    }

    /// The versions that fix it for `name` (the `fixed` events), in PEP 440 order.
    pub fn fixed_in(&self, name: &ProjectName) -> Vec<String> {
        let mut fixed: Vec<&Version> = self
            .affected
            .iter()
            .filter(|a| &a.name == name)
            .flat_map(|a| a.ranges.iter().filter_map(|r| r.upper.as_ref().filter(|(_, incl)| !incl).map(|(v, _)| v)))
            .collect();
        fixed.sort();
        fixed.dedup();
        fixed.into_iter().map(|v| v.to_string()).collect()
    }

    /// The names this advisory affects.
    pub fn names(&self) -> impl Iterator<Item = &ProjectName> {
        self.affected.iter().map(|a| &a.name)
    }
}

fn affected_on_pypi(a: &OsvAffected) -> Option<Affected> {
    let package = a.package.as_ref().filter(|p| p.ecosystem == "PyPI")?;
    let name = ProjectName::parse(&package.name).ok()?;
    let versions = a.versions.iter().map(|v| Version::from_str(v.trim()).ok()).collect();
    let mut ranges = Vec::new();
    for r in a.ranges.iter().filter(|r| r.kind == "ECOSYSTEM") {
        ranges.extend(ecosystem_ranges(&r.events));
    }
    if ranges.is_empty() && a.versions.is_empty() {
        ranges.push(Interval::ALL); // affected, with no versions named: every version (OSV: all)
    }
    Some(Affected { name, versions, ranges })
}

/// OSV's events (`introduced`, `fixed`, `last_affected`; `limit` is for git ranges) as
/// intervals; a version that is not PEP 440 makes the range "every version" (fail closed).
fn ecosystem_ranges(events: &[HashMap<String, String>]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut open: Option<Option<Version>> = None; // the lower bound of the interval under way
    let mut broken = false;
    let mut parse = |v: &str| match Version::from_str(v.trim()) {
        Ok(v) => Some(v),
        Err(_) => {
            broken = true;
            None
        }
    };
    for event in events {
        for (kind, v) in event {
            match kind.as_str() {
                "introduced" => open = Some(if v == "0" { None } else { parse(v) }),
                "fixed" | "last_affected" => {
                    let upper = parse(v).map(|up| (up, kind == "last_affected"));
                    out.push(Interval { introduced: open.take().flatten(), upper });
                }
                _ => {}
            }
        }
    }
    if let Some(low) = open {
        out.push(Interval { introduced: low, upper: None });
    }
    if broken {
        return vec![Interval::ALL];
    }
    out
}

/// The imported set: by id, and by the names it affects.
#[derive(Default)]
pub struct Db {
    pub(crate) by_id: HashMap<String, Arc<Advisory>>,
    by_name: HashMap<ProjectName, Vec<Arc<Advisory>>>,
    /// The store blob this set was read from.
    pub sha256: Option<String>,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct Imported {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub withdrawn: usize,
    pub skipped: usize,
    pub total: usize,
}

impl Db {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn insert(&mut self, advisory: Advisory) {
        let advisory = Arc::new(advisory);
        self.remove(&advisory.id);
        for name in advisory.names() {
            let list = self.by_name.entry(name.clone()).or_default();
            if !list.iter().any(|a| a.id == advisory.id) {
                list.push(advisory.clone());
            }
        }
        self.by_id.insert(advisory.id.clone(), advisory);
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.by_id.remove(id) else { return false };
        for name in old.names() {
            if let Some(list) = self.by_name.get_mut(name) {
                list.retain(|a| a.id != id);
                if list.is_empty() {
                    self.by_name.remove(name);
                }
            }
        }
        true
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Advisory>> {
        self.by_id.get(id)
    }

    /// The advisories that affect `version` of `name`, sorted by id.
    pub fn affecting(&self, name: &ProjectName, version: Option<&Version>) -> Vec<Arc<Advisory>> {
        let mut found: Vec<Arc<Advisory>> = self
            .by_name
            .get(name)
            .map(|list| list.iter().filter(|a| a.affects(name, version)).cloned().collect())
            .unwrap_or_default();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Every advisory of `name`, whatever the version, sorted by id.
    pub fn affecting_any(&self, name: &ProjectName) -> Vec<Arc<Advisory>> {
        let mut found = self.by_name.get(name).cloned().unwrap_or_default();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Every advisory.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Advisory>> {
        self.by_id.values()
    }

    /// Merges one record as read from an export: a newer `modified` wins, withdrawn drops.
    pub(crate) fn merge(&mut self, bytes: &[u8], tally: &mut Imported) -> Result<(), Invalid> {
        match Advisory::parse(bytes) {
            Ok(new) => {
                match self.by_id.get(&new.id) {
                    Some(old) if old.modified_unix > new.modified_unix => tally.unchanged += 1,
                    Some(old) if old.modified_unix == new.modified_unix && old.raw.get() == new.raw.get() => {
                        tally.unchanged += 1
                    }
                    Some(_) => {
                        tally.updated += 1;
                        self.insert(new);
                    }
                    None => {
                        tally.added += 1;
                        self.insert(new);
                    }
                }
                Ok(())
            }
            Err(Invalid::Withdrawn) => {
                #[derive(Deserialize)]
                struct Id {
                    id: String,
                }
                if let Ok(Id { id }) = serde_json::from_slice(bytes)
                    && self.remove(&id)
                {
                    tally.withdrawn += 1;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The set as stored: one record per line, sorted by id, zstd-compressed.
    pub(crate) fn encode(&self) -> std::io::Result<Vec<u8>> {
        let mut ids: Vec<&String> = self.by_id.keys().collect();
        ids.sort();
        let mut lines = Vec::new();
        for id in ids {
            // A record's raw JSON may span lines: stored compact, one per line.
            let value: serde_json::Value = serde_json::from_str(self.by_id[id].raw.get())?;
            serde_json::to_writer(&mut lines, &value)?;
            lines.push(b'\n');
        }
        zstd::encode_all(lines.as_slice(), 3)
    }

    /// Reads a stored set line by line, bounded: a line longer than a record may be, more
    /// records or more bytes than an export may hold (a compression bomb) fail the read.
    pub(crate) fn decode(compressed: &[u8]) -> anyhow::Result<Db> {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(zstd::Decoder::new(compressed)?.take(MAX_EXPORT_BYTES + 1));
        let (mut db, mut total, mut line) = (Db::default(), 0u64, Vec::new());
        loop {
            line.clear();
            let n = (&mut reader).take(MAX_RECORD_BYTES + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            anyhow::ensure!(n as u64 <= MAX_RECORD_BYTES, "a stored advisory is longer than {MAX_RECORD_BYTES} bytes");
            anyhow::ensure!(
                total <= MAX_EXPORT_BYTES,
                "the stored advisories unpack to more than {MAX_EXPORT_BYTES} bytes"
            );
            anyhow::ensure!(db.len() < MAX_RECORDS, "the stored set has more than {MAX_RECORDS} advisories");
            let record = line.strip_suffix(b"\n").unwrap_or(&line);
            if record.is_empty() {
                continue;
            }
            match Advisory::parse(record) {
                Ok(a) => db.insert(a),
                Err(e) => tracing::warn!(error = %e, "skipping a stored advisory that no longer validates"),
            }
        }
        Ok(db)
    }
}

/// The `advisories` record: the blob that holds the set.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    pub sha256: String,
    pub records: usize,
    pub imported_unix: u64,
}

/// Parses and validates the `advisories` record.
pub fn decode_pointer(body: &[u8]) -> Result<Pointer, String> {
    let p: Pointer = serde_json::from_slice(body).map_err(|e| format!("advisories record does not parse: {e}"))?;
    if !crate::index::is_sha256_hex(&p.sha256) {
        return Err("advisories record: `sha256` is not 64 hex digits".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, modified: &str, affected: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"schema_version": "1.6.0", "id": id, "modified": modified, "summary": "s", "affected": affected})
            .to_string()
            .into_bytes()
    }

    fn v(s: &str) -> Version {
        Version::from_str(s).unwrap()
    }

    #[test]
    fn ranges_and_versions_match_as_osv_defines_them() {
        let name = ProjectName::parse("Lib_One").unwrap();
        let a = Advisory::parse(&record(
            "GHSA-1",
            "2026-01-01T00:00:00Z",
            serde_json::json!([{"package": {"ecosystem": "PyPI", "name": "lib-one"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.4"}, {"introduced": "2.0"}, {"last_affected": "2.1"}]}],
                "versions": ["0.9"]}]),
        ))
        .unwrap();
        assert_eq!(a.kind, Kind::Vulnerability);
        for (version, hit) in [
            ("0.8", false),
            ("0.9", true),
            ("1.0", true),
            ("1.3.9", true),
            ("1.4", false),
            ("2.1", true),
            ("2.1.1", false),
        ] {
            assert_eq!(a.affects(&name, Some(&v(version))), hit, "{version}");
        }
        assert!(a.affects(&name, None), "an unreadable version: fail closed");
        // PEP 440 order, not specifiers: pre-releases of the fixed version come before it.
        for (version, hit) in [("1.4rc1", true), ("1.4.dev0", true), ("1.4.post1", false), ("0.9.0", true)] {
            assert_eq!(a.affects(&name, Some(&v(version))), hit, "{version}");
        }
        let odd = Advisory::parse(&record(
            "GHSA-2",
            "2026-01-01T00:00:00Z",
            serde_json::json!([{"package": {"ecosystem": "PyPI", "name": "lib-one"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0,>99"}]}]}]),
        ))
        .unwrap();
        assert!(odd.affects(&name, Some(&v("500"))), "a version that is not PEP 440: every version (fail closed)");
    }

    #[test]
    fn a_stored_set_is_read_within_bounds() {
        let long_line = vec![b'a'; (MAX_RECORD_BYTES + 10) as usize];
        let bomb = zstd::encode_all(long_line.as_slice(), 19).unwrap();
        assert!(bomb.len() < 4096, "a small blob");
        assert!(Db::decode(&bomb).is_err(), "a line longer than a record is refused, not read whole");
    }

    #[test]
    fn malicious_records_cover_every_version_and_withdrawn_or_bad_ones_are_refused() {
        let name = ProjectName::parse("evil").unwrap();
        let m = Advisory::parse(&record(
            "MAL-2026-1",
            "2026-01-01T00:00:00+02:00",
            serde_json::json!([{"package": {"ecosystem": "PyPI", "name": "evil"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]),
        ))
        .unwrap();
        assert_eq!(m.kind, Kind::Malicious);
        assert!(m.affects(&name, Some(&v("99.0"))));
        assert!(matches!(Advisory::parse(b"{"), Err(Invalid::Json(_))));
        assert!(matches!(
            Advisory::parse(&record("bad id!", "2026-01-01T00:00:00Z", serde_json::json!([]))),
            Err(Invalid::Id)
        ));
        assert!(matches!(
            Advisory::parse(&record("X-1", "yesterday", serde_json::json!([]))),
            Err(Invalid::Modified(_))
        ));
        let npm = serde_json::json!([{"package": {"ecosystem": "npm", "name": "evil"}}]);
        assert!(matches!(Advisory::parse(&record("X-2", "2026-01-01T00:00:00Z", npm)), Err(Invalid::NotPypi)));
    }

    #[test]
    fn merging_keeps_the_newer_record_and_drops_withdrawn_ones() {
        let aff = serde_json::json!([{"package": {"ecosystem": "PyPI", "name": "a"}, "versions": ["1.0"]}]);
        let mut db = Db::default();
        let mut t = Imported::default();
        db.merge(&record("X-1", "2026-01-02T00:00:00Z", aff.clone()), &mut t).unwrap();
        db.merge(&record("X-1", "2026-01-01T00:00:00Z", aff.clone()), &mut t).unwrap();
        assert_eq!((t.added, t.unchanged), (1, 1), "an older copy does not replace a newer one");
        let withdrawn =
            serde_json::json!({"id": "X-1", "modified": "2026-01-03T00:00:00Z", "withdrawn": "2026-01-03T00:00:00Z"});
        db.merge(withdrawn.to_string().as_bytes(), &mut t).unwrap();
        assert_eq!((t.withdrawn, db.len()), (1, 0));
        db.merge(&record("X-2", "2026-01-02T00:00:00Z", aff), &mut t).unwrap();
        let again = Db::decode(&db.encode().unwrap()).unwrap();
        assert_eq!(again.affecting(&ProjectName::parse("a").unwrap(), Some(&v("1.0"))).len(), 1);
    }
}
