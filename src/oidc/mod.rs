//! Trusted publishing (issue 23): CI exchanges its OIDC token for a short-lived upload token,
//! so no pipeline stores a long-lived secret. The protocol is PyPI's, which `uv publish
//! --trusted-publishing` and `pypa/gh-action-pypi-publish` speak to any index:
//! `GET /_/oidc/audience`, `POST /_/oidc/mint-token` (`{"token": "<JWT>"}` → `{"token": "…"}`),
//! `POST /_/oidc/burn-token` (the minted token, revoked at once).
//!
//! The JWT is verified here (signature against the issuer's published keys, `iss`, `aud`,
//! `exp`/`nbf`/`iat` with a small leeway, a `jti` used once); `publishers` decides who it is.
//! A minted token is random, kept only as its sha256, valid 15 minutes, for uploads to the
//! matching publishers' projects only. On a shared store (replicas) the minted tokens and the
//! used `jti`s are records too, so any replica accepts the token and a replay is seen by all.

mod jwks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::audit::Who;
use crate::policy::publishers::{self, Publisher};
use crate::store::Store;

/// How long a minted token is valid.
pub const MINTED_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// The longest JWT read (GitHub's are about 1.5 KB).
pub const MAX_JWT_BYTES: usize = 16 * 1024;
/// Minted tokens and used `jti`s kept in memory at most (expired ones are dropped first).
const MAX_REMEMBERED: usize = 100_000;
/// Every minted token starts so: `auth` knows where to look, and a leaked one is recognisable.
pub const MINTED_PREFIX: &str = "larder-oidc-";

/// Why a mint was refused; `server::error` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The request or the token is malformed, or fails verification (422, "invalid-token").
    #[error("{0}")]
    InvalidToken(String),
    /// A valid token that no publisher accepts (422, "invalid-publisher").
    #[error("{0}")]
    NoPublisher(String),
    /// The issuer's keys could not be fetched (503).
    #[error("{0}")]
    IssuerUnavailable(String),
    /// The store could not record the token (503).
    #[error("{0}")]
    Store(String),
    /// No `[[trusted_publishers]]` (404).
    #[error("trusted publishing is not enabled on this server ([[trusted_publishers]] in its config)")]
    NotConfigured,
}

/// A minted token, as remembered (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Minted {
    pub projects: Vec<String>,
    pub who: Who,
    pub expires_unix: u64,
}

/// What `mint` hands back.
pub struct MintedToken {
    pub secret: String,
    pub minted: Minted,
}

#[derive(Deserialize)]
struct TimeClaims {
    exp: u64,
    iat: Option<u64>,
    jti: Option<String>,
}

pub struct TrustedPublishing {
    audience: String,
    publishers: Vec<Publisher>,
    keys: jwks::Keys,
    /// sha256 of a minted secret → what it may do.
    minted: Mutex<HashMap<String, Minted>>,
    /// sha256 of `iss` + `jti` → when the token expires.
    used: Mutex<HashMap<String, u64>>,
    /// The store, when other replicas share it.
    shared: Option<Arc<dyn Store>>,
    /// Without a shared store: the used `jti`s are appended here too, so a restart does not
    /// make an exchanged token usable again.
    journal: Option<std::path::PathBuf>,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Drops expired entries; at the bound, refuses to grow (the caller answers 503).
fn remember<V>(map: &mut HashMap<String, V>, key: String, value: V, expiry: impl Fn(&V) -> u64) -> bool {
    if map.len() >= MAX_REMEMBERED {
        let now = now_unix();
        map.retain(|_, v| expiry(v) > now);
    }
    if map.len() >= MAX_REMEMBERED {
        return false;
    }
    map.insert(key, value);
    true
}

impl TrustedPublishing {
    /// `journal`: where a process without a shared store keeps the used `jti`s (read back,
    /// and pruned of expired ones, here).
    pub fn new(
        audience: String,
        publishers: Vec<Publisher>,
        shared: Option<Arc<dyn Store>>,
        journal: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let journal = journal.filter(|_| shared.is_none() && !publishers.is_empty());
        let mut used = HashMap::new();
        if let Some(path) = &journal {
            let now = now_unix();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                if let Some((id, exp)) = line.split_once(' ')
                    && let Ok(exp) = exp.parse::<u64>()
                    && exp > now
                    && used.len() < MAX_REMEMBERED
                {
                    used.insert(id.to_string(), exp);
                }
            }
            let kept: String = used.iter().map(|(id, exp)| format!("{id} {exp}\n")).collect();
            std::fs::write(path, kept).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        Ok(TrustedPublishing {
            audience,
            publishers,
            keys: jwks::Keys::new()?,
            minted: Mutex::default(),
            used: Mutex::new(used),
            shared,
            journal,
        })
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn is_configured(&self) -> bool {
        !self.publishers.is_empty()
    }

    /// Verifies an OIDC token and mints an upload token for the publishers it matches.
    pub async fn mint(&self, jwt: &str) -> Result<MintedToken, MintError> {
        let invalid = |m: String| MintError::InvalidToken(m);
        if self.publishers.is_empty() {
            return Err(MintError::NotConfigured);
        }
        if jwt.len() > MAX_JWT_BYTES {
            return Err(invalid(format!("the token is longer than {MAX_JWT_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| invalid(format!("malformed token: {e}")))?;
        use jsonwebtoken::Algorithm;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(format!("signature algorithm {:?} is not accepted; use RS256 or ES256", header.alg)));
        }
        // The issuer named by the (not yet verified) token picks the keys; only configured
        // issuers are ever contacted, and the signature is checked against their keys.
        let unverified: serde_json::Map<String, serde_json::Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(jwt)
                .map_err(|e| invalid(format!("malformed token: {e}")))?;
        let issuer = unverified.get("iss").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let Some(issuer_url) = self.publishers.iter().find(|p| p.issuer == issuer).map(|p| p.issuer.clone()) else {
            return Err(MintError::NoPublisher(format!("no trusted publisher is configured for issuer `{issuer}`")));
        };
        let Some(kid) = header.kid.as_deref() else {
            return Err(invalid("the token names no signing key (`kid`)".into()));
        };
        let key = self.keys.key(&issuer_url, kid).await?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&issuer_url]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(jwt, &key, &validation)
            .map_err(|e| invalid(format!("the token does not verify: {e}")))?;
        let claims = data.claims;
        let times: TimeClaims = serde_json::from_value(serde_json::Value::Object(claims.clone()))
            .map_err(|e| invalid(format!("the token's time claims are malformed: {e}")))?;
        let now = now_unix();
        if times.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(invalid("the token was issued in the future (`iat`)".into()));
        }
        let Some(jti) = times.jti.filter(|j| !j.is_empty()) else {
            return Err(invalid("the token has no `jti`; it could be replayed".into()));
        };
        let found = publishers::matching(&self.publishers, &issuer_url, &claims).map_err(|m| {
            MintError::NoPublisher(format!("valid token, but no trusted publisher accepts it: {}", m.0.join("; ")))
        })?;
        self.first_use(&issuer_url, &jti, times.exp).await?;
        let mut projects: Vec<String> = found.iter().flat_map(|p| p.projects.iter().cloned()).collect();
        projects.sort();
        projects.dedup();
        let first = found[0];
        let (subject, workflow) = first.identity(&claims);
        let who = Who::Publisher { publisher: first.name.clone(), issuer: issuer_url.clone(), subject, workflow };
        let minted = Minted { projects, who, expires_unix: now + MINTED_LIFETIME.as_secs() };
        let secret = format!("{MINTED_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let id = crate::digest::sha256_hex(secret.as_bytes());
        if let Some(store) = &self.shared {
            let body = serde_json::to_vec(&minted).expect("a minted token encodes");
            store
                .put_record(&format!("oidc/minted/{id}"), body)
                .await
                .map_err(|e| MintError::Store(format!("cannot record the minted token: {e}; retry shortly")))?;
        }
        let mut map = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if !remember(&mut map, id, minted.clone(), |m| m.expires_unix) {
            return Err(MintError::Store("too many live minted tokens; retry in a few minutes".into()));
        }
        Ok(MintedToken { secret, minted })
    }

    /// Records `jti` as used, or refuses a replay.
    async fn first_use(&self, issuer: &str, jti: &str, exp: u64) -> Result<(), MintError> {
        let id = crate::digest::sha256_hex(format!("{issuer}\n{jti}").as_bytes());
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if used.contains_key(&id) {
                return Err(MintError::InvalidToken("this token was already exchanged (`jti` seen before)".into()));
            }
            if !remember(&mut used, id.clone(), exp + LEEWAY_SECS, |e| *e) {
                return Err(MintError::Store("too many tokens exchanged recently; retry in a few minutes".into()));
            }
            if let Some(path) = &self.journal {
                use std::io::Write;
                let line = format!("{id} {}\n", exp + LEEWAY_SECS);
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    used.remove(&id);
                    return Err(MintError::Store(format!("cannot record the token's use: {e}; retry shortly")));
                }
            }
        }
        if let Some(store) = &self.shared {
            // Create-only: of two replicas given the same token, one wins.
            match store.put_record_if(&format!("oidc/jti/{id}"), exp.to_string().into_bytes(), None).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(MintError::InvalidToken("this token was already exchanged (`jti` seen before)".into()));
                }
                Err(e) => return Err(MintError::Store(format!("cannot record the token's use: {e}; retry shortly"))),
            }
        }
        Ok(())
    }

    /// The minted token with this secret, if it is live. On a shared store the record decides
    /// (a token burned through another replica is gone here too).
    pub async fn check(&self, secret: &str) -> Result<Option<Minted>, crate::store::Error> {
        if !secret.starts_with(MINTED_PREFIX) {
            return Ok(None);
        }
        let id = crate::digest::sha256_hex(secret.as_bytes());
        let minted = match &self.shared {
            Some(store) => match store.get_record(&format!("oidc/minted/{id}")).await? {
                Some(bytes) => serde_json::from_slice::<Minted>(&bytes).ok(),
                None => None,
            },
            None => self.minted.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned(),
        };
        Ok(minted.filter(|m| m.expires_unix > now_unix()))
    }

    /// Revokes a minted token (uv sends it after its upload). `true` when it was live.
    pub async fn burn(&self, secret: &str) -> Result<Option<Minted>, crate::store::Error> {
        let found = self.check(secret).await?;
        let id = crate::digest::sha256_hex(secret.as_bytes());
        self.minted.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(store) = &self.shared {
            store.delete_record(&format!("oidc/minted/{id}")).await?;
        }
        Ok(found)
    }
}
