//! PEP 691 JSON: rendering the model, and parsing upstream JSON pages into it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{DistFile, ProjectName, ProjectPage, ProjectStatus, Yanked};

/// One file as PEP 691 writes it (JSON-04, JSON-05), borrowed from the model.
#[derive(Serialize)]
struct FileOut<'a> {
    filename: &'a str,
    url: String,
    /// JSON-04: present even when empty.
    hashes: &'a BTreeMap<String, String>,
    #[serde(rename = "requires-python")]
    requires_python: Option<&'a str>,
    /// PEP 714: `core-metadata`, never `dist-info-metadata` (JSON-06).
    #[serde(rename = "core-metadata", skip_serializing_if = "Option::is_none")]
    core_metadata: Option<MetadataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "upload-time", skip_serializing_if = "Option::is_none")]
    upload_time: Option<&'a str>,
    yanked: YankedOut<'a>,
    /// PEP 740: Larder's absolute URL for it (PROV-02), only on pages that claim 1.3.
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<String>,
}

/// `{"sha256": …}`, or `true` when Larder serves it on demand without a hash yet (PEP 691).
#[derive(Serialize)]
#[serde(untagged)]
enum MetadataOut<'a> {
    Hash { sha256: &'a str },
    OnDemand(bool),
}

/// JSON-07: `true` for a yank without reason, never `""`.
#[derive(Serialize)]
#[serde(untagged)]
enum YankedOut<'a> {
    Flag(bool),
    Reason(&'a str),
}

#[derive(Serialize)]
struct DetailOut<'a> {
    meta: Meta,
    /// NAME-03: normalized.
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<&'a Vec<String>>,
    files: Vec<FileOut<'a>>,
    /// JSON-09: top level.
    #[serde(rename = "project-status", skip_serializing_if = "Option::is_none")]
    project_status: Option<&'a super::ProjectStatus>,
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "api-version")]
    api_version: &'static str,
}

/// Renders one project's page (JSON-01 … JSON-10), serialized straight from the model.
/// `files_base` is the absolute URL of the scope's `files/` route: with it, files that have
/// provenance link to it (PEP 740 wants absolute URLs); without it, no provenance is shown.
pub fn render_project(page: &ProjectPage, files_base: Option<&str>) -> Vec<u8> {
    let with_provenance = files_base.is_some() && page.has_provenance();
    let files = page
        .files
        .iter()
        .map(|f| FileOut {
            filename: &f.filename,
            url: f.larder_href(),
            hashes: &f.hashes,
            requires_python: f.requires_python.as_deref(),
            core_metadata: match f.core_metadata.as_deref() {
                Some(sha256) => Some(MetadataOut::Hash { sha256 }),
                None => f.metadata_on_demand.then_some(MetadataOut::OnDemand(true)),
            },
            size: f.size,
            upload_time: f.upload_time.as_deref(),
            yanked: match &f.yanked {
                Yanked::No => YankedOut::Flag(false),
                Yanked::Yes(None) => YankedOut::Flag(true),
                Yanked::Yes(Some(reason)) => YankedOut::Reason(reason),
            },
            provenance: match files_base {
                Some(base) if with_provenance && f.provenance.is_some() => f.provenance_href(base),
                _ => None,
            },
        })
        .collect();
    let doc = DetailOut {
        meta: Meta { api_version: page.api_version(with_provenance) },
        name: page.name.as_str(),
        versions: page.versions.as_ref(),
        files,
        project_status: page.status.as_ref(),
    };
    let mut out = Vec::with_capacity(256 + page.files.len() * 400);
    serde_json::to_writer(&mut out, &doc).expect("the page model always serializes");
    out
}

/// Renders the project list (JSON-02).
pub fn render_root<'a>(names: impl Iterator<Item = &'a ProjectName>) -> Vec<u8> {
    let projects: Vec<Value> = names.map(|n| json!({ "name": n.as_str() })).collect();
    serde_json::to_vec(&json!({ "meta": { "api-version": "1.0" }, "projects": projects }))
        .expect("a JSON value always serializes")
}

#[derive(Deserialize)]
struct UpstreamDetail<'a> {
    #[serde(default)]
    versions: Option<Vec<String>>,
    /// PEP 792 (JSON-09): kept raw, so that an odd value drops alone.
    #[serde(default, rename = "project-status")]
    project_status: Option<Value>,
    /// Kept raw, so that one entry that does not parse drops alone (UP-07).
    #[serde(default, borrow)]
    files: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct UpstreamFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    #[serde(default, rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    yanked: Option<Value>,
    #[serde(default, rename = "core-metadata", alias = "dist-info-metadata", alias = "data-dist-info-metadata")]
    core_metadata: Option<Value>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "upload-time")]
    upload_time: Option<String>,
    /// PEP 740: a URL, or null.
    #[serde(default)]
    provenance: Option<Value>,
}

/// Parses an upstream PEP 691 detail page. `base` resolves relative file URLs.
/// A file entry that cannot be understood is dropped on its own, never the page (UP-07).
/// `max_files` bounds the files it lists (`max_page_files`): checked on the raw entries,
/// before any is turned into a model (a hostile page of millions of links costs its bytes,
/// not tens of times them; issue 22).
pub fn parse_project(
    body: &[u8],
    name: &ProjectName,
    base: &url::Url,
    max_files: usize,
) -> Result<ProjectPage, String> {
    let detail: UpstreamDetail = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if detail.files.len() > max_files {
        return Err(too_many_files(max_files));
    }
    let mut files = Vec::with_capacity(detail.files.len());
    for raw in detail.files {
        let Ok(f) = serde_json::from_str::<UpstreamFile>(raw.get()) else {
            tracing::debug!(project = %name, "dropping an upstream file entry that does not parse");
            continue;
        };
        let Some(file) = into_dist_file(f, base) else {
            tracing::debug!(project = %name, "dropping an upstream file entry with an unusable URL or name");
            continue;
        };
        files.push(file);
    }
    let status = detail.project_status.as_ref().and_then(|v| {
        let reason = v.get("reason").and_then(Value::as_str).map(str::to_string);
        ProjectStatus::from_upstream(v.get("status").and_then(Value::as_str)?, reason)
    });
    // YK-04: a quarantined project offers no files, whatever its page lists.
    if status.as_ref().is_some_and(ProjectStatus::is_quarantined) {
        files.clear();
    }
    let mut page = ProjectPage { name: name.clone(), files, versions: detail.versions, status };
    page.sort();
    Ok(page)
}

fn into_dist_file(f: UpstreamFile, base: &url::Url) -> Option<DistFile> {
    if !super::filename::is_safe(&f.filename) {
        return None;
    }
    let mut url = base.join(&f.url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None; // only http(s) files can be fetched (found by fuzzing)
    }
    url.set_fragment(None);
    let hashes = normalize_hashes(f.hashes);
    // Only an http(s) URL can be fetched; resolved like the file's own URL.
    let provenance = f
        .provenance
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|p| base.join(p).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(String::from);
    let yanked = match f.yanked {
        Some(Value::Bool(true)) => Yanked::Yes(None),
        Some(Value::String(s)) if !s.is_empty() => Yanked::Yes(Some(s)),
        _ => Yanked::No,
    };
    Some(DistFile {
        metadata_on_demand: false,
        filename: f.filename,
        url: url.into(),
        hashes,
        requires_python: f.requires_python.filter(|s| !s.is_empty()),
        yanked,
        core_metadata: f.core_metadata.as_ref().and_then(metadata_sha256),
        size: f.size,
        upload_time: f.upload_time,
        provenance,
    })
}

/// Keeps digests with a lowercase name and a lowercase hex value; drops a malformed sha256
/// rather than advertise a hash nobody can match.
pub fn normalize_hashes(hashes: BTreeMap<String, String>) -> BTreeMap<String, String> {
    hashes
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
        .filter(|(k, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit()) && (k != "sha256" || v.len() == 64))
        .collect()
}

/// The sha256 of an upstream `core-metadata` value. `true` (no hash) is not kept: Larder
/// advertises metadata only with a hash it has checked (MD-03, MD-08).
fn metadata_sha256(v: &Value) -> Option<String> {
    let sha = v.get("sha256")?.as_str()?.to_ascii_lowercase();
    super::is_sha256_hex(&sha).then_some(sha)
}

/// The reason a page with too many files is refused, naming the setting.
pub fn too_many_files(max_files: usize) -> String {
    format!("the page lists more than {max_files} files; raise max_page_files if it is genuine")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_round_trip_fields() {
        let sha = "ab".repeat(32);
        let md = "cd".repeat(32);
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"demo","versions":["1.0"],"files":[
            {{"filename":"demo-1.0-py3-none-any.whl","url":"../../files/demo-1.0-py3-none-any.whl","hashes":{{"sha256":"{sha}"}},"requires-python":">=3.8","core-metadata":{{"sha256":"{md}"}},"size":10,"upload-time":"2026-01-01T00:00:00Z","yanked":"bad"}},
            {{"filename":"demo-0.9.tar.gz","url":"https://up.example/x/demo-0.9.tar.gz","hashes":{{}},"yanked":true,"size":5,"dist-info-metadata":true}},
            {{"no-filename":1}},
            {{"filename":"../evil.whl","url":"x","hashes":{{}}}}
            ]}}"#
        );
        let name = ProjectName::parse("demo").unwrap();
        let base = url::Url::parse("https://up.example/simple/demo/").unwrap();
        let page = parse_project(body.as_bytes(), &name, &base, usize::MAX).unwrap();
        // The bound counts the entries as listed (four), before bad ones are dropped.
        assert!(parse_project(body.as_bytes(), &name, &base, 4).is_ok(), "exactly at the bound");
        let err = parse_project(body.as_bytes(), &name, &base, 3).unwrap_err();
        assert!(err.contains("max_page_files"), "{err}");
        assert_eq!(page.files.len(), 2, "bad entries are dropped one by one (UP-07)");
        let whl = &page.files[1];
        assert_eq!(whl.url, "https://up.example/files/demo-1.0-py3-none-any.whl");
        assert_eq!(whl.core_metadata.as_deref(), Some(md.as_str()));
        assert_eq!(whl.yanked, Yanked::Yes(Some("bad".into())));
        assert_eq!(page.files[0].yanked, Yanked::Yes(None));
        assert_eq!(page.files[0].core_metadata, None, "`true` without hash is not advertised");
        assert_eq!(page.api_version(false), "1.1");

        let out: Value = serde_json::from_slice(&render_project(&page, None)).unwrap();
        assert_eq!(out["meta"]["api-version"], "1.1");
        assert_eq!(out["versions"], json!(["1.0"]));
        let f = &out["files"][1];
        assert_eq!(f["url"], format!("../../files/{sha}/demo-1.0-py3-none-any.whl"));
        assert_eq!(f["core-metadata"], json!({ "sha256": md }));
        assert!(f.get("dist-info-metadata").is_none(), "JSON-06");
        assert_eq!(out["files"][0]["yanked"], json!(true), "JSON-07");
        assert_eq!(out["files"][0]["hashes"], json!({}), "JSON-04");
        assert!(out["files"][0]["url"].as_str().unwrap().starts_with("../../files/u-"));
    }
}
