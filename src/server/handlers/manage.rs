//! Managing private files: delete (`DELETE …/files/<sha256>/<filename>`) and yank
//! (`POST …/files/<sha256>/<filename>/yank` with an optional reason as the body; `DELETE` on the
//! same URL un-yanks). Both need a write token; the name stays claimed after a delete (DC-1).

use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth;
use crate::cache::private::Rejected;
use crate::index::{FileKey, ProjectName, Yanked, filename};
use crate::server::error::HttpError;
use crate::server::{body::Body, respond, route::Scope};
use crate::state::AppState;

/// A yank reason longer than this is refused.
const MAX_REASON: usize = 1024;

pub enum Action {
    Delete,
    Yank(Incoming),
    Unyank,
}

pub async fn manage(
    state: &AppState,
    scope: &Scope,
    key: &str,
    file: &str,
    headers: &HeaderMap,
    action: Action,
) -> Result<Response<Body>, HttpError> {
    let project = auth::authorize_project_write(&state.config, headers, scope)?;
    let Some(FileKey::Sha256(sha)) = FileKey::parse(key) else {
        return Err(HttpError::bad_request(format!("invalid sha256 `{key}`; expected 64 hex digits")));
    };
    let not_found =
        || HttpError::not_found(format!("no private file `{file}` with sha256 `{sha}` in project `{project}`"));
    let name = filename::candidate_projects(file)
        .iter()
        .filter_map(|n| ProjectName::parse(n).ok())
        .find(|n| state.private.is_claimed(std::slice::from_ref(project), n))
        .ok_or_else(not_found)?;
    let page = state.private.page(std::slice::from_ref(project), &name).ok_or_else(not_found)?;
    if page.file(&FileKey::Sha256(sha.clone())).is_none_or(|f| f.filename != file) {
        return Err(not_found());
    }
    let result = match action {
        Action::Delete => match state.private.delete(project, &name, file).await {
            Ok((unused, _lock)) => {
                // Blobs are shared: metadata Larder extracted for an upstream wheel, or the same
                // bytes cached from upstream, stay. The lock keeps uploads out meanwhile.
                for sha in unused {
                    if state.pages.links().is_metadata(&sha) {
                        continue;
                    }
                    state.hot_files.invalidate(&sha).await;
                    state.store.delete_blob(&sha).await?;
                }
                tracing::info!(%project, package = %name, %file, "private file deleted");
                Ok("deleted")
            }
            Err(e) => Err(e),
        },
        Action::Yank(body) => {
            // Read at most the limit: a longer body is refused without being buffered.
            let bytes = http_body_util::Limited::new(body, MAX_REASON)
                .collect()
                .await
                .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                    Some(_) => HttpError::bad_request(format!("the yank reason is longer than {MAX_REASON} bytes")),
                    None => HttpError::bad_request(format!("cannot read the yank reason: {e}")),
                })?
                .to_bytes();
            let reason = String::from_utf8(bytes.to_vec())
                .map_err(|_| HttpError::bad_request("the yank reason is not UTF-8"))?
                .trim()
                .to_string();
            let yanked = Yanked::Yes((!reason.is_empty()).then_some(reason));
            state.private.set_yanked(project, &name, file, yanked).await.map(|_| "yanked")
        }
        Action::Unyank => state.private.set_yanked(project, &name, file, Yanked::No).await.map(|_| "un-yanked"),
    };
    match result {
        Ok(done) => Ok(respond::text(StatusCode::OK, format!("{done} {file}"))),
        Err(Rejected::Store(e)) => Err(e.into()),
        Err(Rejected::NoSuchFile(_)) => Err(not_found()),
        Err(e) => Err(HttpError::bad_request(e.to_string())),
    }
}
