//! The signing keys of configured OIDC issuers: the discovery document
//! (`<issuer>/.well-known/openid-configuration`) names the JWKS, which is cached; a token
//! signed with a key not in it fetches the set again, at most once a minute per issuer (a
//! stream of tokens with made-up `kid`s cannot make Larder hammer the issuer).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;

use super::MintError;

/// Keys are fetched again after this long in any case (issuers rotate them).
const MAX_AGE: Duration = Duration::from_secs(3600);
/// An unknown `kid` fetches again only if the keys are older than this.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// At most this many keys are read from a set.
const MAX_KEYS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Cached {
    keys: Vec<(String, DecodingKey)>,
    fetched: Instant,
}

/// After a failed fetch, the issuer is not asked again for this long (mints get a 503 at once).
const FAILED_PAUSE: Duration = Duration::from_secs(30);

pub struct Keys {
    client: reqwest::Client,
    /// One fetch per issuer at a time: the lock is held across it.
    cache: tokio::sync::Mutex<HashMap<String, Cached>>,
    /// When each issuer's last fetch failed.
    failed: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Keys {
    pub fn new() -> anyhow::Result<Keys> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("larder/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Keys { client, cache: tokio::sync::Mutex::default(), failed: Default::default() })
    }

    /// The issuer's key `kid`.
    pub async fn key(&self, issuer: &str, kid: &str) -> Result<DecodingKey, MintError> {
        let mut cache = self.cache.lock().await;
        let find = |c: &Cached| c.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key.clone());
        if let Some(cached) = cache.get(issuer) {
            let age = cached.fetched.elapsed();
            if age < MAX_AGE
                && let Some(key) = find(cached)
            {
                return Ok(key);
            }
            if age < REFRESH_AT_MOST_EVERY {
                return Err(MintError::InvalidToken(format!("the issuer has no signing key `{kid}`")));
            }
        }
        let recently_failed =
            |failed: &HashMap<String, Instant>| failed.get(issuer).is_some_and(|at| at.elapsed() < FAILED_PAUSE);
        if recently_failed(&self.failed.lock().unwrap_or_else(|p| p.into_inner())) {
            return Err(MintError::IssuerUnavailable(
                "the issuer's signing keys could not be fetched a moment ago; retry shortly".into(),
            ));
        }
        let keys = match self.fetch(issuer).await {
            Ok(keys) => keys,
            Err(e) => {
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(issuer.to_string(), Instant::now());
                return Err(e);
            }
        };
        let cached = Cached { keys, fetched: Instant::now() };
        let key = find(&cached);
        cache.insert(issuer.to_string(), cached);
        key.ok_or_else(|| MintError::InvalidToken(format!("the issuer has no signing key `{kid}`")))
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<(String, DecodingKey)>, MintError> {
        let unavailable = |what: String| {
            tracing::warn!(%issuer, error = %what, "cannot fetch an OIDC issuer's keys");
            MintError::IssuerUnavailable(format!("cannot fetch the issuer's signing keys ({what}); retry shortly"))
        };
        let discovery: serde_json::Value =
            self.get_json(&format!("{issuer}/.well-known/openid-configuration")).await.map_err(unavailable)?;
        let jwks_uri = discovery.get("jwks_uri").and_then(|v| v.as_str()).unwrap_or_default();
        let parsed = url::Url::parse(jwks_uri).map_err(|e| unavailable(format!("its jwks_uri `{jwks_uri}`: {e}")))?;
        let issuer_url = url::Url::parse(issuer).map_err(|e| unavailable(e.to_string()))?;
        // Keys over https, or from the (loopback, test) issuer's own origin.
        if parsed.scheme() != "https" && parsed.origin() != issuer_url.origin() {
            return Err(unavailable(format!("its jwks_uri `{jwks_uri}` is not https")));
        }
        let set: serde_json::Value = self.get_json(jwks_uri).await.map_err(unavailable)?;
        let keys = set.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default();
        // Each key on its own: one of a type this build cannot use does not spoil the set.
        let usable: Vec<(String, DecodingKey)> = keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(&jwk).ok().map(|key| (kid, key))
            })
            .collect();
        tracing::info!(%issuer, keys = usable.len(), "fetched an OIDC issuer's signing keys");
        Ok(usable)
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut resp = self.client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("{url} is larger than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))
    }
}
