//! The pages for people (issue 15): server-rendered HTML, one small script, one stylesheet.
//!
//! Pure rendering: the handler (`server::handlers::ui`) gathers what a page shows, already
//! filtered by what the reader may see; this module only turns it into HTML. Every string
//! from outside (names, filenames, reasons, metadata, the Host header) is escaped here.

use std::fmt::Write;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use crate::index::ProjectName;

pub const STYLE_CSS: &str = include_str!("style.css");
pub const APP_JS: &str = include_str!("app.js");
pub const FAVICON_SVG: &str = include_str!("favicon.svg");

/// What every page shares: where its scope's pages live and what it is called.
pub struct Frame<'a> {
    /// This scope's UI prefix (`/-/ui/`, `/-/ui/projects/<id>/`, …).
    pub base: &'a str,
    /// `default project`, `project 42`, `group 7`.
    pub scope_label: &'a str,
    /// The scope's simple API path, for the footer.
    pub simple: &'a str,
}

pub struct Home<'a> {
    /// `http://host:port`, as the browser reached this server.
    pub origin: &'a str,
    /// The scope's simple API path (`/simple/`, `/api/v4/projects/42/packages/pypi/simple/`).
    pub simple_path: &'a str,
    /// The upload path of the scope, when it is a project.
    pub upload_path: Option<&'a str>,
    /// Reading this scope needs a token.
    pub private_scope: bool,
    pub private_names: Vec<ProjectName>,
    pub upstream: Option<String>,
    /// `ok`, `failing` or `unknown`, with a sentence.
    pub upstream_health: (&'static str, String),
    pub store_degraded: Option<String>,
    pub store_bytes: u64,
    pub store_limit: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_upstream: u64,
    pub most_requested: Vec<(ProjectName, u64)>,
    /// The cache's numbers and the most requested projects are shown only to whoever may
    /// read `/metrics`.
    pub show_stats: bool,
}

pub struct Package<'a> {
    pub name: &'a ProjectName,
    pub private: bool,
    pub origin: &'a str,
    pub simple_path: &'a str,
    /// Newest first.
    pub versions: Vec<(String, Vec<FileRow>)>,
    pub summary: Option<String>,
    pub requires_dist: Vec<String>,
    /// Which version the summary was read from.
    pub metadata_of: Option<String>,
    /// How many versions and files there are, when `versions` holds only the newest ones.
    pub hidden: Option<(usize, usize)>,
    /// The advisories affecting each version (by version as listed).
    pub advisories: std::collections::HashMap<String, Vec<AdvisoryNote>>,
}

/// One advisory on the project page; its id links to Larder's OSV API.
pub struct AdvisoryNote {
    pub id: String,
    pub summary: String,
    pub malicious: bool,
}

pub struct FileRow {
    pub filename: String,
    /// Absolute path of Larder's file URL.
    pub href: String,
    pub size: Option<u64>,
    pub upload_time: Option<String>,
    pub requires_python: Option<String>,
    /// `Some(reason)` when yanked; the reason may be empty.
    pub yanked: Option<String>,
    pub sha256: Option<String>,
}

fn page(frame: &Frame, title: &str, main: &str) -> String {
    let base = attr(frame.base);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · Larder</title>
<link rel="icon" href="/-/ui/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/-/ui/static/style.css">
<script src="/-/ui/static/app.js" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="{base}">Larder</a> <span class="scope">{scope}</span>
<form class="search" role="search" action="{base}search" method="get">
<label for="q" class="visually-hidden">Search projects</label>
<input id="q" name="q" type="search" placeholder="Search projects" autocomplete="off" data-results="results">
</form>
</header>
<main>
{main}
</main>
<footer>Pages for people; pip, uv and other clients use the <a href="{base_simple}">simple API</a>.</footer>
</body>
</html>
"#,
        title = text(title),
        scope = text(frame.scope_label),
        base_simple = attr(frame.simple),
    )
}

/// A `<pre>` block with a copy button.
fn snippet(out: &mut String, label: &str, code: &str) {
    let _ = write!(
        out,
        r#"<div class="snippet"><div class="snippet-head"><span>{}</span><button type="button" class="copy" data-copy="{}">Copy</button></div><pre><code>{}</code></pre></div>"#,
        text(label),
        attr(code),
        text(code)
    );
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn package_link(out: &mut String, base: &str, name: &ProjectName) {
    let _ = write!(out, r#"<a href="{}packages/{}">{}</a>"#, attr(base), attr(name.as_str()), text(name.as_str()));
}

pub fn home(frame: &Frame, h: &Home) -> String {
    let mut m = String::with_capacity(8 * 1024);
    let index = format!("{}{}", h.origin, h.simple_path);
    m.push_str("<h1>Point your tools here</h1>");
    if h.private_scope {
        m.push_str(r#"<p class="note">This scope is private: clients send a token as the password (any username, or <code>__token__</code>).</p>"#);
    }
    m.push_str(r#"<div class="grid">"#);
    snippet(&mut m, "pip", &format!("pip install --index-url {index} <package>"));
    snippet(&mut m, "pip.conf", &format!("[global]\nindex-url = {index}"));
    snippet(&mut m, "uv", &format!("uv pip install --index-url {index} <package>"));
    snippet(
        &mut m,
        "pyproject.toml (uv)",
        &format!("[[tool.uv.index]]\nname = \"larder\"\nurl = \"{index}\"\ndefault = true"),
    );
    snippet(&mut m, "poetry", &format!("poetry source add --priority=primary larder {index}"));
    if let Some(upload) = h.upload_path {
        snippet(
            &mut m,
            "twine (private packages)",
            &format!("twine upload --repository-url {}{upload} -u __token__ -p <token> dist/*", h.origin),
        );
    }
    m.push_str("</div>");

    m.push_str(r#"<h2>The cache at work</h2><dl class="stats">"#);
    let answers = h.hits + h.misses;
    let ratio = if answers == 0 {
        "no answers yet".to_string()
    } else {
        format!("{:.1} %", 100.0 * h.hits as f64 / answers as f64)
    };
    let upstream = match &h.upstream {
        Some(u) => format!(
            r#"<code>{}</code> <span class="badge {}">{}</span>"#,
            text(u),
            h.upstream_health.0,
            text(&h.upstream_health.1)
        ),
        None => "none (private packages and what is stored only)".into(),
    };
    let store = match h.store_limit {
        Some(limit) => format!("{} of {}", bytes(h.store_bytes), bytes(limit)),
        None => format!("{} (no limit)", bytes(h.store_bytes)),
    };
    let store_health = match &h.store_degraded {
        Some(reason) => format!(r#" <span class="badge failing">{}</span>"#, text(reason)),
        None => r#" <span class="badge ok">healthy</span>"#.into(),
    };
    if !h.show_stats {
        let _ = write!(
            m,
            "<div><dt>Upstream</dt><dd>{upstream}</dd></div><div><dt>Store</dt><dd>{}</dd></div></dl>\
             <p class=\"note\">The cache's numbers are shown to holders of the metrics token.</p>",
            store_health.trim_start()
        );
    } else {
        let _ = write!(
            m,
            "<div><dt>Upstream</dt><dd>{upstream}</dd></div>\
         <div><dt>Store</dt><dd>{store}{store_health}</dd></div>\
         <div><dt>Hit ratio</dt><dd>{ratio} <small>({} hits, {} misses since start)</small></dd></div>\
         <div><dt>Served from cache</dt><dd>{}</dd></div>\
         <div><dt>Fetched from upstream</dt><dd>{}</dd></div></dl>",
            h.hits,
            h.misses,
            bytes(h.bytes_from_cache),
            bytes(h.bytes_from_upstream),
        );
    }

    m.push_str(r#"<div class="columns"><section><h2>Private packages</h2>"#);
    if h.private_names.is_empty() {
        m.push_str("<p>None uploaded to this scope yet.</p>");
    } else {
        m.push_str(r#"<ul class="names">"#);
        for name in &h.private_names {
            m.push_str("<li>");
            package_link(&mut m, frame.base, name);
            m.push_str(r#" <span class="badge private">private</span></li>"#);
        }
        m.push_str("</ul>");
    }
    m.push_str("</section><section><h2>Most requested</h2>");
    if !h.show_stats {
        m.push_str("<p>Shown to holders of the metrics token.</p>");
    } else if h.most_requested.is_empty() {
        m.push_str("<p>Nothing requested since start.</p>");
    } else {
        m.push_str(r#"<ol class="names">"#);
        for (name, n) in &h.most_requested {
            m.push_str("<li>");
            package_link(&mut m, frame.base, name);
            let _ = write!(m, " <small>{n}×</small></li>");
        }
        m.push_str("</ol>");
    }
    m.push_str(r#"</section></div><div id="results" class="results" aria-live="polite"></div>"#);
    page(frame, "Home", &m)
}

/// The result list alone (`fragment`, what the script asks for as you type) or a whole page.
pub fn search(frame: &Frame, query: &str, names: &[ProjectName], total: usize, fragment: bool) -> String {
    let mut m = String::with_capacity(names.len() * 80 + 256);
    if query.is_empty() {
        m.push_str("<p>Type part of a project name.</p>");
    } else if names.is_empty() {
        let _ = write!(m, "<p>No project matches <strong>{}</strong>.</p>", text(query));
    } else {
        let more = if total > names.len() { format!(" (first {})", names.len()) } else { String::new() };
        let _ = write!(
            m,
            r#"<p class="count">{total} project{} match <strong>{}</strong>{more}</p><ul class="names">"#,
            if total == 1 { "" } else { "s" },
            text(query)
        );
        for name in names {
            m.push_str("<li>");
            package_link(&mut m, frame.base, name);
            m.push_str("</li>");
        }
        m.push_str("</ul>");
    }
    if fragment {
        return m;
    }
    page(
        frame,
        &format!("Search: {query}"),
        &format!(r#"<h1>Search</h1><div id="results" class="results" aria-live="polite">{m}</div>"#),
    )
}

pub fn package(frame: &Frame, p: &Package) -> String {
    let name = p.name.as_str();
    let mut m = String::with_capacity(p.versions.iter().map(|(_, f)| f.len()).sum::<usize>() * 700 + 4096);
    let source = if p.private {
        r#"<span class="badge private">private</span>"#
    } else {
        r#"<span class="badge upstream">from upstream</span>"#
    };
    let _ = write!(m, "<h1>{} {source}</h1>", text(name));
    if let Some(summary) = &p.summary {
        let _ = write!(m, r#"<p class="summary">{}</p>"#, text(summary));
    }
    snippet(&mut m, "Install", &format!("pip install --index-url {}{} {name}", p.origin, p.simple_path));
    if let Some(version) = &p.metadata_of {
        let _ = write!(m, "<details><summary>Requirements of {} ({})</summary>", text(version), p.requires_dist.len());
        if p.requires_dist.is_empty() {
            m.push_str("<p>No dependencies.</p>");
        } else {
            m.push_str(r#"<ul class="deps">"#);
            for r in &p.requires_dist {
                let _ = write!(m, "<li><code>{}</code></li>", text(r));
            }
            m.push_str("</ul>");
        }
        m.push_str("</details>");
    }
    let files: usize = p.versions.iter().map(|(_, f)| f.len()).sum();
    let (all_versions, all_files) = p.hidden.unwrap_or((p.versions.len(), files));
    let _ = write!(m, "<h2>{all_versions} versions, {all_files} files</h2>");
    for (i, (version, rows)) in p.versions.iter().enumerate() {
        let open = if i == 0 { " open" } else { "" };
        let yanked = rows.iter().all(|r| r.yanked.is_some());
        let notes = p.advisories.get(version).map(Vec::as_slice).unwrap_or_default();
        let _ = write!(
            m,
            r#"<details class="version"{open}><summary><strong>{}</strong>{}{}</summary>"#,
            text(version),
            if yanked { r#" <span class="badge failing">yanked</span>"# } else { "" },
            match notes.len() {
                0 => String::new(),
                1 => r#" <span class="badge failing">1 advisory</span>"#.to_string(),
                n => format!(r#" <span class="badge failing">{n} advisories</span>"#),
            }
        );
        if !notes.is_empty() {
            m.push_str(r#"<ul class="advisories">"#);
            for a in notes {
                let kind = if a.malicious { "malicious package" } else { "vulnerability" };
                let _ = write!(
                    m,
                    r#"<li><a href="{}/-/osv/v1/vulns/{}">{}</a> ({kind}): {}</li>"#,
                    attr(p.origin),
                    attr(&a.id),
                    text(&a.id),
                    text(&a.summary)
                );
            }
            m.push_str("</ul>");
        }
        m.push_str(r#"<ul class="files">"#);
        for r in rows {
            let _ = write!(
                m,
                r#"<li><a class="filename" href="{}">{}</a><div class="facts">"#,
                attr(&r.href),
                text(&r.filename)
            );
            if let Some(size) = r.size {
                let _ = write!(m, "<span>{}</span>", bytes(size));
            }
            if let Some(t) = &r.upload_time {
                let _ =
                    write!(m, r#"<span><time datetime="{}">{}</time></span>"#, attr(t), text(t.get(..10).unwrap_or(t)));
            }
            if let Some(rp) = &r.requires_python {
                let _ = write!(m, "<span>Python {}</span>", text(rp));
            }
            if let Some(reason) = &r.yanked {
                let reason = if reason.is_empty() { String::new() } else { format!(": {}", text(reason)) };
                let _ = write!(m, r#"<span class="badge failing">yanked{reason}</span>"#);
            }
            if let Some(sha) = &r.sha256 {
                let _ = write!(
                    m,
                    r#"<span class="sha"><code title="sha256">{}…</code><button type="button" class="copy" data-copy="{}" aria-label="Copy sha256 of {}">Copy sha256</button></span>"#,
                    text(sha.get(..12).unwrap_or(sha)),
                    attr(sha),
                    attr(&r.filename)
                );
            }
            m.push_str("</div></li>");
        }
        m.push_str("</ul></details>");
    }
    if let Some((versions, files)) = p.hidden {
        let _ = write!(
            m,
            r#"<p class="more">Newest {} versions shown. <a href="?all=1">Show all {versions} versions ({files} files)</a></p>"#,
            p.versions.len()
        );
    }
    m.push_str(r#"<div id="results" class="results" aria-live="polite"></div>"#);
    page(frame, name, &m)
}

/// A page that says what is missing (a 404 a person reads).
/// The audit page: the newest events first, one row each.
pub fn audit(frame: &Frame, events: &[crate::audit::Event]) -> String {
    use crate::audit::Who;
    let mut out = String::from("<h1>Audit log</h1>");
    if events.is_empty() {
        out.push_str("<p>No write has been recorded yet.</p>");
    } else {
        out.push_str(r#"<table class="files"><thead><tr><th>Time</th><th>Action</th><th>Project</th><th>File</th><th>Who</th><th>From</th><th>Result</th></tr></thead><tbody>"#);
        for e in events {
            let who = match &e.who {
                Who::Token { name } => format!("token {name}"),
                Who::Publisher { publisher, subject, workflow, .. } => {
                    format!(
                        "{publisher}: {subject}{}",
                        workflow.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
                    )
                }
                Who::Operator { via } => via.clone(),
                Who::Server { job } => format!("Larder ({job})"),
                Who::Anonymous => "anonymous".into(),
            };
            let result = match (&e.result, &e.reason) {
                (r, Some(reason)) => format!("{r:?}: {reason}"),
                (r, None) => format!("{r:?}"),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&e.time),
                text(e.action.as_str()),
                text(e.project.as_deref().unwrap_or("")),
                text(e.filename.as_deref().unwrap_or("")),
                text(&who),
                text(e.peer.as_deref().unwrap_or("")),
                text(&result),
            );
        }
        out.push_str("</tbody></table>");
    }
    page(frame, "Audit log", &out)
}

pub fn not_found(frame: &Frame, message: &str) -> String {
    page(
        frame,
        "Not found",
        &format!(r#"<h1>Not found</h1><p>{}</p><div id="results" class="results"></div>"#, text(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        let frame = Frame { base: "/-/ui/", scope_label: "default project", simple: "/simple/" };
        let name = ProjectName::parse("evil").unwrap();
        let row = FileRow {
            filename: "evil-1.0.tar.gz".into(),
            href: "/files/x/evil\"><script>".into(),
            size: Some(1),
            upload_time: Some("<b>".into()),
            requires_python: Some(">=3.8<script>".into()),
            yanked: Some("<img src=x onerror=alert(1)>".into()),
            sha256: Some("\"><script>".into()),
        };
        let html = package(
            &frame,
            &Package {
                name: &name,
                private: false,
                origin: "http://h\"><script>",
                simple_path: "/simple/",
                versions: vec![("1.0<script>".into(), vec![row])],
                summary: Some("<script>alert(1)</script>".into()),
                requires_dist: vec!["x<script>".into()],
                metadata_of: Some("1.0".into()),
                hidden: None,
                advisories: [(
                    "1.0<script>".to_string(),
                    vec![AdvisoryNote { id: "GHSA-1".into(), summary: "<b>bad</b>".into(), malicious: false }],
                )]
                .into_iter()
                .collect(),
            },
        );
        assert_eq!(html.matches("<script").count(), 1, "only the page's own script tag: {html}");
        assert!(!html.contains("<img"));
        assert!(html.contains("GHSA-1</a> (vulnerability): &lt;b&gt;bad"), "advisories listed, escaped: {html}");
        let s = search(&frame, "<script>", &[], 0, true);
        assert!(!s.contains("<script>"));
    }

    #[test]
    fn a_long_history_is_cut_with_a_way_to_see_all() {
        let frame = Frame { base: "/-/ui/", scope_label: "default project", simple: "/simple/" };
        let name = ProjectName::parse("big").unwrap();
        let p = |hidden| Package {
            name: &name,
            private: false,
            origin: "http://h",
            simple_path: "/simple/",
            versions: vec![("2.0".into(), Vec::new())],
            summary: None,
            requires_dist: Vec::new(),
            metadata_of: None,
            hidden,
            advisories: Default::default(),
        };
        let cut = package(&frame, &p(Some((1000, 4000))));
        assert!(cut.contains("1000 versions, 4000 files") && cut.contains(r#"href="?all=1""#));
        assert!(!package(&frame, &p(None)).contains("?all=1"));
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(15 * 1024 * 1024), "15.0 MiB");
    }
}
