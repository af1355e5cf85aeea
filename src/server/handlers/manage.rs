//! Managing private files: delete (`DELETE …/files/<sha256>/<filename>`) and yank
//! (`POST …/files/<sha256>/<filename>/yank` with an optional reason as the body; `DELETE` on the
//! same URL un-yanks). The server has checked the write token; the name stays claimed after a
//! delete (DC-1).

use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use std::net::IpAddr;

use crate::audit;
use crate::auth::Writer;
use crate::index::{FileKey, Yanked};
use crate::server::error::HttpError;
use crate::server::{body::Body, respond};
use crate::state::AppState;

/// A yank reason longer than this is refused.
const MAX_REASON: usize = 1024;

pub enum Action {
    Delete,
    Yank(Incoming),
    Unyank,
}

/// Deletes, yanks or un-yanks, and records it in the audit log whichever way it ends.
pub async fn manage(
    state: &AppState,
    writer: &Writer<'_>,
    peer: IpAddr,
    key: &str,
    file: &str,
    action: Action,
) -> Result<Response<Body>, HttpError> {
    let audited = match action {
        Action::Delete => audit::Action::Delete,
        Action::Yank(_) => audit::Action::Yank,
        Action::Unyank => audit::Action::Unyank,
    };
    let result = apply(state, writer.project, key, file, action).await;
    let (outcome, reason) = match &result {
        Ok(_) => (audit::Outcome::Ok, None),
        Err(e) => e.audit_outcome(),
    };
    let sha = FileKey::parse(key).and_then(|k| match k {
        FileKey::Sha256(sha) => Some(sha),
        _ => None,
    });
    state.cache.audit().record(
        audit::Event::new(audited, writer.who.clone())
            .project(writer.project)
            .file(file, sha.as_deref())
            .peer(Some(peer))
            .ended(outcome, reason),
    );
    result
}

async fn apply(
    state: &AppState,
    project: &str,
    key: &str,
    file: &str,
    action: Action,
) -> Result<Response<Body>, HttpError> {
    let Some(FileKey::Sha256(sha)) = FileKey::parse(key) else {
        return Err(HttpError::bad_request(format!("invalid sha256 `{key}`; expected 64 hex digits")));
    };
    let done = match action {
        Action::Delete => {
            state.cache.delete(project, &sha, file).await?;
            "deleted"
        }
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
            state.cache.yank(project, &sha, file, Yanked::Yes((!reason.is_empty()).then_some(reason))).await?;
            "yanked"
        }
        Action::Unyank => {
            state.cache.yank(project, &sha, file, Yanked::No).await?;
            "un-yanked"
        }
    };
    Ok(respond::ok_text(format!("{done} {file}")))
}

/// `POST …/-/retention`: applies the project's retention policy now and says, one line per
/// file, what it deleted (or, with `dry_run`, would delete).
pub async fn retention(
    state: &AppState,
    writer: &Writer<'_>,
    peer: IpAddr,
    dry_run: bool,
) -> Result<Response<Body>, HttpError> {
    let run = state.cache.apply_retention(writer.project, dry_run, false, writer.who.clone(), Some(peer)).await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    for d in &run.doomed {
        if let Some((_, why)) = run.failed.iter().find(|(f, _)| f.sha256 == d.sha256) {
            out.push_str(&format!("failed to delete {} ({})\n", d.filename, why));
        } else {
            out.push_str(&format!("{verb} {} ({}; {})\n", d.filename, d.version, d.why));
        }
    }
    out.push_str(&match dry_run {
        true => format!("dry run: {} files would be deleted from project {}", run.doomed.len(), writer.project),
        false => format!("{} files deleted from project {}, {} failed", run.deleted, writer.project, run.failed.len()),
    });
    // Deletes that failed are lines of the answer (`larder retention` exits 1 on them).
    Ok(respond::ok_text(out))
}
