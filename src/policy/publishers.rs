//! `[[trusted_publishers]]`: which CI identities may publish to which projects (issue 23).
//!
//! A publisher is an issuer and the claims its OIDC token must carry. Three kinds, told apart
//! by the keys set: GitHub Actions (`repository` or `repository_id`, and `workflow`; optional
//! `environment`, `ref`, `repository_owner_id`), GitLab CI (`project_path` or `project_id`, and
//! `ci_config_ref_uri`; optional `environment`, `namespace_id`), or any OIDC issuer (`claims`,
//! which must name `sub`). Every rule must hold; this file is pure policy.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// `[[trusted_publishers]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// A label for logs and the audit log (default: the repository or project path).
    pub name: Option<String>,
    /// The OIDC issuer, e.g. GitHub's `https://token.actions.githubusercontent.com`.
    pub issuer: url::Url,
    /// The projects a token minted for this publisher may upload to.
    pub projects: Vec<String>,
    // GitHub Actions.
    pub repository: Option<String>,
    pub repository_id: Option<String>,
    pub repository_owner_id: Option<String>,
    /// The workflow file name, e.g. `release.yml`.
    pub workflow: Option<String>,
    pub environment: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    // GitLab CI.
    pub project_path: Option<String>,
    pub project_id: Option<String>,
    pub namespace_id: Option<String>,
    pub ci_config_ref_uri: Option<String>,
    /// Any issuer: claims that must be equal (`sub` required when no other kind applies).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

/// How one claim is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Equal(String),
    /// GitHub repository and owner names are case-insensitive.
    EqualIgnoringCase(String),
    /// GitHub's `job_workflow_ref` is `<owner>/<repo>/.github/workflows/<file>@<ref>`: the
    /// workflow file of this repository (when the publisher names it; a reusable workflow of
    /// another repository called by the trusted one does not match), or of any repository
    /// when only `repository_id` binds the publisher.
    WorkflowFile {
        repository: Option<String>,
        file: String,
    },
}

impl Expect {
    fn holds(&self, value: &str) -> bool {
        match self {
            Expect::Equal(v) => value == v,
            Expect::EqualIgnoringCase(v) => value.eq_ignore_ascii_case(v),
            Expect::WorkflowFile { repository, file } => {
                let Some((path, _)) = value.split_once('@') else { return false };
                let Some((repo, workflow)) = path.split_once("/.github/workflows/") else { return false };
                workflow == file && repository.as_ref().is_none_or(|r| repo.eq_ignore_ascii_case(r))
            }
        }
    }
}

/// A resolved publisher.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub name: String,
    /// Exactly as the tokens' `iss` must read.
    pub issuer: String,
    pub projects: Vec<String>,
    rules: Vec<(String, Expect)>,
    /// The claims that say who this is, for the audit log: subject, then workflow.
    identity: (&'static str, Option<&'static str>),
}

/// Why no publisher matched: the first rule each one broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub Vec<String>);

impl Publisher {
    pub fn from_config(c: &PublisherConfig) -> Result<Publisher, String> {
        let issuer = c.issuer.as_str().trim_end_matches('/').to_string();
        let at = |what: &str| format!("[[trusted_publishers]] for `{issuer}`: {what}");
        let loopback = matches!(c.issuer.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(c.issuer.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || c.issuer.host_str() == Some("localhost");
        if c.issuer.scheme() != "https" && !(c.issuer.scheme() == "http" && loopback) {
            return Err(at("the issuer must be an https URL (plain http only on loopback, for tests)"));
        }
        if c.projects.is_empty() || c.projects.iter().any(|p| !crate::scope::is_valid_id(p)) {
            return Err(at("list the project ids its tokens may upload to in `projects`"));
        }
        let github = [&c.repository, &c.repository_id, &c.repository_owner_id, &c.workflow, &c.git_ref]
            .iter()
            .any(|v| v.is_some());
        let gitlab =
            [&c.project_path, &c.project_id, &c.namespace_id, &c.ci_config_ref_uri].iter().any(|v| v.is_some());
        // A blank value would bind nothing: refused, never skipped.
        for (key, value) in [
            ("repository", &c.repository),
            ("repository_id", &c.repository_id),
            ("repository_owner_id", &c.repository_owner_id),
            ("workflow", &c.workflow),
            ("environment", &c.environment),
            ("ref", &c.git_ref),
            ("project_path", &c.project_path),
            ("project_id", &c.project_id),
            ("namespace_id", &c.namespace_id),
            ("ci_config_ref_uri", &c.ci_config_ref_uri),
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty() || v.trim() != v) {
                return Err(at(&format!("`{key}` must not be blank or padded with spaces")));
            }
        }
        if c.claims.iter().any(|(k, v)| k.trim().is_empty() || v.trim().is_empty()) {
            return Err(at("`claims` must not hold blank names or values"));
        }
        if c.workflow.as_ref().is_some_and(|w| w.contains('/') || w.contains('@')) {
            return Err(at("`workflow` is the workflow's file name only, e.g. release.yml"));
        }
        let mut rules: Vec<(String, Expect)> = Vec::new();
        fn add(rules: &mut Vec<(String, Expect)>, claim: &str, value: &Option<String>, expect: fn(String) -> Expect) {
            if let Some(v) = value {
                rules.push((claim.to_string(), expect(v.clone())));
            }
        }
        let identity = match (github, gitlab) {
            (true, true) => return Err(at("mixes GitHub keys (repository, workflow) with GitLab keys (project_path)")),
            (true, false) => {
                if c.repository.is_none() && c.repository_id.is_none() {
                    return Err(at("a GitHub publisher needs `repository` (owner/name) or `repository_id`"));
                }
                if c.workflow.is_none() {
                    return Err(at("a GitHub publisher needs `workflow` (the workflow file name, e.g. release.yml)"));
                }
                add(&mut rules, "repository", &c.repository, Expect::EqualIgnoringCase);
                add(&mut rules, "repository_id", &c.repository_id, Expect::Equal);
                add(&mut rules, "repository_owner_id", &c.repository_owner_id, Expect::Equal);
                if let Some(file) = &c.workflow {
                    let repository = c.repository.clone();
                    rules.push(("job_workflow_ref".into(), Expect::WorkflowFile { repository, file: file.clone() }));
                }
                add(&mut rules, "environment", &c.environment, Expect::Equal);
                add(&mut rules, "ref", &c.git_ref, Expect::Equal);
                ("repository", Some("job_workflow_ref"))
            }
            (false, true) => {
                if c.project_path.is_none() && c.project_id.is_none() {
                    return Err(at("a GitLab publisher needs `project_path` (group/project) or `project_id`"));
                }
                if c.ci_config_ref_uri.is_none() {
                    return Err(at("a GitLab publisher needs `ci_config_ref_uri`"));
                }
                add(&mut rules, "project_path", &c.project_path, Expect::EqualIgnoringCase);
                add(&mut rules, "project_id", &c.project_id, Expect::Equal);
                add(&mut rules, "namespace_id", &c.namespace_id, Expect::Equal);
                add(&mut rules, "ci_config_ref_uri", &c.ci_config_ref_uri, Expect::Equal);
                add(&mut rules, "environment", &c.environment, Expect::Equal);
                ("project_path", Some("ci_config_ref_uri"))
            }
            (false, false) => {
                if !c.claims.contains_key("sub") {
                    return Err(at(
                        "say whose tokens may publish: GitHub's repository and workflow, GitLab's project_path and ci_config_ref_uri, or `claims` with `sub`",
                    ));
                }
                ("sub", None)
            }
        };
        for (claim, value) in &c.claims {
            rules.push((claim.clone(), Expect::Equal(value.clone())));
        }
        let name = c
            .name
            .clone()
            .or_else(|| c.repository.clone())
            .or_else(|| c.project_path.clone())
            .or_else(|| c.claims.get("sub").cloned())
            .unwrap_or_else(|| issuer.clone());
        Ok(Publisher { name, issuer, projects: c.projects.clone(), rules, identity })
    }

    /// The first rule these claims break, or `None` when all hold.
    fn first_broken(&self, claims: &Map<String, Value>) -> Option<String> {
        self.rules.iter().find_map(|(claim, expect)| {
            let value = claims.get(claim).and_then(claim_text);
            match value {
                Some(v) if expect.holds(&v) => None,
                Some(v) => Some(format!("claim `{claim}` is `{v}`, which publisher `{}` does not accept", self.name)),
                None => Some(format!("the token has no `{claim}` claim, which publisher `{}` needs", self.name)),
            }
        })
    }

    /// Who this token is, for the audit log: the subject claim and the workflow claim.
    pub fn identity(&self, claims: &Map<String, Value>) -> (String, Option<String>) {
        let get = |c: &str| claims.get(c).and_then(claim_text);
        (get(self.identity.0).unwrap_or_default(), self.identity.1.and_then(get))
    }
}

/// A claim as text (GitHub sends ids as strings, some issuers as numbers).
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The publishers of `issuer` whose every rule the claims meet, or why none did.
pub fn matching<'a>(
    publishers: &'a [Publisher],
    issuer: &str,
    claims: &Map<String, Value>,
) -> Result<Vec<&'a Publisher>, Mismatch> {
    let mut why = Vec::new();
    let mut found = Vec::new();
    for p in publishers.iter().filter(|p| p.issuer == issuer) {
        match p.first_broken(claims) {
            None => found.push(p),
            Some(reason) => why.push(reason),
        }
    }
    if found.is_empty() { Err(Mismatch(why)) } else { Ok(found) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(extra: &str) -> PublisherConfig {
        toml::from_str(&format!(
            r#"issuer = "https://token.actions.githubusercontent.com"
projects = ["team"]
{extra}"#
        ))
        .unwrap()
    }

    fn claims(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn a_publisher_must_bind_an_identity() {
        for (cfg, why) in [
            (github(""), "say whose tokens"),
            (github("workflow = \"release.yml\""), "needs `repository`"),
            (github("repository = \"acme/app\""), "needs `workflow`"),
            (github("repository = \"a/b\"\nworkflow = \"r.yml\"\nproject_path = \"x/y\""), "mixes"),
            (github("project_path = \"a/b\""), "ci_config_ref_uri"),
            (github("claims = { aud = \"x\" }"), "say whose tokens"),
            (github("repository = \"\"\nworkflow = \"release.yml\""), "blank"),
            (github("repository = \"a/b\"\nworkflow = \" \""), "blank"),
            (github("repository = \"a/b\"\nworkflow = \".github/workflows/r.yml\""), "file name only"),
            (github("project_path = \"a/b\"\nci_config_ref_uri = \"\""), "blank"),
            (github("claims = { sub = \"\" }"), "blank"),
        ] {
            let err = Publisher::from_config(&cfg).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut http = github("repository = \"a/b\"\nworkflow = \"r.yml\"");
        http.issuer = "http://issuer.example/".parse().unwrap();
        assert!(Publisher::from_config(&http).unwrap_err().contains("https"));
        http.issuer = "http://127.0.0.1:8080/".parse().unwrap();
        assert!(Publisher::from_config(&http).is_ok(), "loopback http is allowed (tests)");
    }

    #[test]
    fn every_rule_must_hold_and_the_reason_names_the_claim() {
        let p = Publisher::from_config(&github(
            "repository = \"Acme/App\"\nworkflow = \"release.yml\"\nenvironment = \"pypi\"",
        ))
        .unwrap();
        let issuer = "https://token.actions.githubusercontent.com";
        let good = claims(serde_json::json!({
            "repository": "acme/app",
            "job_workflow_ref": "acme/app/.github/workflows/release.yml@refs/tags/v1",
            "environment": "pypi",
        }));
        let found = matching(std::slice::from_ref(&p), issuer, &good).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            p.identity(&good),
            ("acme/app".into(), Some("acme/app/.github/workflows/release.yml@refs/tags/v1".into()))
        );
        for (key, value, why) in [
            ("repository", serde_json::json!("evil/app"), "`repository` is `evil/app`"),
            (
                "job_workflow_ref",
                serde_json::json!("acme/app/.github/workflows/other.yml@refs/heads/x"),
                "job_workflow_ref",
            ),
            ("job_workflow_ref", serde_json::json!("acme/app/.github/workflows/xrelease.yml@r"), "job_workflow_ref"),
            // A reusable workflow of another repository, called by the trusted one.
            ("job_workflow_ref", serde_json::json!("evil/lib/.github/workflows/release.yml@v1"), "job_workflow_ref"),
            ("job_workflow_ref", serde_json::json!("acme/app/.github/workflows/release.yml"), "job_workflow_ref"),
            ("environment", serde_json::json!(null), "no `environment`"),
        ] {
            let mut c = good.clone();
            c.insert(key.into(), value);
            let Mismatch(why_not) = matching(std::slice::from_ref(&p), issuer, &c).unwrap_err();
            assert!(why_not[0].contains(why), "{why_not:?}");
        }
        // Another issuer's token never matches.
        assert!(matching(std::slice::from_ref(&p), "https://gitlab.example", &good).unwrap_err().0.is_empty());
    }
}
