//! One resolver per concern of `Config::merge`: flags and environment over the file over
//! defaults, every value checked, errors naming the setting.

use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigError, ensure};
use super::file::FileConfig;
use super::{ByteSize, S3Settings, Token, TokenScope, publishing};
use crate::cli::Settings;

/// `[[tokens]]`, and `LARDER_TOKEN` (one read+write token for every project).
pub(super) fn resolve_tokens(file: &FileConfig, env_token: Option<String>) -> Result<Vec<Token>, ConfigError> {
    let mut tokens = Vec::new();
    for t in &file.tokens {
        let setting = || format!("token `{}`", t.name);
        let secret = match (&t.secret, &t.secret_env) {
            (Some(secret), None) => secret.clone(),
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| ConfigError::MissingVariable { setting: setting(), var: var.clone() })?
            }
            _ => return Err(ConfigError::invalid(setting(), "set exactly one of `secret` and `secret_env`")),
        };
        ensure(secret.len() >= 8, setting(), "the secret is shorter than 8 characters")?;
        let projects = (!t.projects.iter().any(|p| p == "*")).then(|| t.projects.iter().cloned().collect());
        tokens.push(Token {
            name: t.name.clone(),
            secret_sha256: crate::digest::secret_digest(&secret),
            read: t.scopes.contains(&TokenScope::Read) || t.scopes.contains(&TokenScope::Write),
            write: t.scopes.contains(&TokenScope::Write),
            projects,
        });
    }
    if let Some(secret) = env_token {
        tokens.push(Token {
            name: "LARDER_TOKEN".into(),
            secret_sha256: crate::digest::secret_digest(&secret),
            read: true,
            write: true,
            projects: None,
        });
    }
    Ok(tokens)
}

/// The upstreams: the default one and the named `[[upstreams]]`, with the limits they share.
pub(super) struct ResolvedUpstreams {
    pub(super) default: Option<crate::upstream::RouteConfig>,
    pub(super) routes: Vec<crate::upstream::RouteConfig>,
    pub(super) timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_page_bytes: u64,
    pub(super) max_page_files: usize,
    pub(super) max_file_bytes: u64,
}

pub(super) fn resolve_upstreams(file: &FileConfig, s: &Settings) -> Result<ResolvedUpstreams, ConfigError> {
    let (upstream, credentials) = split_credentials(
        s.upstream.clone().or(file.upstream.clone()),
        s.upstream_username.clone().or(file.upstream_username.clone()),
        s.upstream_password.clone().or(file.upstream_password.clone()),
    )?;
    let timeout = s.upstream_timeout.or(file.upstream_timeout).unwrap_or(Duration::from_secs(30));
    let max_connections = s.max_upstream_connections.or(file.max_upstream_connections).unwrap_or(32);
    let max_page_bytes = s.max_page_size.or(file.max_page_size).unwrap_or(ByteSize::mib(64)).0;
    let max_file_bytes = s.max_file_size.or(file.max_file_size).unwrap_or(ByteSize::gib(20)).0;
    let max_page_files = s.max_page_files.or(file.max_page_files).unwrap_or(100_000);
    // Every upstream shares the limits; each has its own URL and credentials.
    let settings = |base, credentials| crate::upstream::UpstreamSettings {
        base,
        credentials,
        timeout,
        max_connections,
        max_page_bytes,
        max_page_files,
        max_file_bytes,
    };
    let default = upstream.map(|base| crate::upstream::RouteConfig {
        name: crate::upstream::routes::DEFAULT.to_string(),
        projects: Vec::new(),
        settings: settings(base, credentials),
    });
    let routes = resolve_routes(file, &settings)?;
    Ok(ResolvedUpstreams { default, routes, timeout, max_connections, max_page_bytes, max_page_files, max_file_bytes })
}

/// Where blobs and records live, and the size limits that apply there.
pub(super) struct ResolvedStore {
    pub(super) s3: Option<S3Settings>,
    pub(super) max_store_bytes: Option<u64>,
    pub(super) local_cache_bytes: u64,
}

pub(super) fn resolve_store(file: &FileConfig, s: &Settings) -> Result<ResolvedStore, ConfigError> {
    let s3 = match s.store.clone().or(file.store.clone()).filter(|u| !u.is_empty() && u != "local") {
        None => None,
        Some(url) => {
            let (bucket, prefix) = S3Settings::parse_url(&url)
                .map_err(|e| ConfigError::invalid("store", format!("{e}; write s3://bucket/prefix")))?;
            Some(S3Settings {
                bucket,
                prefix,
                endpoint: s.s3_endpoint.clone().or(file.s3_endpoint.clone()),
                region: s.s3_region.clone().or(file.s3_region.clone()),
                virtual_hosted: file.s3_virtual_hosted.unwrap_or(false),
            })
        }
    };
    let max_store_bytes = s.max_store_size.or(file.max_store_size).map(|b| b.0);
    ensure(
        s3.is_none() || max_store_bytes.is_none(),
        "max_store_size",
        "it limits a local store; with an S3 store the bucket's size is yours to manage (lifecycle rules), and local_cache_size limits the local cache",
    )?;
    let local_cache_bytes = s.local_cache_size.or(file.local_cache_size).unwrap_or(ByteSize::gib(10)).0;
    Ok(ResolvedStore { s3, max_store_bytes, local_cache_bytes })
}

/// Publishing from CI and what is told of it (issue 23), and where clients reach this server.
pub(super) struct ResolvedPublishing {
    pub(super) public_url: Option<String>,
    pub(super) oidc_audience: String,
    pub(super) trusted_publishers: Vec<crate::policy::publishers::Publisher>,
    pub(super) webhooks: Vec<publishing::Webhook>,
    pub(super) audit_log: Option<publishing::Destination>,
    pub(super) retention_interval: Duration,
}

pub(super) fn resolve_publishing(file: &FileConfig, s: &Settings) -> Result<ResolvedPublishing, ConfigError> {
    let public_url = s.public_url.clone().or(file.public_url.clone());
    Ok(ResolvedPublishing {
        // Per deployment: a token minted for another Larder is not accepted here.
        oidc_audience: file.oidc_audience.clone().filter(|a| !a.trim().is_empty()).unwrap_or_else(|| match public_url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            Some(host) => host,
            None => "larder".into(),
        }),
        public_url: match public_url {
            Some(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(u.as_str().trim_end_matches('/').to_string())
            }
            Some(u) => {
                return Err(ConfigError::invalid("public_url", format!("`{u}` must be an http(s) URL with a host")));
            }
            None => None,
        },
        trusted_publishers: file
            .trusted_publishers
            .iter()
            .map(crate::policy::publishers::Publisher::from_config)
            .collect::<Result<_, _>>()
            .map_err(ConfigError::entry("trusted_publishers"))?,
        webhooks: file
            .webhooks
            .iter()
            .map(publishing::Webhook::from_config)
            .collect::<Result<_, _>>()
            .map_err(ConfigError::entry("webhooks"))?,
        audit_log: s
            .audit_log
            .clone()
            .or(file.audit_log.clone())
            .filter(|p| !p.is_empty())
            .map(|p| publishing::Destination::parse(&p)),
        retention_interval: file.retention_interval.unwrap_or(Duration::from_secs(3600)).max(Duration::from_secs(1)),
    })
}

/// Resolves the cooldowns, per-project upstreams and statuses, checking every name.
pub(super) fn resolve_rules(file: &FileConfig, s: &Settings) -> Result<crate::policy::Rules, ConfigError> {
    use crate::policy::{Rules, ScopeRules};
    let patterns = |what: &str, list: &[String]| -> Result<Vec<crate::index::NamePattern>, ConfigError> {
        list.iter().map(|p| crate::index::NamePattern::parse(p).map_err(|e| ConfigError::invalid(what, e))).collect()
    };
    let known = |name: &str| name == crate::upstream::routes::DEFAULT || file.upstreams.iter().any(|u| u.name == name);
    let mut rules = Rules {
        min_release_age: s.min_release_age.or(file.min_release_age),
        exempt: patterns("min_release_age_exempt", file.min_release_age_exempt.as_deref().unwrap_or_default())?,
        unknown_upload_time: file.min_release_age_unknown.unwrap_or_default(),
        unhashed_files: file.unhashed_files,
        upstream_ages: file.upstreams.iter().filter_map(|u| Some((u.name.clone(), u.min_release_age?))).collect(),
        ..Rules::default()
    };
    let mut next_id = 1;
    for (id, p) in &file.projects {
        let what = format!("[projects.{id}]");
        let upstreams = match &p.upstreams {
            None => None,
            Some(list) => {
                for u in list {
                    ensure(
                        known(u),
                        format!("{what} upstreams"),
                        format!("no upstream is named `{u}` (names: default, or a [[upstreams]] name)"),
                    )?;
                }
                Some(list.iter().cloned().collect())
            }
        };
        let status = p.status.map(|st| crate::index::ProjectStatus {
            status: st.marker(),
            reason: p.status_reason.clone().filter(|r| !r.trim().is_empty()),
        });
        let scope = ScopeRules {
            id: next_id,
            upstreams,
            min_release_age: p.min_release_age,
            exempt: patterns(&format!("{what} min_release_age_exempt"), &p.min_release_age_exempt)?,
            status,
            members: Vec::new(),
        };
        next_id += 1;
        rules.projects.insert(id.clone(), Arc::new(scope));
    }
    for (id, g) in &file.groups {
        let members: Vec<Arc<ScopeRules>> = g.projects.iter().map(|p| rules.for_project(p)).collect();
        rules.groups.insert(id.clone(), Arc::new(Rules::combine(next_id, &members)));
        next_id += 1;
    }
    Ok(rules)
}

/// Moves userinfo out of the upstream URL: credentials given apart win over those in the URL.
pub(super) fn split_credentials(
    url: Option<url::Url>,
    username: Option<String>,
    password: Option<String>,
) -> Result<(Option<url::Url>, Option<crate::upstream::Credentials>), ConfigError> {
    let Some(mut url) = url else {
        ensure(
            username.is_none() && password.is_none(),
            "upstream_username, upstream_password",
            "credentials are set, but no upstream",
        )?;
        return Ok((None, None));
    };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let in_url = (!url.username().is_empty() || url.password().is_some())
        .then(|| (decode(url.username()), decode(url.password().unwrap_or_default())));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let credentials = match (username, password, in_url) {
        (None, None, None) => None,
        (None, None, Some((username, password))) => Some(crate::upstream::Credentials { username, password }),
        (username, password, _) => Some(crate::upstream::Credentials {
            username: username.unwrap_or_default(),
            password: password.unwrap_or_default(),
        }),
    };
    Ok((Some(url), credentials))
}

/// `[[upstreams]]`: named upstreams for some project names (issue 14), in matching order.
fn resolve_routes(
    file: &FileConfig,
    settings: &dyn Fn(url::Url, Option<crate::upstream::Credentials>) -> crate::upstream::UpstreamSettings,
) -> Result<Vec<crate::upstream::RouteConfig>, ConfigError> {
    let mut upstream_routes = Vec::new();
    for u in &file.upstreams {
        let setting = || format!("[[upstreams]] `{}`", u.name);
        let at = |what: String| ConfigError::invalid(setting(), what);
        ensure(
            crate::scope::is_valid_id(&u.name) && u.name != crate::upstream::routes::DEFAULT,
            "[[upstreams]]",
            format!(
                "invalid name `{}`; use letters, digits, '.', '_', '-' (and not `default`, the name of `upstream`)",
                u.name
            ),
        )?;
        ensure(
            !upstream_routes.iter().any(|r: &crate::upstream::RouteConfig| r.name == u.name),
            "[[upstreams]]",
            format!("the name `{}` is used twice", u.name),
        )?;
        ensure(!u.projects.is_empty(), setting(), "list the project names it serves in `projects`")?;
        let password = match (&u.password, &u.password_env) {
            (p, None) => p.clone(),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| ConfigError::MissingVariable { setting: setting(), var: var.clone() })?,
            ),
            (Some(_), Some(_)) => return Err(at("set at most one of `password` and `password_env`".into())),
        };
        let (base, credentials) = split_credentials(Some(u.url.clone()), u.username.clone(), password)?;
        let projects = u
            .projects
            .iter()
            .map(|p| crate::index::NamePattern::parse(p).map_err(at))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        upstream_routes.push(crate::upstream::RouteConfig {
            name: u.name.clone(),
            projects,
            settings: settings(base.expect("given"), credentials),
        });
    }
    Ok(upstream_routes)
}
