//! PEP 503 HTML rendering of the model (HTML-01 … HTML-13).

use std::fmt::Write;

use html_escape::{encode_double_quoted_attribute, encode_text};

use super::{ProjectName, ProjectPage, Yanked};

/// Renders one project's page. File links are relative (see `DistFile::larder_href`);
/// provenance links are absolute under `files_base`, shown only when it is given (PEP 740).
pub fn render_project(page: &ProjectPage, files_base: Option<&str>) -> String {
    let name = page.name.as_str();
    let with_provenance = files_base.is_some() && page.has_provenance();
    let mut out = String::with_capacity(256 + page.files.len() * 320);
    out.push_str("<!DOCTYPE html>\n<html>\n  <head>\n");
    // HTML-02 / VER-02: the same version the JSON rendering claims.
    let _ =
        writeln!(out, "    <meta name=\"pypi:repository-version\" content=\"{}\">", page.api_version(with_provenance));
    // HTML-10 (PEP 792).
    if let Some(status) = &page.status {
        let _ = writeln!(
            out,
            "    <meta name=\"pypi:project-status\" content=\"{}\">",
            encode_attr_strict(status.status.as_str())
        );
        if let Some(reason) = &status.reason {
            let _ = writeln!(
                out,
                "    <meta name=\"pypi:project-status-reason\" content=\"{}\">",
                encode_attr_strict(reason)
            );
        }
    }
    let _ = writeln!(out, "    <title>Links for {name}</title>\n  </head>\n  <body>\n    <h1>Links for {name}</h1>");
    let mut href = String::with_capacity(256);
    for file in &page.files {
        href.clear();
        file.write_larder_href(&mut href);
        out.push_str("    <a href=\"");
        out.push_str(&encode_double_quoted_attribute(&href));
        // HTML-04: exactly one hash fragment, sha256.
        if let Some(sha) = file.sha256() {
            out.push_str("#sha256=");
            out.push_str(sha);
        }
        out.push('"');
        if let Some(rp) = &file.requires_python {
            // HTML-05: `>=3.9` is written `&gt;=3.9`.
            let _ = write!(out, " data-requires-python=\"{}\"", encode_attr_strict(rp));
        }
        match &file.yanked {
            Yanked::No => {}
            // HTML-06: never a bare `data-yanked`; pip ignores it.
            Yanked::Yes(reason) => {
                let _ = write!(out, " data-yanked=\"{}\"", encode_attr_strict(reason.as_deref().unwrap_or("")));
            }
        }
        if let Some(md) = &file.core_metadata {
            // HTML-07: both attributes, same value.
            // Validated as hex wherever it enters; escaped anyway, as every other attribute is.
            let md = encode_attr_strict(md);
            let _ = write!(out, " data-dist-info-metadata=\"sha256={md}\" data-core-metadata=\"sha256={md}\"");
        } else if file.metadata_on_demand {
            // Served on demand, hash not known yet (HTML-07 allows `true`; issue 11).
            out.push_str(" data-dist-info-metadata=\"true\" data-core-metadata=\"true\"");
        }
        // HTML-09: an absolute URL (PROV-02).
        if let (true, Some(base)) = (with_provenance, files_base)
            && let Some(href) = file.provenance_href(base)
        {
            let _ = write!(out, " data-provenance=\"{}\"", encode_attr_strict(&href));
        }
        let _ = writeln!(out, ">{}</a><br />", encode_text(&file.filename));
    }
    out.push_str("  </body>\n</html>\n");
    out
}

/// Renders the project list; `prefix` is the absolute path of the `simple/` route, because the
/// list is also served without its trailing slash, where relative links would break (ROUTE-02).
pub fn render_root<'a>(names: impl Iterator<Item = &'a ProjectName>, prefix: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n    <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for name in names {
        let _ = writeln!(out, "    <a href=\"{prefix}{name}/\">{name}</a><br />");
    }
    out.push_str("  </body>\n</html>\n");
    out
}

/// Escapes `&`, `<`, `>` and `"` in attribute values (HTML-05; some users parse pages as XML).
fn encode_attr_strict(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::DistFile;

    fn file(name: &str) -> DistFile {
        DistFile {
            metadata_on_demand: false,
            provenance: None,
            filename: name.into(),
            url: format!("http://up/{name}"),
            hashes: [("sha256".to_string(), "ab".repeat(32))].into(),
            requires_python: Some(">=3.9".into()),
            yanked: Yanked::No,
            core_metadata: None,
            size: None,
            upload_time: None,
        }
    }

    #[test]
    fn html_attributes_are_written_per_the_standard() {
        let mut yanked = file("p-1.0.tar.gz");
        yanked.yanked = Yanked::Yes(None);
        let mut reason = file("p-1.1.tar.gz");
        reason.yanked = Yanked::Yes(Some("broken & bad <deps>".into()));
        let mut md = file("p-1.2-py3-none-any.whl");
        md.core_metadata = Some("cd".repeat(32));
        let page = ProjectPage {
            name: ProjectName::parse("p").unwrap(),
            files: vec![yanked, reason, md],
            versions: None,
            status: None,
        };
        let html = render_project(&page, None);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains(r#"<meta name="pypi:repository-version" content="1.0">"#));
        assert!(html.contains(&format!(r##"href="../../files/{0}/p-1.0.tar.gz#sha256={0}""##, "ab".repeat(32))));
        assert!(html.contains(r#"data-requires-python="&gt;=3.9""#), "HTML-05");
        assert!(html.contains(r#"data-yanked="""#), "HTML-06");
        assert!(html.contains(r#"data-yanked="broken &amp; bad &lt;deps&gt;""#));
        let sha = "cd".repeat(32);
        assert!(
            html.contains(&format!(r#"data-dist-info-metadata="sha256={sha}" data-core-metadata="sha256={sha}""#)),
            "HTML-07"
        );
        assert_eq!(html.matches("data-core-metadata").count(), 1, "HTML-08: only where metadata exists");
    }
}
