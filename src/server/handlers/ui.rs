//! The pages for people (`/-/ui/…`, issue 15): gathers what a page shows, as the reader may
//! see it (the same `Reader` the simple API gets, so nothing private leaks), and hands it to
//! `ui` to render. Clients of the simple API never get here: `/` redirects only browsers.

use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Response, header};

use crate::cache::{PageAnswer, Reader};
use crate::index::{ProjectName, Yanked, filename};
use crate::scope::Scope;
use crate::server::error::HttpError;
use crate::server::route::{UiView, simple_base, ui_base};
use crate::server::{body, body::Body, respond};
use crate::state::AppState;
use crate::ui::{self, FileRow, Frame};

/// Search answers list at most this many names.
const SEARCH_LIMIT: usize = 50;
/// Longer queries are cut: no project name is longer than this to a person.
const MAX_QUERY: usize = 100;
/// A project page lists the files of this many versions, newest first, unless asked for all
/// (a 4,000-file project's page is 2.4 MB with every file; benches/ui/project_page.py).
const VERSIONS_SHOWN: usize = 30;
/// Core metadata read for a page's summary, at most (a METADATA file is a few KiB).
const METADATA_READ_LIMIT: u64 = 1024 * 1024;

/// A browser, as opposed to pip, uv and the rest: it asks for XHTML, which no package client
/// does (pip, uv, poetry and pdm ask for the simple API's types and `text/html`, NEG-08).
pub fn is_browser(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/xhtml+xml"))
}

/// `GET /` from a browser: the home page.
pub fn to_home() -> Response<Body> {
    let mut resp = respond::see_other("/-/ui/");
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

pub fn asset(name: &str) -> Response<Body> {
    let (body, content_type) = match name {
        "style.css" => (ui::STYLE_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (ui::FAVICON_SVG, "image/svg+xml"),
        _ => (ui::APP_JS, "text/javascript; charset=utf-8"),
    };
    let mut resp = Response::new(body::full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

pub async fn view(
    state: &AppState,
    reader: &Reader,
    scope: &Scope,
    view: UiView,
    headers: &HeaderMap,
    query: Option<&str>,
    head: bool,
) -> Result<Response<Body>, HttpError> {
    if head {
        return view_head(state, reader, scope, view, query).await;
    }
    let default = &state.config.default_project;
    let base = ui_base(scope, default);
    let simple = simple_base(scope, default);
    let label = match scope {
        Scope::Project(id) if id == default && id == "default" => "default project".to_string(),
        Scope::Project(id) if id == default => format!("project {id} (the default)"),
        Scope::Project(id) => format!("project {id}"),
        Scope::Group(id) => format!("group {id}"),
    };
    let frame = Frame { base: &base, scope_label: &label, simple: &simple };
    let origin = origin(state, headers);
    let (found, html) = match view {
        UiView::Home => (true, home(state, reader, scope, &frame, &origin, headers).await),
        UiView::Search => {
            let q = query_param(query, "q").unwrap_or_default();
            let fragment = query_param(query, "fragment").is_some();
            let (names, total) = search(state, reader, &q).await;
            (true, ui::search(&frame, &q, &names, total, fragment))
        }
        UiView::Package(raw) => {
            let name = match canonical_package(&raw, &base, query)? {
                Ok(name) => name,
                Err(redirect) => return Ok(redirect),
            };
            let all = query_param(query, "all").is_some();
            package(state, reader, &frame, &origin, &simple, &name, all).await?
        }
    };
    Ok(respond::for_people(found, body::full(html), reader.private))
}

/// How many audit events `/-/ui/audit` shows.
const AUDIT_EVENTS: usize = 100;

/// `/-/ui/audit`: the newest audit events (the server checked the metrics token).
pub async fn audit(state: &AppState) -> Response<Body> {
    let events = state.cache.audit().newest(AUDIT_EVENTS).await;
    let default = &state.config.default_project;
    let scope = Scope::Project(default.clone());
    let (base, simple) = (ui_base(&scope, default), simple_base(&scope, default));
    let frame = Frame { base: &base, scope_label: "audit log", simple: &simple };
    respond::for_people(true, body::full(ui::audit(&frame, &events)), true)
}

/// HEAD of a page for people: its status and headers, without rendering it (issue 22, item
/// 10: a HEAD of `?all=1` or a search cost a whole rendering, and costs the sender nothing).
/// No `Content-Length`: knowing it takes the rendering (RFC 9110 lets HEAD omit it).
async fn view_head(
    state: &AppState,
    reader: &Reader,
    scope: &Scope,
    view: UiView,
    query: Option<&str>,
) -> Result<Response<Body>, HttpError> {
    let found = match view {
        UiView::Home | UiView::Search => true,
        UiView::Package(raw) => {
            let name = match canonical_package(&raw, &ui_base(scope, &state.config.default_project), query)? {
                Ok(name) => name,
                Err(redirect) => return Ok(redirect),
            };
            match state.cache.page(reader, &name).await? {
                PageAnswer::Found { .. } => true,
                PageAnswer::NotFound => false,
            }
        }
    };
    // A body of unknown length: the server then sends no Content-Length for this HEAD.
    let unknown_length = body::stream(Box::pin(futures_util::stream::empty()));
    Ok(respond::for_people(found, unknown_length, reader.private))
}

/// A package page's name, or the redirect to its normalized URL (the query kept).
fn canonical_package(
    raw: &str,
    base: &str,
    query: Option<&str>,
) -> Result<Result<ProjectName, Response<Body>>, HttpError> {
    let name = ProjectName::parse(raw).map_err(|e| HttpError::bad_request(e.to_string()))?;
    if name.as_str() == raw {
        return Ok(Ok(name));
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(Err(respond::moved_permanently(&format!("{base}packages/{name}{query}"))))
}

/// `scheme://host` as the browser reached this server, for the setup snippets. The Host
/// header is the client's word: anything but a plain host[:port] becomes `localhost`.
fn origin(state: &AppState, headers: &HeaderMap) -> String {
    crate::server::respond::origin(state.config.public_url.as_deref(), state.config.tls.is_some(), headers)
}

/// One `key=value` of the query string, percent-decoded (`+` is a space, as forms send it).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

async fn home(
    state: &AppState,
    reader: &Reader,
    scope: &Scope,
    frame: &Frame<'_>,
    origin: &str,
    headers: &HeaderMap,
) -> String {
    let stats = &state.stats;
    let seen = stats.upstream();
    let ago = |t: SystemTime| t.elapsed().map(|d| format!("{} s ago", d.as_secs())).unwrap_or_default();
    let upstream_health = match (seen.last_ok, seen.last_error) {
        (_, Some((at, status))) if seen.last_ok.is_none_or(|ok| at > ok) => {
            ("failing", format!("last fetch failed ({status}) {}", ago(at)))
        }
        (Some(ok), _) => ("ok", format!("last fetch {}", ago(ok))),
        _ => ("unknown", "nothing fetched since start".into()),
    };
    let (store_bytes, store_limit) = state.cache.store_usage();
    let upload_path = match scope {
        Scope::Project(id) if id == &state.config.default_project => Some("/".to_string()),
        Scope::Project(id) => Some(format!("/api/v4/projects/{id}/packages/pypi")),
        Scope::Group(_) => None,
    };
    ui::home(
        frame,
        &ui::Home {
            origin,
            simple_path: frame.simple,
            upload_path: upload_path.as_deref(),
            private_scope: reader.private,
            private_names: state.cache.private_names(reader).await.into_iter().collect(),
            upstream: state
                .config
                .default_upstream
                .as_ref()
                .map(|u| crate::upstream::guard::redact(u.settings.base.as_str())),
            upstream_health,
            store_degraded: state.cache.degraded(),
            store_bytes,
            store_limit,
            hits: stats.hits.load(Relaxed),
            misses: stats.misses.load(Relaxed),
            bytes_from_cache: stats.bytes_from_cache.load(Relaxed),
            bytes_from_upstream: stats.bytes_from_upstream.load(Relaxed),
            most_requested: stats.most_requested(10),
            // The same numbers as /metrics: shown when /metrics may be read (metrics_token).
            show_stats: crate::auth::metrics(&state.config, headers).is_ok(),
        },
    )
}

/// Names the reader can see (private names of its projects, names with cached pages) that
/// contain the query, normalized the way project names are (PEP 503): exact match first, then
/// prefixes, then the rest, each alphabetically.
async fn search(state: &AppState, reader: &Reader, query: &str) -> (Vec<ProjectName>, usize) {
    // PEP 503 normalization: runs of `-`, `_`, `.` (and spaces, as people type) are one `-`.
    let mut q = String::with_capacity(query.len().min(MAX_QUERY));
    for c in query.trim().chars().take(MAX_QUERY) {
        if matches!(c, '-' | '_' | '.' | ' ') {
            if !q.ends_with('-') {
                q.push('-');
            }
        } else {
            q.push(c.to_ascii_lowercase());
        }
    }
    if q.is_empty() {
        return (Vec::new(), 0);
    }
    let mut hits: Vec<(u8, ProjectName)> = state
        .cache
        .names(reader)
        .await
        .into_iter()
        .filter_map(|n| {
            let s = n.as_str();
            let rank = if s == q {
                0
            } else if s.starts_with(&q) {
                1
            } else if s.contains(&q) {
                2
            } else {
                return None;
            };
            Some((rank, n))
        })
        .collect();
    let total = hits.len();
    hits.sort();
    (hits.into_iter().take(SEARCH_LIMIT).map(|(_, n)| n).collect(), total)
}

async fn package(
    state: &AppState,
    reader: &Reader,
    frame: &Frame<'_>,
    origin: &str,
    simple: &str,
    name: &ProjectName,
    all: bool,
) -> Result<(bool, String), HttpError> {
    let (page, private) = match state.cache.page(reader, name).await? {
        PageAnswer::Found { page, private_upload, .. } => (page, private_upload),
        PageAnswer::NotFound => {
            let message = format!("No project `{name}` here: not uploaded to this scope, and not on the upstream.");
            return Ok((false, ui::not_found(frame, &message)));
        }
    };
    if !private && !reader.private {
        state.stats.requested(name);
    }
    let files_base = format!("{}files/", simple.strip_suffix("simple/").unwrap_or(simple));
    let mut versions: Vec<(String, Vec<FileRow>)> = Vec::new();
    let mut newest_metadata: Vec<(String, String)> = Vec::new();
    let mut slot: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for f in &page.page.files {
        let version = filename::parse(&f.filename).map(|d| d.version).unwrap_or_else(|_| "other".into());
        let href = f.larder_href();
        let row = FileRow {
            filename: f.filename.clone(),
            href: format!("{files_base}{}", href.strip_prefix("../../files/").unwrap_or(&href)),
            size: f.size,
            upload_time: f.upload_time.clone(),
            requires_python: f.requires_python.clone(),
            yanked: match &f.yanked {
                Yanked::No => None,
                Yanked::Yes(reason) => Some(reason.clone().unwrap_or_default()),
            },
            sha256: f.sha256().map(str::to_string),
        };
        if let Some(sha) = &f.core_metadata {
            newest_metadata.push((version.clone(), sha.clone()));
        }
        match slot.get(&version) {
            Some(&i) => versions[i].1.push(row),
            None => {
                slot.insert(version.clone(), versions.len());
                versions.push((version, vec![row]));
            }
        }
    }
    // Newest first, by PEP 440; what does not parse goes last.
    let key = |v: &str| pep440_rs::Version::from_str(v).ok();
    versions.sort_by_cached_key(|(v, _)| std::cmp::Reverse(key(v)));
    newest_metadata.sort_by_cached_key(|(v, _)| std::cmp::Reverse(key(v)));
    let (mut summary, mut requires_dist, mut metadata_of) = (None, Vec::new(), None);
    if let Some((version, sha)) = newest_metadata.first()
        && let Some(fields) = stored_metadata(state, reader, sha).await
    {
        summary = fields.iter().find(|(k, _)| k == "summary").map(|(_, v)| v.clone()).filter(|s| !s.is_empty());
        requires_dist = fields.iter().filter(|(k, _)| k == "requires-dist").map(|(_, v)| v.clone()).collect();
        metadata_of = Some(version.clone());
    }
    let hidden = (!all && versions.len() > VERSIONS_SHOWN).then(|| {
        let files = versions.iter().map(|(_, rows)| rows.len()).sum();
        (versions.len(), files)
    });
    if hidden.is_some() {
        versions.truncate(VERSIONS_SHOWN);
    }
    // The imported advisories of each version shown (issue 25); none for private uploads
    // unless `[advisories] match_private`.
    let advisories: std::collections::HashMap<String, Vec<ui::AdvisoryNote>> =
        match state.cache.advisories_apply(private) {
            false => Default::default(),
            true => versions
                .iter()
                .map(|(v, _)| {
                    let notes = state
                        .cache
                        .advisories_for(name, Some(v))
                        .iter()
                        .map(|a| ui::AdvisoryNote {
                            id: a.id.clone(),
                            summary: a.summary.clone(),
                            malicious: a.kind == crate::advisories::Kind::Malicious,
                        })
                        .collect::<Vec<_>>();
                    (v.clone(), notes)
                })
                .filter(|(_, notes)| !notes.is_empty())
                .collect(),
        };
    let html = ui::package(
        frame,
        &ui::Package {
            name,
            private,
            origin,
            simple_path: simple,
            versions,
            summary,
            requires_dist,
            metadata_of,
            hidden,
            advisories,
        },
    );
    Ok((true, html))
}

/// The header fields of a stored core metadata file; `None` when it is not stored (the page
/// never fetches anything for a person's look).
async fn stored_metadata(state: &AppState, reader: &Reader, sha: &str) -> Option<Vec<(String, String)>> {
    let blob = state.cache.stored_for(reader, sha).await.ok()??;
    let raw = blob.read_to_bytes(METADATA_READ_LIMIT).await.ok()?;
    Some(crate::metadata::headers(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_and_clients_are_told_apart() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            is_browser(&h)
        };
        // Firefox and Chromium.
        assert!(with("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        assert!(with("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"));
        // pip, uv (NEG-08).
        assert!(!with(
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
        ));
        assert!(!with(
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
        ));
        assert!(!with("text/html"));
        assert!(!is_browser(&HeaderMap::new()));
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(query_param(Some("q=a%20b&fragment=1"), "q").as_deref(), Some("a b"));
        assert_eq!(query_param(Some("q=my+pkg"), "q").as_deref(), Some("my pkg"));
        assert_eq!(query_param(Some("fragment"), "fragment").as_deref(), Some(""));
        assert_eq!(query_param(Some("q=%ff"), "q").as_deref(), Some("\u{fffd}"));
        assert_eq!(query_param(None, "q"), None);
    }
}
