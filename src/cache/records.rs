//! Records: the small keyed documents Larder keeps beside its blobs. This module owns every
//! record key and the schema of every record body, and checks both before anything trusts them.
//!
//! A record can come from outside: a bundle (`larder import`), or a disk written by another
//! version or by someone else. So a record is validated *as a whole* before it is staged,
//! loaded or used: every sha256 is 64 lowercase hex before it becomes a path or a URL, every
//! filename is a safe path segment, every name is a valid project name (issue 9).
//!
//! | key                              | body                                       |
//! |----------------------------------|--------------------------------------------|
//! | `page/<name>`                    | [`PageRecord`]: an upstream page           |
//! | `private/<project>/<name>`       | [`PrivateRecord`]: uploads and tombstones  |
//! | `alias/u-<url sha256>`           | the sha256 of a file listed without a hash |
//! | `wheel-meta/<wheel>/<metadata>`  | empty: extracted METADATA of a wheel       |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::index::{self, DistFile, ProjectName, ProjectPage, Yanked, filename};
use crate::upstream::Validators;

/// What is persisted per upstream page.
#[derive(Serialize, Deserialize)]
pub struct PageRecord {
    pub page: ProjectPage,
    pub validators: Validators,
    pub confirmed_unix: u64,
    /// When Larder last saw this page change (Last-Modified, HDR-1); 0 in older records.
    #[serde(default)]
    pub changed_unix: u64,
    /// The `[[upstreams]]` entry it came from (issue 14); a record from another upstream than
    /// the name's owner now is not used. `None`: the default upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// The first line of a page record: what serving the page needs, without its model (issue
/// 21). A record is `<head JSON>\n<PageRecord JSON>`; records from before have no head line.
#[derive(Clone, Serialize, Deserialize)]
pub struct PageRecordHead {
    pub confirmed_unix: u64,
    pub changed_unix: u64,
    pub validators: Validators,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The plain rendering's bodies, as blobs.
    pub bodies: crate::index::rendered::StoredBodies,
    /// The compact file index (`Listing::to_hex`, `Listing::metadata_hex`).
    pub listing: String,
    #[serde(default)]
    pub metadata_listing: String,
    /// Renderings depend on the client's origin (provenance links).
    #[serde(default)]
    pub provenance: bool,
}

/// A page record as stored: the head line, then the model (a [`PageRecord`], written from
/// borrowed parts: a page's model is never copied to be stored).
pub fn encode_page(head: &PageRecordHead, page: &ProjectPage) -> Vec<u8> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        page: &'a ProjectPage,
        validators: &'a Validators,
        confirmed_unix: u64,
        changed_unix: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream: &'a Option<String>,
    }
    let record = Borrowed {
        page,
        validators: &head.validators,
        confirmed_unix: head.confirmed_unix,
        changed_unix: head.changed_unix,
        upstream: &head.upstream,
    };
    let mut out = serde_json::to_vec(head).expect("a page head serializes");
    out.push(b'\n');
    serde_json::to_writer(&mut out, &record).expect("a page record serializes");
    out
}

/// The head line of a page record, checked; `Ok(None)` for a record from before heads.
pub fn decode_page_head(body: &[u8]) -> Result<Option<PageRecordHead>, String> {
    let Some(end) = body.iter().position(|&b| b == b'\n') else { return Ok(None) };
    let head: PageRecordHead =
        serde_json::from_slice(&body[..end]).map_err(|e| format!("page record head does not parse: {e}"))?;
    crate::index::rendered::Bodies::from_stored(&head.bodies).ok_or("page record head names bad bodies")?;
    crate::index::rendered::Listing::from_hex(&head.listing, &head.metadata_listing)?;
    Ok(Some(head))
}

/// One uploaded file (EX-6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivateFile {
    pub filename: String,
    pub version: String,
    pub sha256: String,
    pub md5: String,
    pub blake2_256: String,
    pub size: u64,
    pub upload_time: String,
    pub requires_python: Option<String>,
    /// sha256 of the stored METADATA (wheels only, MD-05).
    pub metadata_sha256: Option<String>,
    #[serde(default)]
    pub yanked: Yanked,
    /// PEP 740 attestations sent with the upload (`uv publish`, `twine --attestations`), kept
    /// as sent: a JSON array. Not verified, so never served as provenance (PROV-05). Older
    /// Larders ignore the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestations: Option<serde_json::Value>,
}

/// Everything about one claimed name in one project.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrivateRecord {
    pub files: Vec<PrivateFile>,
    /// Filenames once used and since deleted: never reused with other content.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// The sha256s of deleted files (tombstones, issue 22): on a shared bucket their blobs may
    /// stay, and an upstream page naming one must not make it public by hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_sha256: Vec<String>,
    /// When this record last changed (seconds since the epoch); 0 in records from before.
    #[serde(default)]
    pub changed_unix: u64,
}

impl PrivateRecord {
    pub(crate) fn position(&self, filename: &str) -> Option<usize> {
        self.files.iter().position(|f| f.filename == filename)
    }

    pub(crate) fn to_page(&self, name: &ProjectName) -> ProjectPage {
        let files = self.files.iter().map(|f| f.to_dist_file()).collect();
        let versions: BTreeSet<String> = self.files.iter().map(|f| f.version.clone()).collect();
        let mut page =
            ProjectPage { name: name.clone(), files, versions: Some(versions.into_iter().collect()), status: None };
        page.sort();
        page
    }
}

impl PrivateFile {
    pub(crate) fn to_dist_file(&self) -> DistFile {
        let mut hashes = BTreeMap::new();
        hashes.insert("sha256".to_string(), self.sha256.clone());
        DistFile {
            metadata_on_demand: false,
            provenance: None,
            filename: self.filename.clone(),
            url: String::new(), // served from the store only
            hashes,
            requires_python: self.requires_python.clone(),
            yanked: self.yanked.clone(),
            core_metadata: self.metadata_sha256.clone(),
            size: Some(self.size),
            upload_time: Some(self.upload_time.clone()),
        }
    }
}

/// A parsed record key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    Page(ProjectName),
    Private {
        project: String,
        name: ProjectName,
    },
    /// The `u-…` file key's digest (64 lowercase hex).
    Alias(String),
    WheelMeta {
        wheel: String,
        metadata: String,
    },
    /// The PEP 740 provenance of the file with this sha256.
    Provenance(String),
    /// Which blob holds the imported OSV advisories (issue 25).
    Advisories,
    /// The store's format version (issue 27, `store::format`).
    StoreFormat,
    /// On a shared store: the blob with this sha256 is a private upload of the project the
    /// body names. Written before the blob, so a replica that finds the blob and no marker
    /// knows it is no private upload's (issue 22, item 10).
    PrivateBlob(String),
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Page(name) => write!(f, "page/{name}"),
            RecordKey::Private { project, name } => write!(f, "private/{project}/{name}"),
            RecordKey::Alias(digest) => write!(f, "alias/u-{digest}"),
            RecordKey::WheelMeta { wheel, metadata } => write!(f, "wheel-meta/{wheel}/{metadata}"),
            RecordKey::Provenance(sha) => write!(f, "provenance/{sha}"),
            RecordKey::Advisories => f.write_str(crate::advisories::RECORD_KEY),
            RecordKey::StoreFormat => f.write_str(crate::store::format::KEY),
            RecordKey::PrivateBlob(sha) => write!(f, "{PRIVATE_BLOB_PREFIX}{sha}"),
        }
    }
}

pub const PAGE_PREFIX: &str = "page/";

/// Upstream pages are evicted like files under the size limit (they can be fetched again).
pub fn is_page_key(key: &str) -> bool {
    key.starts_with(PAGE_PREFIX)
}
pub const PRIVATE_PREFIX: &str = "private/";
pub const WHEEL_META_PREFIX: &str = "wheel-meta/";
pub const PRIVATE_BLOB_PREFIX: &str = "private-blob/";

fn sha(s: &str, what: &str) -> Result<String, String> {
    if index::is_sha256_hex(s) { Ok(s.to_string()) } else { Err(format!("{what} is not 64 lowercase hex digits")) }
}

impl RecordKey {
    pub fn parse(key: &str) -> Result<RecordKey, String> {
        let bad = |why: &str| format!("record key `{}`: {why}", key.escape_debug());
        if let Some(name) = key.strip_prefix(PAGE_PREFIX) {
            let name = ProjectName::parse(name).map_err(|e| bad(&e.to_string()))?;
            return Ok(RecordKey::Page(name));
        }
        if let Some(rest) = key.strip_prefix(PRIVATE_PREFIX) {
            let (project, name) = rest.rsplit_once('/').ok_or_else(|| bad("expected private/<project>/<name>"))?;
            if !crate::scope::is_valid_id(project) {
                return Err(bad("invalid project id"));
            }
            let name = ProjectName::parse(name).map_err(|e| bad(&e.to_string()))?;
            return Ok(RecordKey::Private { project: project.to_string(), name });
        }
        if let Some(digest) = key.strip_prefix("alias/u-") {
            return Ok(RecordKey::Alias(sha(digest, "the alias digest").map_err(|e| bad(&e))?));
        }
        if let Some(rest) = key.strip_prefix(WHEEL_META_PREFIX) {
            let (wheel, metadata) = rest.split_once('/').ok_or_else(|| bad("expected wheel-meta/<sha>/<sha>"))?;
            let wheel = sha(wheel, "the wheel sha256").map_err(|e| bad(&e))?;
            let metadata = sha(metadata, "the metadata sha256").map_err(|e| bad(&e))?;
            return Ok(RecordKey::WheelMeta { wheel, metadata });
        }
        if let Some(blob) = key.strip_prefix(PRIVATE_BLOB_PREFIX) {
            return Ok(RecordKey::PrivateBlob(sha(blob, "the blob sha256").map_err(|e| bad(&e))?));
        }
        if let Some(file) = key.strip_prefix("provenance/") {
            return Ok(RecordKey::Provenance(sha(file, "the file sha256").map_err(|e| bad(&e))?));
        }
        if key == crate::advisories::RECORD_KEY {
            return Ok(RecordKey::Advisories);
        }
        if key == crate::store::format::KEY {
            return Ok(RecordKey::StoreFormat);
        }
        Err(bad("unknown kind of record"))
    }

    /// Checks `body` against this key's schema; the error says what is wrong.
    pub fn validate(&self, body: &[u8]) -> Result<(), String> {
        match self {
            RecordKey::Page(name) => decode_page(name, body).map(drop),
            RecordKey::Private { name, .. } => decode_private(name, body).map(drop),
            RecordKey::Alias(_) => decode_alias(body).map(drop),
            RecordKey::WheelMeta { .. } if body.is_empty() => Ok(()),
            RecordKey::WheelMeta { .. } => Err("a wheel-meta record has no body".into()),
            RecordKey::Provenance(_) => decode_provenance(body).map(drop),
            RecordKey::Advisories => crate::advisories::decode_pointer(body).map(drop),
            RecordKey::StoreFormat => crate::store::format::decode(body).map(drop),
            RecordKey::PrivateBlob(_) => match std::str::from_utf8(body) {
                Ok(project) if crate::scope::is_valid_id(project) => Ok(()),
                _ => Err("a private-blob record names no valid project".into()),
            },
        }
    }
}

/// Parses and validates a page record of `name`.
pub fn decode_page(name: &ProjectName, body: &[u8]) -> Result<PageRecord, String> {
    decode_page_head(body)?;
    let model = body.iter().position(|&b| b == b'\n').map_or(body, |end| &body[end + 1..]);
    let record: PageRecord = serde_json::from_slice(model).map_err(|e| format!("page record does not parse: {e}"))?;
    if &record.page.name != name {
        return Err(format!("page record of `{name}` names `{}`", record.page.name));
    }
    for f in &record.page.files {
        validate_dist_file(f)?;
    }
    Ok(record)
}

/// The checks every file on an upstream page passes before Larder renders or fetches it.
pub fn validate_dist_file(f: &DistFile) -> Result<(), String> {
    let what = f.filename.escape_debug();
    if !filename::is_safe(&f.filename) {
        return Err(format!("unsafe filename `{what}`"));
    }
    for (algo, digest) in &f.hashes {
        let ok_algo = !algo.is_empty() && algo.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_digest = !digest.is_empty() && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok_algo || !ok_digest || (algo == "sha256" && digest.len() != 64) {
            return Err(format!("`{what}`: malformed `{}` hash", algo.escape_debug()));
        }
    }
    if let Some(md) = &f.core_metadata {
        sha(md, "core-metadata sha256").map_err(|e| format!("`{what}`: {e}"))?;
    }
    if let Some(p) = &f.provenance
        && !url::Url::parse(p).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(format!("`{what}`: the provenance URL is not an http(s) URL"));
    }
    match url::Url::parse(&f.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!("`{what}`: the upstream URL is not an http(s) URL")),
    }
}

/// A PEP 740 provenance object fetched from the upstream, kept so that it can be served
/// again (also offline); refreshed like a page (it may change upstream, PROV-03).
#[derive(Serialize, Deserialize)]
pub struct ProvenanceRecord {
    pub fetched_unix: u64,
    /// The upstream's bytes, unchanged (PROV-03: served byte for byte).
    pub body: String,
}

/// Parses a provenance record: its body must be a JSON object.
pub fn decode_provenance(body: &[u8]) -> Result<ProvenanceRecord, String> {
    let record: ProvenanceRecord =
        serde_json::from_slice(body).map_err(|e| format!("provenance record does not parse: {e}"))?;
    match serde_json::from_str::<serde_json::Value>(&record.body) {
        Ok(serde_json::Value::Object(_)) => Ok(record),
        _ => Err("a provenance record's body is not a JSON object".into()),
    }
}

/// Parses and validates a private record of `name`.
pub fn decode_private(name: &ProjectName, body: &[u8]) -> Result<PrivateRecord, String> {
    let record: PrivateRecord =
        serde_json::from_slice(body).map_err(|e| format!("private record does not parse: {e}"))?;
    for f in &record.files {
        validate_private_file(name, f)?;
    }
    if let Some(bad) = record.deleted_sha256.iter().find(|s| !crate::index::is_sha256_hex(s)) {
        return Err(format!("deleted sha256 `{}` is not 64 lowercase hex digits", bad.escape_debug()));
    }
    if let Some(bad) = record.deleted.iter().find(|f| !filename::is_safe(f)) {
        return Err(format!("unsafe deleted filename `{}`", bad.escape_debug()));
    }
    Ok(record)
}

fn validate_private_file(name: &ProjectName, f: &PrivateFile) -> Result<(), String> {
    let what = f.filename.escape_debug();
    let parsed = crate::index::filename::parse(&f.filename).map_err(|e| format!("`{what}`: {e}"))?;
    if !filename::is_safe(&f.filename) || &parsed.name != name {
        return Err(format!("`{what}` is not a file of `{name}`"));
    }
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex(&f.sha256, 64) || !hex(&f.md5, 32) || !hex(&f.blake2_256, 64) {
        return Err(format!("`{what}`: a digest is not lowercase hex of the right length"));
    }
    if f.metadata_sha256.as_deref().is_some_and(|m| !hex(m, 64)) {
        return Err(format!("`{what}`: the metadata sha256 is not 64 lowercase hex digits"));
    }
    if !crate::metadata::is_valid_version(&f.version) {
        return Err(format!("`{what}`: invalid version"));
    }
    Ok(())
}

/// An alias record's body: the sha256 of the file.
pub fn decode_alias(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "an alias record is not text".to_string())?;
    sha(text, "an alias record")
}

/// Parses a key and validates its body in one step (bundles, `larder verify`).
pub fn validate(key: &str, body: &[u8]) -> Result<RecordKey, String> {
    let parsed = RecordKey::parse(key)?;
    parsed.validate(body).map_err(|e| format!("record `{key}`: {e}"))?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_hostile_keys_are_refused() {
        let sha = "ab".repeat(32);
        for key in [
            "page/demo".to_string(),
            "private/42/demo".to_string(),
            "private/group%2Fproj/demo".to_string(),
            format!("alias/u-{sha}"),
            format!("wheel-meta/{sha}/{sha}"),
        ] {
            assert_eq!(RecordKey::parse(&key).unwrap().to_string(), key);
        }
        for key in [
            "page/../x",
            "private/../../x/demo",
            "private/demo",
            "alias/u-../../../etc/passwd",
            "alias/u-ab",
            &format!("alias/u-{}", "AB".repeat(32)),
            &format!("wheel-meta/{sha}/xy"),
            "nonsense/key",
        ] {
            assert!(RecordKey::parse(key).is_err(), "{key}");
        }
    }

    #[test]
    fn bodies_are_checked_against_their_schema() {
        let sha = "ab".repeat(32);
        assert!(validate(&format!("alias/u-{sha}"), sha.as_bytes()).is_ok());
        assert!(validate(&format!("alias/u-{sha}"), b"/etc/passwd").is_err());
        assert!(validate(&format!("alias/u-{sha}"), b"ab").is_err(), "short strings once panicked content_path");
        assert!(validate(&format!("wheel-meta/{sha}/{sha}"), b"").is_ok());
        let page = |md: &str| {
            format!(
                r#"{{"page":{{"name":"demo","files":[{{"filename":"demo-1.0-py3-none-any.whl","url":"http://up/x.whl","hashes":{{"sha256":"{sha}"}},"core_metadata":{md}}}]}},"validators":{{}},"confirmed_unix":1}}"#
            )
        };
        assert!(validate("page/demo", page("null").as_bytes()).is_ok());
        assert!(validate("page/demo", page(&format!("\"{sha}\"")).as_bytes()).is_ok());
        let html = page(r#""\"><script>alert(1)</script>""#);
        assert!(validate("page/demo", html.as_bytes()).is_err(), "markup in a metadata hash");
        assert!(validate("page/other", page("null").as_bytes()).is_err(), "a page under another name");
        let private = |sha256: &str| {
            format!(
                r#"{{"files":[{{"filename":"demo-1.0-py3-none-any.whl","version":"1.0","sha256":"{sha256}","md5":"{}","blake2_256":"{sha}","size":1,"upload_time":"t","requires_python":null,"metadata_sha256":null}}]}}"#,
                "0".repeat(32)
            )
        };
        assert!(validate("private/1/demo", private(&sha).as_bytes()).is_ok());
        assert!(validate("private/1/demo", private("../../x").as_bytes()).is_err());
        assert!(validate("private/1/other", private(&sha).as_bytes()).is_err(), "a file of another name");
    }
}
