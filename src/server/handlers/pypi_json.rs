//! PyPI's JSON API (issue 24) for the tools that read it (Dependabot's cooldown, Renovate,
//! mirrors, scripts): the page the scope sees, one release's core metadata, rendered by
//! `index::pypi_json`. The page is cached and revalidated as the simple API's is; the answer's
//! ETag is its bytes' hash.

use http::{HeaderMap, HeaderValue, Response, header};

use crate::cache::{PageAnswer, Reader};
use crate::index::ProjectName;
use crate::index::pypi_json::{self, CoreFields, Links};
use crate::scope::Scope;
use crate::server::error::HttpError;
use crate::server::route::ui_base;
use crate::server::{body, body::Body, respond};
use crate::state::AppState;

/// One answer: `version` is `None` for the project route.
pub struct Ask<'a> {
    pub scope: &'a Scope,
    /// The absolute path of the scope's `pypi/` and `simple/`.
    pub base: &'a str,
    pub prefix: &'a str,
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub canonical: bool,
}

pub async fn json(
    state: &AppState,
    reader: &Reader,
    ask: Ask<'_>,
    headers: &HeaderMap,
) -> Result<Response<Body>, HttpError> {
    let name = ProjectName::parse(ask.name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let url_of = |version: Option<&str>| match version {
        Some(v) => format!("{}{name}/{}/json", ask.base, escape(v)),
        None => format!("{}{name}/json", ask.base),
    };
    // Like pages (ROUTE-03): one URL per project, the normalized name, no trailing slash.
    if !ask.canonical || name.as_str() != ask.name {
        return Ok(respond::moved_permanently(&url_of(ask.version)));
    }
    let (page, outcome, private_upload) = match state.cache.page(reader, &name).await? {
        PageAnswer::Found { page, outcome, private_upload } => (page, outcome, private_upload),
        PageAnswer::NotFound => return Ok(respond::project_not_found(&name, state.config.not_found_ttl)),
    };
    let releases = pypi_json::releases(&page.page);
    let release = match ask.version {
        None => pypi_json::latest(&releases)
            .ok_or_else(|| HttpError::not_found(format!("project `{name}` has no releases here")))?,
        Some(asked) => {
            let release = pypi_json::find(&releases, asked).ok_or_else(|| {
                HttpError::not_found(format!("version `{asked}` of `{name}` is not here (or is held back or blocked)"))
            })?;
            if release.version != asked {
                return Ok(respond::moved_permanently(&url_of(Some(&release.version))));
            }
            release
        }
    };
    // The metadata stands for the release in `info`; without it `info` has the page's fields.
    let metadata = match release.metadata_source() {
        Some(file) => state.cache.core_metadata(reader, file).await.unwrap_or_else(|e| {
            tracing::debug!(project = %name, file = %file.filename, error = %e, "no core metadata for the JSON API");
            None
        }),
        None => None,
    }
    .map(|raw| CoreFields { headers: crate::metadata::headers(&raw), description: crate::metadata::description(&raw) });
    let origin = respond::origin(state.config.public_url.as_deref(), state.config.tls.is_some(), headers);
    let files_base = format!("{origin}{}files/", ask.prefix.strip_suffix("simple/").unwrap_or(ask.prefix));
    let project_page = format!("{origin}{}packages/{name}", ui_base(ask.scope, &state.config.default_project));
    let links = Links { files_base: &files_base, project_page: &project_page };
    // Warehouse's serial is not in the simple API: the page's last change stands for it (it
    // grows whenever the project changes, which is what mirrors compare it for).
    let serial = page.modified_unix;
    // A private upload is not matched against upstream advisories of its name (unless
    // `[advisories] match_private`).
    let vulnerabilities: Vec<pypi_json::Vulnerability> = match state.cache.advisories_apply(private_upload) {
        false => Vec::new(),
        true => state
            .cache
            .advisories_for(&name, Some(&release.version))
            .iter()
            .map(|a| pypi_json::Vulnerability {
                id: a.id.clone(),
                aliases: a.aliases.clone(),
                summary: a.summary.clone(),
                details: a.details.clone(),
                fixed_in: a.fixed_in(&name),
                link: format!("{origin}/-/osv/v1/vulns/{}", a.id),
                withdrawn: None,
            })
            .collect(),
    };
    let answer = pypi_json::Answer {
        all_releases: ask.version.is_none(),
        last_serial: serial,
        vulnerabilities: &vulnerabilities,
    };
    let bytes = pypi_json::render(&page.page, &releases, release, metadata.as_ref(), &links, &answer);
    let etag = format!("\"j{}\"", &crate::digest::sha256_hex(&bytes)[..32]);
    let mut resp = respond::if_current(headers, &etag, page.modified_unix).unwrap_or_else(|| {
        let mut r = Response::new(body::full(bytes));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    });
    // The simple API's caching rules (UP-06: private pages revalidate every time).
    let cache_control = match (private_upload, reader.private) {
        (true, _) => "private, no-cache".to_string(),
        (false, true) => format!("max-age={}, private", state.config.index_ttl.as_secs()),
        (false, false) => format!("max-age={}, public", state.config.index_ttl.as_secs()),
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, header_value(&etag));
    if page.modified_unix > 0 {
        h.insert(header::LAST_MODIFIED, respond::last_modified(page.modified_unix));
    }
    h.insert(header::CACHE_CONTROL, header_value(&cache_control));
    h.insert("x-pypi-last-serial", HeaderValue::from(serial));
    if reader.private {
        h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    } else {
        // Warehouse lets web pages read it; a private scope's answers never are.
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("X-PyPI-Last-Serial"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(respond::with_outcome(resp, outcome))
}

/// A version in a path segment (`+` of local versions kept, anything unusual escaped).
fn escape(version: &str) -> String {
    let mut out = String::with_capacity(version.len());
    crate::index::filename::write_path_segment(&mut out, version);
    out
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("Larder builds header values from ASCII")
}
