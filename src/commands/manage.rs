//! `larder yank | unyank | delete | retention`: manage private files through a running
//! Larder's HTTP API, so the server's view stays the only truth (and its audit log records
//! who did it). A file's sha256 is looked up on its page.

use anyhow::Context;

use crate::cli::{ManageArgs, RetentionArgs};

pub enum Op {
    Yank,
    Unyank,
    Delete,
}

pub async fn run(op: Op, args: ManageArgs) -> anyhow::Result<()> {
    let token = std::env::var("LARDER_TOKEN").context("set LARDER_TOKEN to a token with write access")?;
    let name = crate::index::filename::parse(&args.filename).map_err(|e| anyhow::anyhow!(e))?.name;
    let base = args.server.as_str().trim_end_matches('/');
    let project = format!("{base}/api/v4/projects/{}/packages/pypi", args.project);
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{project}/simple/{name}/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .basic_auth("larder", Some(&token))
        .send()
        .await
        .with_context(|| format!("cannot reach Larder at {base}"))?
        .error_for_status()
        .with_context(|| format!("cannot read the page of `{name}`"))?
        .bytes()
        .await?;
    let page: serde_json::Value = serde_json::from_slice(&page).context("Larder sent a page that is not JSON")?;
    let sha = page["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == args.filename.as_str()))
        .and_then(|f| f["hashes"]["sha256"].as_str())
        .ok_or_else(|| {
            anyhow::anyhow!("`{}` is not on the page of `{name}` in project `{}`", args.filename, args.project)
        })?
        .to_string();
    let file_url = format!("{project}/files/{sha}/{}", args.filename);
    let request = match op {
        Op::Yank => client.post(format!("{file_url}/yank")).body(args.reason.unwrap_or_default()),
        Op::Unyank => client.delete(format!("{file_url}/yank")),
        Op::Delete => client.delete(file_url),
    };
    let resp = request.basic_auth("larder", Some(&token)).send().await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "Larder answered {status}: {}", text.trim());
    println!("{}", text.trim());
    Ok(())
}

/// `larder retention`: the server applies the project's policy and says what it deleted.
pub async fn retention(args: RetentionArgs) -> anyhow::Result<std::process::ExitCode> {
    let token = std::env::var("LARDER_TOKEN").context("set LARDER_TOKEN to a token with write access")?;
    let base = args.server.as_str().trim_end_matches('/');
    let mut url = format!("{base}/api/v4/projects/{}/packages/pypi/-/retention", args.project);
    if args.dry_run {
        url.push_str("?dry_run=true");
    }
    let resp = reqwest::Client::new()
        .post(url)
        .basic_auth("larder", Some(&token))
        .send()
        .await
        .with_context(|| format!("cannot reach Larder at {base}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "Larder answered {status}: {}", text.trim());
    println!("{}", text.trim());
    // Deletes that failed are retried by the next run; say so in the exit status.
    let failed = text.lines().any(|l| l.starts_with("failed to delete"));
    Ok(if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS })
}
