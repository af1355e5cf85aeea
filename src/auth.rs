//! Access tokens: who may read a private project and who may upload (UPL-03, UPL-04, GL-02).
//!
//! Tokens are sent the GitLab way: HTTP Basic with any username and the token as password
//! (`__token__` works too); `Bearer` and `token` schemes are accepted as well. Secrets are kept
//! only as sha256 digests, compared in constant time, and never logged. The server asks once
//! per request (`server::service`); the answer is a value the handlers pass on.

use base64::Engine;
use http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use std::net::IpAddr;

use crate::audit::Who;
use crate::cache::ClientKey;
use crate::cache::Reader;
use crate::config::{Config, Token};
use crate::digest::secret_digest;
use crate::oidc::TrustedPublishing;
use crate::scope::Scope;

/// Why a request may not go on; `server::error` turns it into 401, 403 or 404.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No (valid) token where one is needed: 401 with `WWW-Authenticate: Basic`, so pip, uv
    /// and twine offer their credentials (UPL-04).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// What decides could not be read (a shared store that does not answer): 503.
    #[error("{0}")]
    Unavailable(String),
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

/// May this request read `scope`? Anonymous reads of a public scope pass; a private one needs
/// a token with the read scope that covers every project of it.
/// `peer` is the client's address: what its upstream downloads are counted against, unless it
/// sent a valid token (then the token's name is).
pub fn reader(config: &Config, headers: &HeaderMap, scope: &Scope, peer: IpAddr) -> Result<Reader, Denied> {
    let private = read_is_private(config, scope);
    let token = if private {
        Some(check_token(config, headers, scope, false)?.name)
    } else {
        credentials(headers).and_then(|secret| find_token(config, &secret)).map(|t| t.name.clone())
    };
    let client = Some(token.map_or_else(|| ClientKey::from_addr(peer), ClientKey::Token));
    let rules = match scope {
        Scope::Project(id) => config.rules.for_project(id),
        Scope::Group(id) => config.rules.for_group(id),
    };
    Ok(Reader { projects: scope_projects(config, scope), private, rules, client })
}

/// Who may write to which project: what `writer` found.
pub struct Writer<'a> {
    pub project: &'a str,
    /// For the audit log: the token's name, never its secret.
    pub who: Who,
}

/// Writes (upload, yank, delete) go to one project, never a group (groups are read-only views,
/// GL-01), and need a write token.
pub fn writer<'a>(config: &Config, headers: &HeaderMap, scope: &'a Scope) -> Result<Writer<'a>, Denied> {
    let Scope::Project(project) = scope else {
        return Err(Denied::NotFound("groups are read-only; upload to and manage files in a project".into()));
    };
    let token = check_token(config, headers, scope, true)?;
    Ok(Writer { project, who: Who::Token { name: token.name } })
}

/// The secret sent, when it is a token minted by trusted publishing (issue 23).
pub fn minted_secret(headers: &HeaderMap) -> Option<String> {
    credentials(headers).filter(|s| s.starts_with(crate::oidc::MINTED_PREFIX))
}

/// May the holder of a minted token write here? Only uploads, only to the projects of the
/// publisher it was minted for, only while it lives.
pub async fn minted_writer<'a>(
    publishing: &TrustedPublishing,
    secret: &str,
    scope: &'a Scope,
    upload: bool,
) -> Result<Writer<'a>, Denied> {
    let Scope::Project(project) = scope else {
        return Err(Denied::NotFound("groups are read-only; upload to a project".into()));
    };
    if !upload {
        return Err(Denied::Forbidden("a token minted by trusted publishing may only upload".into()));
    }
    let minted = publishing
        .check(secret)
        .await
        .map_err(|e| Denied::Unavailable(format!("cannot check the upload token ({e}); retry shortly")))?;
    let Some(minted) = minted else {
        return Err(Denied::Unauthorized(
            "this upload token has expired or was revoked; mint a new one (they last 15 minutes)".into(),
        ));
    };
    if !minted.projects.iter().any(|p| p == project) {
        return Err(Denied::Forbidden(format!(
            "this token was minted for project(s) {}, not `{project}`",
            minted.projects.join(", ")
        )));
    }
    Ok(Writer { project, who: minted.who })
}

/// Who a refused write came from, as far as the request shows it: a configured token's name
/// (its secret is valid, its scope was not enough), or nobody.
pub fn claimed_writer(config: &Config, headers: &HeaderMap) -> Who {
    match credentials(headers).and_then(|secret| find_token(config, &secret)) {
        Some(t) => Who::Token { name: t.name.clone() },
        None => Who::Anonymous,
    }
}

/// `/metrics` is open unless `metrics_token` is set; then it needs that token.
pub fn metrics(config: &Config, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(expected) = &config.metrics_token else { return Ok(()) };
    match credentials(headers) {
        Some(t) if bool::from(secret_digest(&t).ct_eq(&secret_digest(expected))) => Ok(()),
        Some(_) => Err(Denied::Unauthorized("invalid metrics token".into())),
        None => Err(Denied::Unauthorized("/metrics needs the metrics token (metrics_token)".into())),
    }
}

/// `/-/ui/audit` needs the metrics token, and is not there at all without one: the audit log
/// names private files, token names and client addresses.
pub fn audit_reader(config: &Config, headers: &HeaderMap) -> Result<(), Denied> {
    if config.metrics_token.is_none() {
        return Err(Denied::NotFound("the audit page needs metrics_token to be set; its holder may read it".into()));
    }
    metrics(config, headers)
}

fn check_token(config: &Config, headers: &HeaderMap, scope: &Scope, write: bool) -> Result<Token, Denied> {
    let Some(secret) = credentials(headers) else {
        let what = if write { "uploading" } else { "reading this private project" };
        return Err(Denied::Unauthorized(format!("{what} needs a token; send it as the password of HTTP Basic auth")));
    };
    let Some(token) = find_token(config, &secret) else {
        return Err(Denied::Unauthorized("invalid token".into()));
    };
    let allowed_projects = scope_projects(config, scope);
    let covers = |p: &String| token.projects.as_ref().is_none_or(|set| set.contains(p));
    let in_scope = !allowed_projects.is_empty() && allowed_projects.iter().all(covers);
    let has_scope = if write { token.write } else { token.read };
    if !in_scope || !has_scope {
        let needed = if write { "write" } else { "read" };
        let kind = match scope {
            Scope::Project(_) => "project",
            Scope::Group(_) => "group",
        };
        return Err(Denied::Forbidden(format!("token `{}` has no {needed} access to this {kind}", token.name)));
    }
    Ok(token.clone())
}

/// The configured token with this secret, compared in constant time.
fn find_token<'a>(config: &'a Config, secret: &str) -> Option<&'a Token> {
    let presented = secret_digest(secret);
    config.tokens.iter().find(|t| bool::from(t.secret_sha256.ct_eq(&presented)))
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
