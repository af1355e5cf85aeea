//! Trusted publishing's three calls (issue 23): the audience, the exchange of an OIDC token
//! for an upload token, and its burning. Every mint and burn is audited, refused ones too.

use std::net::IpAddr;

use http::{HeaderMap, Response};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::audit::{self, Event, Outcome, Who};
use crate::oidc::MintError;
use crate::server::body::{Body, read_json};
use crate::server::error::{HttpError, oidc_refused};
use crate::server::respond;
use crate::server::route::OidcCall;
use crate::state::AppState;

/// The request bodies are a token each: a few KB.
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

pub async fn oidc(
    state: &AppState,
    call: OidcCall,
    headers: &HeaderMap,
    body: Incoming,
    peer: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let publishing = &state.publishing;
    match call {
        OidcCall::Audience => {
            if !publishing.is_configured() {
                return Ok(oidc_refused(&MintError::NotConfigured));
            }
            Ok(respond::ok_json(serde_json::json!({"audience": publishing.audience()}).to_string()))
        }
        OidcCall::Mint => {
            let request: TokenBody = read_json(body, MAX_BODY).await?;
            let event = Event::new(audit::Action::MintToken, Who::Anonymous).peer(Some(peer));
            match publishing.mint(&request.token).await {
                Ok(minted) => {
                    let projects = minted.minted.projects.join(", ");
                    tracing::info!(who = ?minted.minted.who, %projects, "minted an upload token for a trusted publisher");
                    let event = Event { who: minted.minted.who.clone(), ..event };
                    state.cache.audit().record(event.ended(Outcome::Ok, Some(format!("for project(s) {projects}"))));
                    let body = serde_json::json!({"success": true, "token": minted.secret, "expires": minted.minted.expires_unix});
                    Ok(respond::ok_json(body.to_string()))
                }
                Err(e) => {
                    let result = if matches!(e, MintError::InvalidToken(_) | MintError::NoPublisher(_)) {
                        Outcome::Refused
                    } else {
                        Outcome::Failed
                    };
                    tracing::info!(reason = %e, "refused to mint an upload token");
                    state.cache.audit().record(event.ended(result, Some(e.to_string())));
                    Ok(oidc_refused(&e))
                }
            }
        }
        OidcCall::Burn => {
            // The minted token in the body, or as the request's credentials.
            let secret = match read_json::<TokenBody>(body, MAX_BODY).await {
                Ok(b) => Some(b.token),
                Err(_) => crate::auth::minted_secret(headers),
            };
            let Some(secret) = secret.filter(|s| s.starts_with(crate::oidc::MINTED_PREFIX)) else {
                return Err(HttpError::bad_request("send the minted token as {\"token\": \"…\"}"));
            };
            let burned = publishing.burn(&secret).await?;
            let who = burned.as_ref().map_or(Who::Anonymous, |m| m.who.clone());
            let reason = if burned.is_some() { None } else { Some("no live token with this secret".into()) };
            state
                .cache
                .audit()
                .record(Event::new(audit::Action::BurnToken, who).peer(Some(peer)).ended(Outcome::Ok, reason));
            Ok(respond::ok_json(serde_json::json!({"burned": burned.is_some()}).to_string()))
        }
    }
}
