//! The index model: one project's files as Larder knows them, independent of wire format.
//!
//! Upstream JSON and HTML are parsed into this model (`json::parse_project`,
//! `crate::upstream::html::parse_project`), and both PEP 503 HTML and PEP 691 JSON are rendered
//! from it (`html`, `json`), so the two formats cannot drift apart.

pub mod filename;
pub mod html;
pub mod json;
pub mod media_type;
pub mod name;
pub mod pypi_json;
pub mod rendered;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use media_type::MediaType;
pub use name::{InvalidName, NamePattern, ProjectName};
pub use rendered::{PageModel, ViewKey};

/// One project's page: every file Larder can serve under that name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectPage {
    pub name: ProjectName,
    pub files: Vec<DistFile>,
    /// PEP 700 `versions`, when the source listed them (upstream JSON, private uploads).
    #[serde(default)]
    pub versions: Option<Vec<String>>,
    /// PEP 792 project status, when the source gave one (JSON-09, HTML-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ProjectStatus>,
}

/// A PEP 792 status marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusMarker {
    Active,
    Archived,
    Quarantined,
    Deprecated,
}

impl StatusMarker {
    /// The marker as written in pages (`pypi:project-status`, `project-status.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusMarker::Active => "active",
            StatusMarker::Archived => "archived",
            StatusMarker::Quarantined => "quarantined",
            StatusMarker::Deprecated => "deprecated",
        }
    }

    /// A marker as written (any case, surrounding space); `None` for one PEP 792 does not define.
    pub fn parse(raw: &str) -> Option<StatusMarker> {
        let raw = raw.trim();
        [StatusMarker::Active, StatusMarker::Archived, StatusMarker::Quarantined, StatusMarker::Deprecated]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(raw))
    }
}

/// PEP 792: `active`, `archived`, `quarantined` or `deprecated`, with an optional reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectStatus {
    pub status: StatusMarker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ProjectStatus {
    /// A status from an upstream: an unknown marker is read as `active` (PEP 792: clients
    /// treat unknown markers as active), and an `active` status without reason says nothing.
    pub fn from_upstream(status: &str, reason: Option<String>) -> Option<ProjectStatus> {
        let status = StatusMarker::parse(status).unwrap_or(StatusMarker::Active);
        let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        (status != StatusMarker::Active || reason.is_some()).then_some(ProjectStatus { status, reason })
    }

    pub fn is_quarantined(&self) -> bool {
        self.status == StatusMarker::Quarantined
    }

    pub fn is_archived(&self) -> bool {
        self.status == StatusMarker::Archived
    }
}

/// One distribution file on a project page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistFile {
    /// The exact distribution filename (HTML-03).
    pub filename: String,
    /// Where Larder fetches the file from (an absolute upstream URL). Never shown to clients:
    /// they get Larder's own `files/<key>/<filename>` (UP-02).
    pub url: String,
    /// Lowercase algorithm name → lowercase hex digest, as upstream listed them.
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    #[serde(default)]
    pub requires_python: Option<String>,
    #[serde(default)]
    pub yanked: Yanked,
    /// sha256 of the PEP 658 core metadata file, when Larder can serve it with that hash (MD-03).
    #[serde(default)]
    pub core_metadata: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// PEP 700 upload time, already in `yyyy-mm-ddThh:mm:ss[.ffffff]Z` form.
    #[serde(default)]
    pub upload_time: Option<String>,
    /// No metadata hash is known yet, but Larder serves `.metadata` on demand (issue 11):
    /// advertised as `true`. Decided at render time, never stored.
    #[serde(skip)]
    pub metadata_on_demand: bool,
    /// PEP 740: the upstream's provenance URL. Clients get Larder's own absolute
    /// `files/<sha256>/<filename>.provenance` instead (PROV-02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
}

/// PEP 592 yank state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Yanked {
    #[default]
    No,
    /// Yanked; the reason, when one was given, is non-empty.
    Yes(Option<String>),
}

/// How Larder addresses a file in its `files/<key>/<filename>` URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileKey {
    /// The file's sha256 (lowercase hex): GitLab's layout, and the content address in the store.
    Sha256(String),
    /// For files upstream lists without a sha256: `u-` and the sha256 of the upstream URL, so the
    /// file is still downloadable through Larder (UP-03).
    UrlDigest(String),
}

impl FileKey {
    /// Parses the `:sha256` path segment: 64 hex digits, or `u-` and 64 hex digits.
    pub fn parse(segment: &str) -> Option<FileKey> {
        let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(rest) = segment.strip_prefix("u-") {
            is_hex64(rest).then(|| FileKey::UrlDigest(rest.to_ascii_lowercase()))
        } else {
            is_hex64(segment).then(|| FileKey::Sha256(segment.to_ascii_lowercase()))
        }
    }
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileKey::Sha256(s) => f.write_str(s),
            FileKey::UrlDigest(s) => write!(f, "u-{s}"),
        }
    }
}

/// A PEP 700 upload time (`yyyy-mm-ddThh:mm:ss[.ffffff]Z`) as seconds since the Unix epoch;
/// an RFC 3339 offset (`+00:00`, `-05:00`) is read too, so that an upstream writing one does
/// not switch a cooldown off for its files (issue 22).
pub fn parse_upload_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let tail = s.len().checked_sub(6).and_then(|i| s.get(i..));
    let (base, offset) = match tail {
        Some(t) if (t.starts_with('+') || t.starts_with('-')) && t.as_bytes()[3] == b':' => {
            let hours: i64 = t[1..3].parse().ok()?;
            let minutes: i64 = t[4..6].parse().ok()?;
            let sign = if t.starts_with('-') { -1 } else { 1 };
            (&s[..s.len() - 6], sign * (hours * 3600 + minutes * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let unix = i64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()?;
    u64::try_from(unix.checked_sub(offset)?).ok()
}

/// True when `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl DistFile {
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }

    pub fn key(&self) -> FileKey {
        match self.sha256() {
            Some(sha) => FileKey::Sha256(sha.to_string()),
            None => FileKey::UrlDigest(crate::digest::sha256_hex(self.url.as_bytes())),
        }
    }

    /// Larder's URL for this file, relative to a project page at `…/simple/<name>/`. Relative
    /// links make one rendering valid for every project, group and alias route (ROUTE-02: the
    /// page URL always ends in `/`). No query string (MD-02).
    pub fn larder_href(&self) -> String {
        let mut out = String::with_capacity(80 + self.filename.len());
        self.write_larder_href(&mut out);
        out
    }

    /// Larder's absolute URL for this file's provenance under `files_base` (the scope's
    /// `files/` route, absolute): `<files_base><sha256>/<filename>.provenance`.
    pub fn provenance_href(&self, files_base: &str) -> Option<String> {
        let sha = self.sha256()?;
        let mut out = String::with_capacity(files_base.len() + 80 + self.filename.len());
        out.push_str(files_base);
        out.push_str(sha);
        out.push('/');
        filename::write_path_segment(&mut out, &self.filename);
        out.push_str(".provenance");
        Some(out)
    }

    /// `larder_href`, appended to `out` without intermediate allocations (the render hot loop).
    pub fn write_larder_href(&self, out: &mut String) {
        out.push_str("../../files/");
        match self.sha256() {
            Some(sha) => out.push_str(sha),
            None => {
                out.push_str("u-");
                out.push_str(&crate::digest::sha256_hex(self.url.as_bytes()));
            }
        }
        out.push('/');
        filename::write_path_segment(out, &self.filename);
    }
}

impl ProjectPage {
    /// The PEP 629/691 API version this page can honestly claim (JSON-10, VER-02): 1.1 needs
    /// `versions` and every file's `size`; above that, 1.3 when it carries provenance URLs
    /// (PROV-04) and 1.4 when it carries a project status.
    pub fn api_version(&self, with_provenance: bool) -> &'static str {
        if !self.meets_1_1() {
            "1.0"
        } else if self.status.is_some() {
            "1.4"
        } else if with_provenance && self.has_provenance() {
            "1.3"
        } else {
            "1.1"
        }
    }

    /// PEP 700's MUSTs: `versions`, and every file's size.
    pub fn meets_1_1(&self) -> bool {
        self.versions.is_some() && self.files.iter().all(|f| f.size.is_some())
    }

    /// Provenance can be shown only on a page that may claim 1.3 (PROV-04).
    pub fn has_provenance(&self) -> bool {
        self.meets_1_1() && self.files.iter().any(|f| f.provenance.is_some() && f.sha256().is_some())
    }

    /// When this page's content last changed, as far as its files say: the newest upload time.
    pub fn newest_upload(&self) -> Option<u64> {
        self.files.iter().filter_map(|f| f.upload_time.as_deref().and_then(parse_upload_time)).max()
    }

    /// Sorts files by filename so that renderings (and so ETags) are stable (JSON-11).
    pub fn sort(&mut self) {
        self.files.sort_by(|a, b| a.filename.cmp(&b.filename));
        self.files.dedup_by(|a, b| a.filename == b.filename);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn upload_times_with_offsets_are_read() {
        let z = super::parse_upload_time("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(super::parse_upload_time("2024-05-01T12:00:00.123456Z"), Some(z));
        assert_eq!(super::parse_upload_time("2024-05-01T12:00:00+00:00"), Some(z));
        assert_eq!(super::parse_upload_time("2024-05-01T14:00:00+02:00"), Some(z));
        assert_eq!(super::parse_upload_time("2024-05-01T07:00:00-05:00"), Some(z));
        assert_eq!(super::parse_upload_time("yesterday"), None);
    }
}
