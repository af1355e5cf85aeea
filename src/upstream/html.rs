//! Parsing upstream PEP 503 HTML pages into the index model, the way pip reads them: the first
//! `<base href>` sets the base URL, each `<a href>` is a file whose name is the last segment of
//! its URL path, hashes come from the fragment, and `data-*` attributes carry the rest (UP-01).

use std::cell::RefCell;

use lol_html::{HtmlRewriter, Settings, element};
use url::Url;

use crate::index::{DistFile, ProjectName, ProjectPage, ProjectStatus, Yanked, filename, json::normalize_hashes};

struct Anchor {
    href: String,
    requires_python: Option<String>,
    yanked: Option<String>,
    core_metadata: Option<String>,
    provenance: Option<String>,
}

/// Parses an upstream HTML page. Anchors that cannot be understood are dropped one by one (UP-07).
/// `max_files` bounds the links it collects (`max_page_files`): counted as they are found,
/// so a hostile page stops early (issue 22).
pub fn parse_project(body: &[u8], name: &ProjectName, page_url: &Url, max_files: usize) -> Result<ProjectPage, String> {
    parse_links(body, name, page_url, max_files).map_err(|e| match e {
        lol_html::errors::RewritingError::ContentHandlerError(inner) => inner.to_string(),
        other => other.to_string(),
    })
}

fn parse_links(
    body: &[u8],
    name: &ProjectName,
    page_url: &Url,
    max_files: usize,
) -> Result<ProjectPage, lol_html::errors::RewritingError> {
    let base: RefCell<Option<String>> = RefCell::new(None);
    let anchors: RefCell<Vec<Anchor>> = RefCell::new(Vec::new());
    // PEP 792 (HTML-10): `<meta name="pypi:project-status" content="…">` and its reason.
    let status: RefCell<(Option<String>, Option<String>)> = RefCell::new((None, None));
    {
        let mut rewriter = HtmlRewriter::new(
            Settings::new()
                .append_element_content_handler(element!("base[href]", |el| {
                    let mut base = base.borrow_mut();
                    if base.is_none() {
                        *base = el.get_attribute("href").map(|h| decode(&h));
                    }
                    Ok(())
                }))
                .append_element_content_handler(element!("meta[name][content]", |el| {
                    let content = el.get_attribute("content").map(|v| decode(&v));
                    match el.get_attribute("name").as_deref() {
                        Some("pypi:project-status") => status.borrow_mut().0 = content,
                        Some("pypi:project-status-reason") => status.borrow_mut().1 = content,
                        _ => {}
                    }
                    Ok(())
                }))
                .append_element_content_handler(element!("a[href]", |el| {
                    if anchors.borrow().len() >= max_files {
                        return Err(crate::index::json::too_many_files(max_files).into());
                    }
                    let attr = |n: &str| el.get_attribute(n).map(|v| decode(&v));
                    anchors.borrow_mut().push(Anchor {
                        href: attr("href").unwrap_or_default(),
                        requires_python: attr("data-requires-python"),
                        yanked: attr("data-yanked"),
                        core_metadata: attr("data-core-metadata").or_else(|| attr("data-dist-info-metadata")),
                        provenance: attr("data-provenance"),
                    });
                    Ok(())
                }))
                // Odd pages still parse: ambiguity is not an error for a link scraper.
                .with_strict(false),
            |_: &[u8]| {},
        );
        // lol_html is fastest fed in pieces of this size (crates-notes §3.6).
        for chunk in body.chunks(64 * 1024) {
            rewriter.write(chunk)?;
        }
        rewriter.end()?;
    }
    let base_url = match base.into_inner() {
        Some(b) => page_url.join(&b).unwrap_or_else(|_| page_url.clone()),
        None => page_url.clone(),
    };
    let (status, reason) = status.into_inner();
    let status = status.and_then(|s| ProjectStatus::from_upstream(&s, reason));
    let mut files: Vec<DistFile> =
        anchors.into_inner().into_iter().filter_map(|a| into_dist_file(a, &base_url)).collect();
    // YK-04: a quarantined project offers no files.
    if status.as_ref().is_some_and(ProjectStatus::is_quarantined) {
        files.clear();
    }
    let mut page = ProjectPage { name: name.clone(), files, versions: None, status };
    page.sort();
    Ok(page)
}

/// lol_html hands attribute values over still escaped (crates-notes §3.6).
fn decode(raw: &str) -> String {
    html_escape::decode_html_entities(raw).into_owned()
}

fn into_dist_file(a: Anchor, base: &Url) -> Option<DistFile> {
    let mut url = base.join(&a.href).ok()?;
    // Only http(s) files can be fetched (found by fuzzing: `a:/0` was kept, then refused later).
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let fragment = url.fragment().map(str::to_string);
    url.set_fragment(None);
    // pip takes the filename from the URL path, not the anchor text (HTML-03).
    let last = url.path_segments()?.next_back()?.to_string();
    let filename = percent_encoding::percent_decode_str(&last).decode_utf8().ok()?.into_owned();
    if !filename::is_safe(&filename) {
        return None;
    }
    let mut hashes = std::collections::BTreeMap::new();
    if let Some(fragment) = fragment {
        for part in fragment.split('&') {
            if let Some((algo, digest)) = part.split_once('=')
                && matches!(algo, "sha256" | "sha384" | "sha512" | "md5" | "blake2b")
            {
                hashes.insert(algo.to_string(), digest.to_string());
            }
        }
    }
    let core_metadata = a
        .core_metadata
        .and_then(|v| v.strip_prefix("sha256=").map(str::to_ascii_lowercase))
        .filter(|s| crate::index::is_sha256_hex(s));
    Some(DistFile {
        metadata_on_demand: false,
        filename,
        url: url.into(),
        hashes: normalize_hashes(hashes),
        requires_python: a.requires_python.filter(|s| !s.is_empty()),
        yanked: match a.yanked {
            None => Yanked::No,
            Some(r) if r.is_empty() => Yanked::Yes(None),
            Some(r) => Yanked::Yes(Some(r)),
        },
        core_metadata,
        size: None,
        upload_time: None,
        provenance: a
            .provenance
            .and_then(|p| base.join(&p).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pip_style_pages() {
        let sha = "ab".repeat(32);
        let md = "cd".repeat(32);
        let html = format!(
            r#"<!DOCTYPE html><html><head><base href="https://files.up/pkgs/"></head><body>
            <a href="demo-1.0-py3-none-any.whl#sha256={sha}" data-requires-python="&gt;=3.8" data-core-metadata="sha256={md}">demo-1.0-py3-none-any.whl</a>
            <a href="sub/demo-0.9.tar.gz?x=1&amp;y=2#md5=00ff" data-yanked="">demo-0.9.tar.gz</a>
            <a href="../demo%2B-0.8.zip" data-yanked="old &amp; bad">x</a>
            <a href="/">nav</a>
            </body></html>"#
        );
        let name = ProjectName::parse("demo").unwrap();
        let page_url = Url::parse("https://up/simple/demo/").unwrap();
        let page = parse_project(html.as_bytes(), &name, &page_url, usize::MAX).unwrap();
        let links = html.matches("<a ").count();
        assert!(parse_project(html.as_bytes(), &name, &page_url, links).is_ok(), "exactly at the bound");
        let err = parse_project(html.as_bytes(), &name, &page_url, links - 1).unwrap_err();
        assert!(err.contains("max_page_files"), "{err}");
        let names: Vec<_> = page.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(names, ["demo+-0.8.zip", "demo-0.9.tar.gz", "demo-1.0-py3-none-any.whl"]);
        let whl = &page.files[2];
        assert_eq!(whl.url, "https://files.up/pkgs/demo-1.0-py3-none-any.whl");
        assert_eq!(whl.sha256(), Some(sha.as_str()));
        assert_eq!(whl.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(whl.core_metadata.as_deref(), Some(md.as_str()));
        assert_eq!(page.files[1].url, "https://files.up/pkgs/sub/demo-0.9.tar.gz?x=1&y=2");
        assert_eq!(page.files[1].yanked, Yanked::Yes(None));
        assert_eq!(page.files[0].yanked, Yanked::Yes(Some("old & bad".into())));
    }
}
