//! Access tokens: who may read a private project and who may upload (UPL-03, UPL-04, GL-02).
//!
//! Tokens are sent the GitLab way: HTTP Basic with any username and the token as password
//! (`__token__` works too); `Bearer` and `token` schemes are accepted as well. Secrets are kept
//! only as sha256 digests, compared in constant time, and never logged.

use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Token};
use crate::server::error::HttpError;
use crate::server::route::Scope;

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The projects a scope covers: a project itself, or a group's configured members.
pub fn scope_projects(config: &Config, scope: &Scope) -> Vec<String> {
    match scope {
        Scope::Project(id) => vec![id.clone()],
        Scope::Group(id) => config.groups.get(id).map(|g| g.projects.clone()).unwrap_or_default(),
    }
}

/// Does reading this scope need a token? A group is at least as private as its most private
/// member: `private = false` on a group never exposes a private project (issue 9).
pub fn read_is_private(config: &Config, scope: &Scope) -> bool {
    let project_private = |id: &String| config.projects.get(id).is_some_and(|p| p.private);
    match scope {
        Scope::Project(id) => project_private(id),
        Scope::Group(id) => match config.groups.get(id) {
            Some(g) => g.private == Some(true) || g.projects.iter().any(project_private),
            None => false,
        },
    }
}

/// Checks the request's credentials for `access` on `scope`. Anonymous reads of a public scope
/// pass; everything else needs a matching token: none → 401, not allowed → 403.
pub fn authorize(
    config: &Config,
    headers: &HeaderMap,
    scope: &Scope,
    access: Access,
) -> Result<Option<Token>, HttpError> {
    let presented = credentials(headers);
    if access == Access::Read && !read_is_private(config, scope) {
        return Ok(None);
    }
    let Some(secret) = presented else {
        let what = if access == Access::Write { "uploading" } else { "reading this private project" };
        return Err(unauthorized(&format!("{what} needs a token; send it as the password of HTTP Basic auth")));
    };
    let presented = digest(&secret);
    let Some(token) = config.tokens.iter().find(|t| bool::from(t.secret_sha256.ct_eq(&presented))) else {
        return Err(unauthorized("invalid token"));
    };
    let allowed_projects = scope_projects(config, scope);
    let covers = |p: &String| token.projects.as_ref().is_none_or(|set| set.contains(p));
    let in_scope = !allowed_projects.is_empty() && allowed_projects.iter().all(covers);
    let has_scope = match access {
        Access::Read => token.read,
        Access::Write => token.write,
    };
    if !in_scope || !has_scope {
        let needed = if access == Access::Write { "write" } else { "read" };
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("token `{}` has no {needed} access to this {}", token.name, scope_kind(scope)),
        ));
    }
    Ok(Some(token.clone()))
}

fn scope_kind(scope: &Scope) -> &'static str {
    match scope {
        Scope::Project(_) => "project",
        Scope::Group(_) => "group",
    }
}

/// Writes (upload, yank, delete) go to one project, never a group (groups are read-only views,
/// GL-01), and need a write token. Returns the project id.
pub fn authorize_project_write<'a>(
    config: &Config,
    headers: &HeaderMap,
    scope: &'a Scope,
) -> Result<&'a String, HttpError> {
    let Scope::Project(project) = scope else {
        return Err(HttpError::not_found("groups are read-only; upload to and manage files in a project"));
    };
    authorize(config, headers, scope, Access::Write)?;
    Ok(project)
}

/// The token in an `Authorization` header: Basic password (or username when the password is
/// empty), Bearer, or `token`.
fn credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, pass) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
            let token = if pass.is_empty() { user } else { pass };
            (!token.is_empty()).then(|| token.to_string())
        }
        "bearer" | "token" => (!rest.is_empty()).then(|| rest.to_string()),
        _ => None,
    }
}

/// `/metrics` is open unless `metrics_token` is set; then it needs that token.
pub fn authorize_metrics(config: &Config, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(expected) = &config.metrics_token else { return Ok(()) };
    match credentials(headers) {
        Some(t) if bool::from(digest(&t).ct_eq(&digest(expected))) => Ok(()),
        Some(_) => Err(unauthorized("invalid metrics token")),
        None => Err(unauthorized("/metrics needs the metrics token (metrics_token)")),
    }
}

/// 401 with `WWW-Authenticate: Basic`, so pip, uv and twine offer their credentials (UPL-04).
pub fn unauthorized(message: &str) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, message)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Larder\""))
}
