//! Routing: a request path becomes a `Route` once, here. Handlers never see raw paths.
//!
//! GitLab's layout (GL-01):
//! - `/api/v4/projects/:id/packages/pypi/simple[/]`, `…/simple/:name[/]`, `…/files/:sha256/:file`,
//!   and `…/packages/pypi[/]` for uploads;
//! - `/api/v4/groups/:id/-/packages/pypi/…` for the read-only group views;
//! - `/simple/…` and `/files/…` as aliases for the default project;
//! - `…/pypi/:name/json` and `…/pypi/:name/:version/json` beside each `simple/` (PyPI's JSON
//!   API, issue 24): `/pypi/…` for the default project, `…/packages/pypi/pypi/…` for the rest.

use percent_encoding::percent_decode_str;

pub use crate::scope::Scope;
use crate::scope::is_valid_id as is_valid_project_id;

/// The calls of OSV's API Larder answers (what `uv audit --service-url` sends).
#[derive(Debug, PartialEq, Eq)]
pub enum OsvCall {
    /// `POST v1/query`: one package (and version).
    Query,
    /// `POST v1/querybatch`: many, answered with ids only.
    QueryBatch,
    /// `GET v1/vulns/<id>`: one record.
    Vuln(String),
}

/// Trusted publishing's calls, at the host root (issue 23; clients derive them from the
/// upload URL's authority).
#[derive(Debug, PartialEq, Eq)]
pub enum OidcCall {
    /// `GET /_/oidc/audience`
    Audience,
    /// `POST /_/oidc/mint-token`
    Mint,
    /// `POST /_/oidc/burn-token`
    Burn,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `/-/ready`: 503 while the store cannot be written (for load balancers).
    Ready,
    /// OSV's API under `/-/osv/` (issue 25), answered from the imported advisories.
    Osv(OsvCall),
    Oidc(OidcCall),
    Metrics,
    /// The project list. `prefix` is the absolute path of `simple/`, with its slash.
    SimpleRoot {
        scope: Scope,
        prefix: String,
    },
    /// One project's page, with the name as requested (percent-decoded, not yet validated).
    SimpleDetail {
        scope: Scope,
        prefix: String,
        name: String,
        trailing_slash: bool,
    },
    /// A file or its `.metadata`. `key` is the raw `:sha256` segment; `filename` is decoded (ROUTE-05).
    File {
        scope: Scope,
        key: String,
        filename: String,
    },
    /// `files/<key>/<filename>/yank`: POST yanks a private file, DELETE un-yanks it.
    Yank {
        scope: Scope,
        key: String,
        filename: String,
    },
    /// PyPI's JSON API (issue 24): `<base>/pypi/<name>/json` and `…/<name>/<version>/json`.
    /// `base` is the absolute path of `pypi/` and `prefix` the scope's `simple/`, both with
    /// their slashes; the name and version as requested (decoded); `canonical` unless the URL
    /// had a trailing slash (warehouse redirects those).
    PypiJson {
        scope: Scope,
        base: String,
        prefix: String,
        name: String,
        version: Option<String>,
        canonical: bool,
    },
    /// `…/packages/pypi/-/retention`: POST applies the project's retention policy now
    /// (`?dry_run=true`: only says what it would delete); `larder retention` sends it.
    Retention {
        scope: Scope,
    },
    /// The legacy upload endpoint.
    Upload {
        scope: Scope,
    },
    /// `/-/ui/…`: the pages for people (issue 15), for one scope.
    Ui {
        scope: Scope,
        view: UiView,
    },
    /// `/-/ui/audit`: the newest audit events (issue 23), for whoever holds the metrics token.
    UiAudit,
    /// `/-/ui/static/<file>`: the pages' stylesheet and script.
    UiAsset(&'static str),
    /// `/-/ui/projects/<id>` or `/-/ui/groups/<id>` without the slash its pages need.
    UiSlash,
    /// Anything else, with the reason to give.
    NotFound(&'static str),
    /// A path with bytes that cannot be decoded or used.
    BadPath(String),
}

/// One page for people, under a scope's UI prefix (`/-/ui/`, `/-/ui/projects/<id>/`,
/// `/-/ui/groups/<id>/`).
#[derive(Debug, PartialEq, Eq)]
pub enum UiView {
    /// Setup snippets, the scope's private packages, the cache at work.
    Home,
    /// `search?q=`: project names as you type.
    Search,
    /// `packages/<name>`: one project's versions and files (the name as requested, decoded).
    Package(String),
}

/// The UI prefix of a scope, for links between its pages.
pub fn ui_base(scope: &Scope, default_project: &str) -> String {
    match scope {
        Scope::Project(id) if id == default_project => "/-/ui/".into(),
        Scope::Project(id) => format!("/-/ui/projects/{id}/"),
        Scope::Group(id) => format!("/-/ui/groups/{id}/"),
    }
}

/// The simple API prefix of a scope (`…/simple/`), for setup snippets and file links.
pub fn simple_base(scope: &Scope, default_project: &str) -> String {
    match scope {
        Scope::Project(id) if id == default_project => "/simple/".into(),
        Scope::Project(id) => format!("/api/v4/projects/{id}/packages/pypi/simple/"),
        Scope::Group(id) => format!("/api/v4/groups/{id}/-/packages/pypi/simple/"),
    }
}

fn parse_ui(rest: &str, default_project: &str) -> Route {
    match rest {
        "static/style.css" => return Route::UiAsset("style.css"),
        "static/app.js" => return Route::UiAsset("app.js"),
        "static/favicon.svg" => return Route::UiAsset("favicon.svg"),
        "audit" => return Route::UiAudit,
        _ => {}
    }
    let (scope, rest) = if let Some(r) = rest.strip_prefix("projects/") {
        let Some((id, rest)) = r.split_once('/') else { return Route::UiSlash };
        if !is_valid_project_id(id) {
            return Route::BadPath(format!("invalid project id `{id}`"));
        }
        (Scope::Project(id.to_string()), rest)
    } else if let Some(r) = rest.strip_prefix("groups/") {
        let Some((id, rest)) = r.split_once('/') else { return Route::UiSlash };
        if !is_valid_project_id(id) {
            return Route::BadPath(format!("invalid group id `{id}`"));
        }
        (Scope::Group(id.to_string()), rest)
    } else {
        (Scope::Project(default_project.to_string()), rest)
    };
    let view = match rest {
        "" => UiView::Home,
        "search" => UiView::Search,
        _ => match rest.strip_prefix("packages/").map(|n| n.strip_suffix('/').unwrap_or(n)) {
            Some(name) if !name.is_empty() && !name.contains('/') => match decode(name) {
                Ok(name) => UiView::Package(name),
                Err(r) => return *r,
            },
            _ => return Route::NotFound("unknown page"),
        },
    };
    Route::Ui { scope, view }
}

impl Route {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Osv(_) => "osv",
            Route::Oidc(_) => "oidc",
            Route::Metrics => "metrics",
            Route::SimpleRoot { .. } => "simple_root",
            Route::SimpleDetail { .. } => "simple_detail",
            Route::File { .. } => "file",
            Route::Yank { .. } => "yank",
            Route::PypiJson { .. } => "pypi_json",
            Route::Upload { .. } => "upload",
            Route::Retention { .. } => "retention",
            Route::Ui { .. } | Route::UiAsset(_) | Route::UiSlash | Route::UiAudit => "ui",
            Route::NotFound(_) => "not_found",
            Route::BadPath(_) => "bad_path",
        }
    }

    /// The project or group id, for logs.
    pub fn scope_id(&self) -> &str {
        match self {
            Route::SimpleRoot { scope, .. }
            | Route::SimpleDetail { scope, .. }
            | Route::File { scope, .. }
            | Route::Yank { scope, .. }
            | Route::PypiJson { scope, .. }
            | Route::Upload { scope }
            | Route::Retention { scope }
            | Route::Ui { scope, .. } => scope.id(),
            _ => "-",
        }
    }

    pub fn parse(path: &str, default_project: &str) -> Route {
        if path == "/-/health" {
            return Route::Health;
        }
        match path {
            "/_/oidc/audience" => return Route::Oidc(OidcCall::Audience),
            "/_/oidc/mint-token" => return Route::Oidc(OidcCall::Mint),
            "/_/oidc/burn-token" => return Route::Oidc(OidcCall::Burn),
            _ => {}
        }
        if path == "/-/ready" {
            return Route::Ready;
        }
        if path == "/metrics" {
            return Route::Metrics;
        }
        if let Some(call) = path.strip_prefix("/-/osv/v1/") {
            return match call {
                "query" => Route::Osv(OsvCall::Query),
                "querybatch" => Route::Osv(OsvCall::QueryBatch),
                _ => match call.strip_prefix("vulns/") {
                    Some(id) if !id.is_empty() && !id.contains('/') => {
                        Route::Osv(OsvCall::Vuln(percent_decode_str(id).decode_utf8_lossy().into_owned()))
                    }
                    _ => Route::NotFound("unknown OSV API call (v1/query, v1/querybatch, v1/vulns/<id>)"),
                },
            };
        }
        if path == "/-/ui" {
            return Route::Ui { scope: Scope::Project(default_project.to_string()), view: UiView::Home };
        }
        if let Some(rest) = path.strip_prefix("/-/ui/") {
            return parse_ui(rest, default_project);
        }
        let (scope, base, rest) = if let Some(rest) = path.strip_prefix("/api/v4/projects/") {
            let Some((id, rest)) = rest.split_once('/') else {
                return Route::NotFound("unknown route");
            };
            let Some(rest) = rest.strip_prefix("packages/pypi") else {
                return Route::NotFound("unknown route");
            };
            if !is_valid_project_id(id) {
                return Route::BadPath(format!("invalid project id `{id}`"));
            }
            (Scope::Project(id.to_string()), format!("/api/v4/projects/{id}/packages/pypi"), rest)
        } else if let Some(rest) = path.strip_prefix("/api/v4/groups/") {
            let Some((id, rest)) = rest.split_once('/') else {
                return Route::NotFound("unknown route");
            };
            let Some(rest) = rest.strip_prefix("-/packages/pypi") else {
                return Route::NotFound("unknown route");
            };
            if !is_valid_project_id(id) {
                return Route::BadPath(format!("invalid group id `{id}`"));
            }
            (Scope::Group(id.to_string()), format!("/api/v4/groups/{id}/-/packages/pypi"), rest)
        } else if path.starts_with("/simple") || path.starts_with("/files/") || path.starts_with("/pypi/") {
            (Scope::Project(default_project.to_string()), String::new(), path)
        } else if path == "/" || path == "/legacy" || path == "/legacy/" {
            return Route::Upload { scope: Scope::Project(default_project.to_string()) };
        } else {
            return Route::NotFound("unknown route");
        };

        match rest {
            "" | "/" => match scope {
                Scope::Project(_) => Route::Upload { scope },
                Scope::Group(_) => Route::NotFound("groups have no upload endpoint; upload to a project"),
            },
            "/simple" | "/simple/" => Route::SimpleRoot { scope, prefix: format!("{base}/simple/") },
            "/-/retention" => Route::Retention { scope },
            _ => {
                if let Some(name) = rest.strip_prefix("/simple/") {
                    let (name, trailing_slash) = match name.strip_suffix('/') {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    if name.contains('/') {
                        return Route::NotFound("unknown route");
                    }
                    return match decode(name) {
                        Ok(name) => {
                            Route::SimpleDetail { scope, prefix: format!("{base}/simple/"), name, trailing_slash }
                        }
                        Err(r) => *r,
                    };
                }
                if let Some(tail) = rest.strip_prefix("/pypi/") {
                    return parse_pypi_json(scope, &base, tail);
                }
                if let Some(file) = rest.strip_prefix("/files/") {
                    let Some((key, filename)) = file.split_once('/') else {
                        return Route::NotFound("file URLs are files/<sha256>/<filename>");
                    };
                    let (filename, yank) = match filename.strip_suffix("/yank") {
                        Some(f) => (f, true),
                        None => (filename, false),
                    };
                    if filename.is_empty() || filename.contains('/') {
                        return Route::BadPath("file URLs are files/<sha256>/<filename>".into());
                    }
                    let key = key.to_string();
                    return match decode(filename) {
                        Ok(filename) if yank => Route::Yank { scope, key, filename },
                        Ok(filename) => Route::File { scope, key, filename },
                        Err(r) => *r,
                    };
                }
                Route::NotFound("unknown route")
            }
        }
    }
}

/// `<name>/json` or `<name>/<version>/json`, maybe with a trailing slash.
fn parse_pypi_json(scope: Scope, base: &str, tail: &str) -> Route {
    let (tail, canonical) = match tail.strip_suffix('/') {
        Some(t) => (t, false),
        None => (tail, true),
    };
    let parts: Vec<&str> = tail.split('/').collect();
    let (name, version) = match parts.as_slice() {
        [name, "json"] if !name.is_empty() => (*name, None),
        [name, version, "json"] if !name.is_empty() && !version.is_empty() => (*name, Some(*version)),
        _ => return Route::NotFound("JSON API URLs are pypi/<name>/json and pypi/<name>/<version>/json"),
    };
    let name = match decode(name) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let version = match version.map(decode).transpose() {
        Ok(v) => v,
        Err(r) => return *r,
    };
    Route::PypiJson {
        scope,
        base: format!("{base}/pypi/"),
        prefix: format!("{base}/simple/"),
        name,
        version,
        canonical,
    }
}

fn decode(segment: &str) -> Result<String, Box<Route>> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Box::new(Route::BadPath("path is not valid UTF-8 after percent-decoding".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> Scope {
        Scope::Project(id.into())
    }

    #[test]
    fn gitlab_layout_and_aliases() {
        let base = "/api/v4/projects/42/packages/pypi";
        assert_eq!(
            Route::parse(&format!("{base}/simple"), "d"),
            Route::SimpleRoot { scope: p("42"), prefix: format!("{base}/simple/") }
        );
        assert_eq!(
            Route::parse(&format!("{base}/simple/"), "d"),
            Route::SimpleRoot { scope: p("42"), prefix: format!("{base}/simple/") }
        );
        assert_eq!(
            Route::parse(&format!("{base}/simple/My_Pkg"), "d"),
            Route::SimpleDetail {
                scope: p("42"),
                prefix: format!("{base}/simple/"),
                name: "My_Pkg".into(),
                trailing_slash: false
            }
        );
        assert_eq!(
            Route::parse(&format!("{base}/files/abc/x-1.0%2Blocal.tar.gz"), "d"),
            Route::File { scope: p("42"), key: "abc".into(), filename: "x-1.0+local.tar.gz".into() }
        );
        assert_eq!(Route::parse(base, "d"), Route::Upload { scope: p("42") });
        assert_eq!(Route::parse(&format!("{base}/"), "d"), Route::Upload { scope: p("42") });
        assert_eq!(
            Route::parse("/api/v4/groups/7/-/packages/pypi/simple/x/", "d"),
            Route::SimpleDetail {
                scope: Scope::Group("7".into()),
                prefix: "/api/v4/groups/7/-/packages/pypi/simple/".into(),
                name: "x".into(),
                trailing_slash: true
            }
        );
        assert_eq!(
            Route::parse("/simple/x/", "d"),
            Route::SimpleDetail { scope: p("d"), prefix: "/simple/".into(), name: "x".into(), trailing_slash: true }
        );
        assert_eq!(
            Route::parse("/files/k/f.whl", "d"),
            Route::File { scope: p("d"), key: "k".into(), filename: "f.whl".into() }
        );
        assert_eq!(Route::parse("/legacy/", "d"), Route::Upload { scope: p("d") });
        assert_eq!(
            Route::parse("/files/k/f.whl/yank", "d"),
            Route::Yank { scope: p("d"), key: "k".into(), filename: "f.whl".into() }
        );
        let json = |scope, base: &str, name: &str, version: Option<&str>, canonical| Route::PypiJson {
            scope,
            base: format!("{base}/pypi/"),
            prefix: format!("{base}/simple/"),
            name: name.into(),
            version: version.map(str::to_string),
            canonical,
        };
        assert_eq!(Route::parse("/pypi/My_Pkg/json", "d"), json(p("d"), "", "My_Pkg", None, true));
        assert_eq!(Route::parse("/pypi/x/1.0%2Blocal/json/", "d"), json(p("d"), "", "x", Some("1.0+local"), false));
        assert_eq!(Route::parse(&format!("{base}/pypi/json/json"), "d"), json(p("42"), base, "json", None, true));
        assert_eq!(
            Route::parse("/api/v4/groups/7/-/packages/pypi/pypi/x/2/json", "d"),
            json(Scope::Group("7".into()), "/api/v4/groups/7/-/packages/pypi", "x", Some("2"), true)
        );
        assert!(matches!(Route::parse("/pypi/x", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/pypi/x/1/2/json", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/pypi//json", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/pypi/%ff/json", "d"), Route::BadPath(_)));
        assert!(matches!(Route::parse("/nope", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/simple/a/b/", "d"), Route::NotFound(_)));
        assert!(
            matches!(Route::parse("/files/k/%2e%2e%2Fx", "d"), Route::File { .. }),
            "decoded; the handler rejects it"
        );
        assert!(matches!(Route::parse("/files/k/%ff", "d"), Route::BadPath(_)));
        assert!(matches!(Route::parse("/api/v4/projects/a b/packages/pypi/simple/", "d"), Route::BadPath(_)));
    }

    #[test]
    fn ui_pages() {
        let ui = |scope, view| Route::Ui { scope, view };
        assert_eq!(Route::parse("/-/ui/", "d"), ui(p("d"), UiView::Home));
        assert_eq!(Route::parse("/-/ui", "d"), ui(p("d"), UiView::Home));
        assert_eq!(Route::parse("/-/ui/search", "d"), ui(p("d"), UiView::Search));
        assert_eq!(Route::parse("/-/ui/packages/My_Pkg", "d"), ui(p("d"), UiView::Package("My_Pkg".into())));
        assert_eq!(Route::parse("/-/ui/projects/42/", "d"), ui(p("42"), UiView::Home));
        assert_eq!(
            Route::parse("/-/ui/groups/7/packages/x/", "d"),
            ui(Scope::Group("7".into()), UiView::Package("x".into()))
        );
        assert_eq!(Route::parse("/-/ui/static/app.js", "d"), Route::UiAsset("app.js"));
        assert!(matches!(Route::parse("/-/ui/static/../x", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/-/ui/packages/a/b", "d"), Route::NotFound(_)));
        assert!(matches!(Route::parse("/-/ui/projects/a b/", "d"), Route::BadPath(_)));
        assert_eq!(Route::parse("/-/ui/projects/42", "d"), Route::UiSlash);
        assert_eq!(Route::parse("/-/ui/groups/7", "d"), Route::UiSlash);
        assert!(matches!(Route::parse("/-/ui/packages/%ff", "d"), Route::BadPath(_)));
        assert_eq!(ui_base(&p("d"), "d"), "/-/ui/");
        assert_eq!(simple_base(&Scope::Group("7".into()), "d"), "/api/v4/groups/7/-/packages/pypi/simple/");
    }
}
