//! OSV's API (issue 25) under `/-/osv/`, answered from the imported advisories, so that
//! `uv audit --service-url http://<larder>/-/osv/` works with no other network:
//! - `POST v1/querybatch` `{"queries": [{"package": {"name", "ecosystem"}, "version", "page_token"}]}`
//!   → `{"results": [{"vulns": [{"id", "modified"}], "next_page_token"}]}` (ids only, as OSV does);
//! - `POST v1/query` (one such query) → `{"vulns": [<full records>], "next_page_token"}`;
//! - `GET v1/vulns/<id>` → the record as imported, or OSV's 404.

use http::Response;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::advisories::Advisory;
use crate::index::ProjectName;
use crate::server::body::{Body, read_json};
use crate::server::error::HttpError;
use crate::server::respond;
use crate::server::route::OsvCall;
use crate::state::AppState;

/// A request body may be this large (1,000 queries of long names fit in well under it).
const MAX_BODY: usize = 512 << 10;
/// Queries per batch, and records per answer before a page token: OSV's own limits.
const MAX_QUERIES: usize = 1000;
const PAGE: usize = 1000;
/// Ids in one batch answer at most (a batch of 1,000 copies of a name with many advisories
/// must not cost a million): the queries past it get a page token and are asked again.
const MAX_BATCH_IDS: usize = 10_000;

#[derive(Deserialize)]
struct Query {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    commit: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    ecosystem: Option<String>,
    #[serde(default)]
    purl: Option<String>,
}

#[derive(Deserialize)]
struct Batch {
    #[serde(deserialize_with = "at_most_max_queries")]
    queries: Vec<Query>,
}

/// The queries, refused past `MAX_QUERIES` while they are read (not after all are parsed).
fn at_most_max_queries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Query>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Query>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_QUERIES} queries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Query>, A::Error> {
            let mut out = Vec::new();
            while let Some(q) = seq.next_element()? {
                if out.len() == MAX_QUERIES {
                    return Err(serde::de::Error::custom(format!("at most {MAX_QUERIES} queries per batch")));
                }
                out.push(q);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

pub async fn osv(state: &AppState, call: OsvCall, body: Incoming) -> Result<Response<Body>, HttpError> {
    match call {
        OsvCall::Vuln(id) => match state.cache.advisories().get(&id) {
            Some(a) => Ok(respond::ok_json(a.raw.get().to_string())),
            None => Ok(respond::not_found_json(r#"{"code":5,"message":"Bug not found."}"#.to_string())),
        },
        OsvCall::Query => {
            let query: Query = read_json(body, MAX_BODY).await?;
            let (found, next) = answer(state, &query, PAGE)?;
            // The stored records are written as they are (no re-parse per answer).
            let mut out = String::from("{");
            if !found.is_empty() {
                out.push_str("\"vulns\":[");
                for (i, a) in found.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(a.raw.get());
                }
                out.push(']');
            }
            if let Some(next) = next {
                let sep = if found.is_empty() { "" } else { "," };
                out.push_str(&format!("{sep}\"next_page_token\":\"{next}\""));
            }
            out.push('}');
            Ok(respond::ok_json(out))
        }
        OsvCall::QueryBatch => {
            let batch: Batch = read_json(body, MAX_BODY).await?;
            let mut results = Vec::with_capacity(batch.queries.len());
            let mut budget = MAX_BATCH_IDS;
            for query in &batch.queries {
                let (found, next) = answer(state, query, PAGE.min(budget))?;
                budget -= found.len();
                let mut result = serde_json::Map::new();
                if !found.is_empty() {
                    let ids: Vec<serde_json::Value> =
                        found.iter().map(|a| serde_json::json!({"id": a.id, "modified": a.modified})).collect();
                    result.insert("vulns".into(), ids.into());
                }
                if let Some(next) = next {
                    result.insert("next_page_token".into(), next.into());
                }
                results.push(serde_json::Value::Object(result));
            }
            Ok(respond::ok_json(serde_json::json!({ "results": results }).to_string()))
        }
    }
}

/// The advisories one query matches (a page of at most `page` of them), and the next page's
/// token (an offset).
fn answer(
    state: &AppState,
    q: &Query,
    page: usize,
) -> Result<(Vec<std::sync::Arc<Advisory>>, Option<String>), HttpError> {
    if q.commit.is_some() {
        return Err(HttpError::bad_request("queries by commit are not supported: Larder knows PyPI packages only"));
    }
    let Some(package) = &q.package else {
        return Err(HttpError::bad_request("a query needs `package` (`name` and `ecosystem`)"));
    };
    if package.purl.is_some() && package.name.is_none() {
        return Err(HttpError::bad_request("queries by purl are not supported; give `name` and `ecosystem`"));
    }
    // Another ecosystem, or a name PyPI could not have: nothing known (as OSV answers).
    let name = match (&package.name, package.ecosystem.as_deref()) {
        (Some(n), Some("PyPI") | None) => match ProjectName::parse(n) {
            Ok(name) => name,
            Err(_) => return Ok((Vec::new(), None)),
        },
        _ => return Ok((Vec::new(), None)),
    };
    let found = state.cache.advisories_for(&name, q.version.as_deref());
    let start = match &q.page_token {
        None => 0,
        Some(t) => {
            t.parse::<usize>().map_err(|_| HttpError::bad_request("`page_token` is not one this server gave"))?
        }
    };
    let end = start.saturating_add(page);
    let next = (found.len() > end).then(|| end.to_string());
    Ok((found.into_iter().skip(start).take(page).collect(), next))
}
