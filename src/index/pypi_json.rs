//! PyPI's JSON API (issue 24), the shape warehouse's `legacy/api/json` answers with:
//! `<base>/pypi/<name>/json` (the newest release's `info`, every release in `releases`) and
//! `<base>/pypi/<name>/<version>/json` (one release, no `releases`, as warehouse does since
//! 2023). Rendered from the page model a scope sees (so access rules, cooldowns and block lists
//! apply as they do to the simple API) and the stored core metadata of one release.
//!
//! Keys come out sorted, as warehouse's renderer sorts them (`serde_json::Map` is ordered).

use std::str::FromStr;

use pep440_rs::Version;
use serde_json::{Map, Value, json};

use super::filename::{self, DistKind};
use super::{DistFile, ProjectPage, Yanked};

/// One release: its version as keyed in `releases`, and its files, by filename.
pub struct Release<'a> {
    pub version: String,
    parsed: Option<Version>,
    pub files: Vec<&'a DistFile>,
}

impl Release<'_> {
    /// Warehouse yanks releases, PEP 592 yanks files: a release is yanked when all its files are.
    fn yanked(&self) -> bool {
        !self.files.is_empty() && self.files.iter().all(|f| f.yanked != Yanked::No)
    }

    fn yanked_reason(&self) -> Option<&str> {
        self.files.iter().find_map(|f| match &f.yanked {
            Yanked::Yes(reason) => reason.as_deref(),
            Yanked::No => None,
        })
    }

    /// The file whose core metadata stands for the release in `info`: one that names its
    /// metadata (a wheel first: its metadata is what installs), else a wheel, whose metadata
    /// Larder can read by ranges, else none.
    pub fn metadata_source(&self) -> Option<&DistFile> {
        let is_wheel = |f: &&&DistFile| crate::index::filename::is_wheel(&f.filename);
        let named = |f: &&&DistFile| f.core_metadata.is_some();
        let pick = self.files.iter().filter(named).find(is_wheel).or_else(|| self.files.iter().find(named));
        pick.or_else(|| self.files.iter().filter(|f| f.sha256().is_some()).find(is_wheel)).copied()
    }
}

/// The page's releases, newest first (PEP 440; versions that do not parse last). Versions that
/// PEP 700's `versions` lists without files are releases with no files, as on PyPI.
pub fn releases(page: &ProjectPage) -> Vec<Release<'_>> {
    let mut out: Vec<Release> = Vec::new();
    // `1.0` and `1.0.0`, `1.0-post1` and `1.0.post1` are one release (PEP 440 equality),
    // keyed by the normalized form of the first one seen.
    let mut slot: std::collections::BTreeMap<(Option<Version>, String), usize> = Default::default();
    let mut add = |raw: &str| -> usize {
        let parsed = Version::from_str(raw).ok();
        let key = (parsed.clone(), if parsed.is_some() { String::new() } else { raw.to_string() });
        *slot.entry(key).or_insert_with(|| {
            let version = parsed.as_ref().map(ToString::to_string).unwrap_or_else(|| raw.to_string());
            out.push(Release { version, parsed, files: Vec::new() });
            out.len() - 1
        })
    };
    let mut placed = Vec::with_capacity(page.files.len());
    for f in &page.files {
        if let Some(v) = filename::version_of(&page.name, &f.filename).or_else(|| egg_version(&f.filename)) {
            placed.push((add(&v), f));
        }
    }
    for v in page.versions.iter().flatten() {
        add(v);
    }
    for (i, f) in placed {
        out[i].files.push(f);
    }
    for r in &mut out {
        r.files.sort_by(|a, b| a.filename.cmp(&b.filename));
    }
    out.sort_by(|a, b| b.parsed.cmp(&a.parsed).then_with(|| a.version.cmp(&b.version)));
    out
}

/// `name-version-pyX.Y.egg`: eggs are old, but PyPI still lists them.
fn egg_version(filename: &str) -> Option<String> {
    let stem = filename.strip_suffix(".egg")?;
    stem.split('-').nth(1).map(str::to_string)
}

/// The release `info` describes when no version is asked for: warehouse's choice, the newest
/// non-yanked final release, else the newest non-yanked pre-release, else the newest.
pub fn latest<'r, 'a>(releases: &'r [Release<'a>]) -> Option<&'r Release<'a>> {
    let listed = || releases.iter().filter(|r| !r.files.is_empty());
    let pre = |r: &Release| r.parsed.as_ref().is_none_or(Version::any_prerelease);
    listed()
        .find(|r| !r.yanked() && !pre(r))
        .or_else(|| listed().find(|r| !r.yanked()))
        .or_else(|| listed().next())
        .or_else(|| releases.first())
}

/// The release a `/<version>/json` URL names: equal as PEP 440 versions, else the same string.
pub fn find<'r, 'a>(releases: &'r [Release<'a>], asked: &str) -> Option<&'r Release<'a>> {
    match Version::from_str(asked) {
        Ok(v) => releases.iter().find(|r| r.parsed.as_ref() == Some(&v)),
        Err(_) => releases.iter().find(|r| r.version == asked),
    }
}

/// The core metadata of the release `info` describes, as `crate::metadata` parsed it: its
/// header fields (names lowercased, in order) and its body, the description.
#[derive(Default)]
pub struct CoreFields {
    pub headers: Vec<(String, String)>,
    pub description: Option<String>,
}

/// What a response links to: file URLs and the pages for people, both absolute.
pub struct Links<'a> {
    /// `<origin>…/files/`.
    pub files_base: &'a str,
    /// `<origin>/-/ui/…packages/<name>`.
    pub project_page: &'a str,
}

/// One advisory as warehouse lists it under `vulnerabilities`.
pub struct Vulnerability {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub details: String,
    pub fixed_in: Vec<String>,
    pub link: String,
    pub withdrawn: Option<String>,
}

/// What an answer carries beside the page: `all_releases` for the project route (with
/// `releases`, not the version route), its serial, and the advisories of the release.
pub struct Answer<'a> {
    pub all_releases: bool,
    pub last_serial: u64,
    pub vulnerabilities: &'a [Vulnerability],
}

/// Renders one answer. `metadata`: the core metadata of `release`, when Larder has it.
pub fn render(
    page: &ProjectPage,
    releases: &[Release<'_>],
    release: &Release<'_>,
    metadata: Option<&CoreFields>,
    links: &Links<'_>,
    answer: &Answer<'_>,
) -> Vec<u8> {
    let mut top = Map::new();
    top.insert("info".into(), info(page, release, metadata, links));
    top.insert("last_serial".into(), json!(answer.last_serial));
    top.insert("urls".into(), files(release, links));
    // The imported advisories affecting this release (issue 25), in warehouse's shape.
    let vulns: Vec<Value> = answer
        .vulnerabilities
        .iter()
        .map(|v| {
            json!({"aliases": v.aliases, "details": v.details, "fixed_in": v.fixed_in, "id": v.id,
                   "link": v.link, "source": "osv", "summary": v.summary, "withdrawn": v.withdrawn})
        })
        .collect();
    top.insert("vulnerabilities".into(), Value::Array(vulns));
    if answer.all_releases {
        let map: Map<String, Value> = releases.iter().map(|r| (r.version.clone(), files(r, links))).collect();
        top.insert("releases".into(), Value::Object(map));
    }
    serde_json::to_vec(&Value::Object(top)).expect("a JSON value serializes")
}

fn files(release: &Release<'_>, links: &Links<'_>) -> Value {
    Value::Array(release.files.iter().map(|f| file(f, links)).collect())
}

/// One file, as warehouse lists it.
fn file(f: &DistFile, links: &Links<'_>) -> Value {
    let href = f.larder_href();
    let url = format!("{}{}", links.files_base, href.strip_prefix("../../files/").unwrap_or(&href));
    let mut digests = Map::new();
    for (ours, theirs) in [("md5", "md5"), ("sha256", "sha256"), ("blake2b_256", "blake2b_256")] {
        if let Some(v) = f.hashes.get(ours) {
            digests.insert(theirs.into(), json!(v));
        }
    }
    let (packagetype, python_version) = kind(&f.filename);
    // Warehouse: `upload_time` to the second, `upload_time_iso_8601` with its fraction and `Z`.
    let iso = f.upload_time.as_deref().filter(|t| super::parse_upload_time(t).is_some());
    let (yanked, yanked_reason) = match &f.yanked {
        Yanked::No => (false, None),
        Yanked::Yes(reason) => (true, reason.as_deref()),
    };
    json!({
        "comment_text": "",
        "digests": digests,
        "downloads": -1,
        "filename": f.filename,
        "has_sig": false,
        "md5_digest": f.hashes.get("md5"),
        "packagetype": packagetype,
        "python_version": python_version,
        "requires_python": f.requires_python.as_deref().filter(|s| !s.is_empty()),
        "size": f.size,
        "upload_time": iso.map(|t| t.get(..19).unwrap_or(t)),
        "upload_time_iso_8601": iso,
        "url": url,
        "yanked": yanked,
        "yanked_reason": yanked_reason,
    })
}

/// Warehouse's `packagetype` and `python_version` from a filename.
fn kind(filename_: &str) -> (&'static str, String) {
    if filename_.ends_with(".egg") {
        let py = filename_.strip_suffix(".egg").and_then(|s| s.split('-').nth(2)).unwrap_or("");
        return ("bdist_egg", py.trim_start_matches("py").to_string());
    }
    match filename::parse(filename_) {
        Ok(d) if d.kind == DistKind::Wheel => ("bdist_wheel", d.tags.map(|t| t.python).unwrap_or_default()),
        Ok(_) => ("sdist", "source".into()),
        Err(_) if filename_.ends_with(".exe") => ("bdist_wininst", "any".into()),
        Err(_) if filename_.ends_with(".msi") => ("bdist_msi", "any".into()),
        Err(_) if filename_.ends_with(".rpm") => ("bdist_rpm", "any".into()),
        // Other sdist archives (`.tar.bz2`, `.tgz`, …).
        Err(_) => ("sdist", "source".into()),
    }
}

/// `info`: the release's core metadata fields where Larder has the metadata, else what the
/// page says (name, version, requires-python, yanked) and nulls, as for a release PyPI knows
/// nothing more of.
fn info(page: &ProjectPage, release: &Release<'_>, metadata: Option<&CoreFields>, links: &Links<'_>) -> Value {
    let fields: &[(String, String)] = metadata.map(|m| m.headers.as_slice()).unwrap_or_default();
    let one = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let many = |k: &str| -> Option<Vec<&str>> {
        let v: Vec<&str> = fields.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect();
        (!v.is_empty()).then_some(v)
    };
    // Warehouse's `project_urls`: Home-page as "Homepage", Download-URL as "Download", then
    // every `Project-URL: label, url`.
    let mut urls = Map::new();
    if let Some(home) = one("home-page") {
        urls.insert("Homepage".into(), json!(home));
    }
    if let Some(download) = one("download-url") {
        urls.insert("Download".into(), json!(download));
    }
    for entry in many("project-url").unwrap_or_default() {
        if let Some((label, url)) = entry.split_once(',') {
            urls.insert(label.trim().to_string(), json!(url.trim()));
        }
    }
    let description = metadata.and_then(|m| m.description.clone()).or_else(|| one("description").map(str::to_string));
    let requires_python = one("requires-python")
        .map(str::to_string)
        .or_else(|| release.files.iter().find_map(|f| f.requires_python.clone()).filter(|s| !s.is_empty()));
    let name = one("name").map(str::to_string).unwrap_or_else(|| page.name.to_string());
    json!({
        "author": one("author"),
        "author_email": one("author-email"),
        "bugtrack_url": null,
        "classifiers": many("classifier").unwrap_or_default(),
        "description": description.unwrap_or_default(),
        "description_content_type": one("description-content-type"),
        "docs_url": null,
        "download_url": one("download-url"),
        "downloads": { "last_day": -1, "last_month": -1, "last_week": -1 },
        "dynamic": many("dynamic"),
        "home_page": one("home-page"),
        "keywords": one("keywords"),
        "license": one("license"),
        "license_expression": one("license-expression"),
        "license_files": many("license-file"),
        "maintainer": one("maintainer"),
        "maintainer_email": one("maintainer-email"),
        "name": name,
        "package_url": links.project_page,
        "platform": one("platform"),
        "project_url": links.project_page,
        "project_urls": (!urls.is_empty()).then_some(Value::Object(urls)),
        "provides_extra": many("provides-extra"),
        "release_url": links.project_page,
        "requires_dist": many("requires-dist"),
        "requires_python": requires_python,
        "summary": one("summary"),
        "version": release.version,
        "yanked": release.yanked(),
        "yanked_reason": release.yanked_reason(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ProjectName;

    fn file(name: &str, yanked: Yanked, upload_time: Option<&str>) -> DistFile {
        DistFile {
            filename: name.into(),
            url: format!("https://up.invalid/{name}"),
            hashes: [("sha256".to_string(), crate::digest::sha256_hex(name.as_bytes()))].into(),
            requires_python: Some(">=3.8".into()),
            yanked,
            core_metadata: None,
            size: Some(10),
            upload_time: upload_time.map(str::to_string),
            metadata_on_demand: false,
            provenance: None,
        }
    }

    fn page(files: Vec<DistFile>, versions: Option<Vec<&str>>) -> ProjectPage {
        let mut page = ProjectPage {
            name: ProjectName::parse("demo").unwrap(),
            files,
            versions: versions.map(|v| v.into_iter().map(str::to_string).collect()),
            status: None,
        };
        page.sort();
        page
    }

    const LINKS: Links<'static> = Links { files_base: "http://h/files/", project_page: "http://h/-/ui/packages/demo" };

    #[test]
    fn releases_group_files_by_version_newest_first() {
        let p = page(
            vec![
                file("demo-1.0-py3-none-any.whl", Yanked::No, None),
                file("demo-1.0.0.tar.gz", Yanked::No, None),
                file("demo-2.0rc1.tar.gz", Yanked::No, None),
                file("demo-1.10.tar.gz", Yanked::No, None),
                file("demo-0.1-py2.7.egg", Yanked::No, None),
            ],
            Some(vec!["0.0.1"]),
        );
        let r = releases(&p);
        let versions: Vec<&str> = r.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(versions, ["2.0rc1", "1.10", "1.0", "0.1", "0.0.1"]);
        assert_eq!(r[2].files.len(), 2, "1.0 and 1.0.0 are one release");
        assert!(r[4].files.is_empty());
        assert_eq!(latest(&r).unwrap().version, "1.10", "a final release before a pre-release");
        assert_eq!(find(&r, "1.0.0").unwrap().version, "1.0");
        assert_eq!(find(&r, "2.0.0rc1").unwrap().version, "2.0rc1");
        assert!(find(&r, "3").is_none());
    }

    #[test]
    fn the_latest_release_skips_yanked_then_falls_back() {
        let y = || Yanked::Yes(Some("broken".into()));
        let p = page(vec![file("demo-2.0.tar.gz", y(), None), file("demo-1.0.tar.gz", Yanked::No, None)], None);
        assert_eq!(latest(&releases(&p)).unwrap().version, "1.0");
        let p = page(vec![file("demo-2.0.tar.gz", y(), None), file("demo-3.0a1.tar.gz", Yanked::No, None)], None);
        assert_eq!(latest(&releases(&p)).unwrap().version, "3.0a1", "a pre-release before a yanked one");
        let p = page(vec![file("demo-2.0.tar.gz", y(), None)], None);
        let r = releases(&p);
        let body: Value = serde_json::from_slice(&render(
            &p,
            &r,
            latest(&r).unwrap(),
            None,
            &LINKS,
            &Answer { all_releases: true, last_serial: 7, vulnerabilities: &[] },
        ))
        .unwrap();
        assert_eq!(body["info"]["version"], "2.0");
        assert_eq!(body["info"]["yanked"], true);
        assert_eq!(body["info"]["yanked_reason"], "broken");
        assert_eq!(body["urls"][0]["yanked_reason"], "broken");
    }

    #[test]
    fn the_shape_is_warehouses() {
        let p = page(vec![file("demo-1.0-py3-none-any.whl", Yanked::No, Some("2024-05-01T12:00:01.123456Z"))], None);
        let r = releases(&p);
        let md = b"Metadata-Version: 2.1\nName: Demo\nVersion: 1.0\nSummary: A demo\nRequires-Dist: idna>=2\nRequires-Dist: certifi\nProject-URL: Source, https://src.invalid/demo\nHome-page: https://home.invalid\nClassifier: A :: B\n\n# Demo\n\nLong text.\n";
        let md = CoreFields { headers: crate::metadata::headers(md), description: crate::metadata::description(md) };
        let body = render(
            &p,
            &r,
            &r[0],
            Some(&md),
            &LINKS,
            &Answer { all_releases: true, last_serial: 7, vulnerabilities: &[] },
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["info", "last_serial", "releases", "urls", "vulnerabilities"]);
        let info = &v["info"];
        assert_eq!(info["name"], "Demo");
        assert_eq!(info["summary"], "A demo");
        assert_eq!(info["requires_dist"], json!(["idna>=2", "certifi"]));
        assert_eq!(info["requires_python"], ">=3.8", "from the file when the metadata has none");
        assert_eq!(
            info["project_urls"],
            json!({"Homepage": "https://home.invalid", "Source": "https://src.invalid/demo"})
        );
        assert_eq!(info["description"], "# Demo\n\nLong text.");
        assert_eq!(info["classifiers"], json!(["A :: B"]));
        let f = &v["releases"]["1.0"][0];
        assert_eq!(f["packagetype"], "bdist_wheel");
        assert_eq!(f["python_version"], "py3");
        assert_eq!(f["upload_time"], "2024-05-01T12:00:01");
        assert_eq!(f["upload_time_iso_8601"], "2024-05-01T12:00:01.123456Z");
        assert_eq!(f["url"], format!("http://h/files/{}/demo-1.0-py3-none-any.whl", p.files[0].sha256().unwrap()));
        assert_eq!(f["digests"]["sha256"], p.files[0].sha256().unwrap());
        assert_eq!(v["urls"], v["releases"]["1.0"]);
        let version_route: Value = serde_json::from_slice(&render(
            &p,
            &r,
            &r[0],
            None,
            &LINKS,
            &Answer { all_releases: false, last_serial: 7, vulnerabilities: &[] },
        ))
        .unwrap();
        assert!(version_route.get("releases").is_none(), "warehouse's version route has no releases");
        assert_eq!(version_route["info"]["name"], "demo", "the page's name without metadata");
        assert_eq!(version_route["info"]["summary"], Value::Null);
    }

    #[test]
    fn package_types() {
        assert_eq!(kind("a-1.0.tar.gz"), ("sdist", "source".into()));
        assert_eq!(kind("a-1.0.tar.bz2"), ("sdist", "source".into()));
        assert_eq!(kind("a-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"), ("bdist_wheel", "cp312".into()));
        assert_eq!(kind("a-1.0-py2.7.egg"), ("bdist_egg", "2.7".into()));
        assert_eq!(kind("a-1.0.win32.exe"), ("bdist_wininst", "any".into()));
    }
}
