//! What `larder warm` and `larder export` read: pinned requirements (`name==version`, with or
//! without `--hash`), PEP 751 `pylock.toml`, and `uv.lock`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};

use crate::index::ProjectName;

/// One pinned release, with the sha256s the lock file allows for its files (empty: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: ProjectName,
    pub version: String,
    pub hashes: BTreeSet<String>,
}

/// Reads a lock or requirements file, choosing the format by its name.
pub fn read(path: &Path) -> anyhow::Result<Vec<Pin>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let pins = if file == "uv.lock" {
        parse_uv_lock(&text)
    } else if file.starts_with("pylock.") && file.ends_with(".toml") {
        parse_pylock(&text)
    } else {
        parse_requirements(&text)
    };
    pins.with_context(|| format!("in `{}`", path.display()))
}

/// `name==version` (a command-line argument).
pub fn parse_pin(arg: &str) -> anyhow::Result<Pin> {
    let (name, version) =
        arg.split_once("==").with_context(|| format!("`{arg}` is not pinned; write name==version"))?;
    let name = ProjectName::parse(name.trim())?;
    let version = version.trim().trim_start_matches('=').to_string();
    anyhow::ensure!(crate::metadata::is_valid_version(&version), "`{version}` is not a PEP 440 version");
    Ok(Pin { name, version, hashes: BTreeSet::new() })
}

/// A requirements file of pinned lines, as `pip-compile`/`uv pip compile` write them, with
/// optional `--hash=sha256:…` options and environment markers.
pub fn parse_requirements(text: &str) -> anyhow::Result<Vec<Pin>> {
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut pins = Vec::new();
    for (n, raw) in joined.lines().enumerate() {
        let line = match raw.find(" #") {
            Some(i) => &raw[..i],
            None if raw.trim_start().starts_with('#') => "",
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('-') {
            tracing::warn!(line = n + 1, "skipping an option line: {line}");
            continue;
        }
        let mut hashes = BTreeSet::new();
        let mut requirement = String::new();
        for token in line.split_whitespace() {
            if let Some(h) = token.strip_prefix("--hash=") {
                if let Some(sha) = h.strip_prefix("sha256:") {
                    hashes.insert(sha.to_ascii_lowercase());
                }
            } else {
                requirement.push_str(token);
                requirement.push(' ');
            }
        }
        let requirement = requirement.split(';').next().unwrap_or_default().trim();
        let (name, version) = requirement.split_once("==").with_context(|| {
            format!("line {}: `{requirement}` is not pinned; only name==version can be warmed", n + 1)
        })?;
        let name = name.split('[').next().unwrap_or_default().trim();
        let pin = parse_pin(&format!("{name}=={version}")).with_context(|| format!("line {}", n + 1))?;
        pins.push(Pin { hashes, ..pin });
    }
    Ok(pins)
}

/// PEP 751: `[[packages]]` with `name`, `version`, `wheels[].hashes.sha256`, `sdist.hashes.sha256`.
pub fn parse_pylock(text: &str) -> anyhow::Result<Vec<Pin>> {
    let doc: toml::Table = toml::from_str(text)?;
    let mut pins = Vec::new();
    for pkg in doc.get("packages").and_then(|p| p.as_array()).into_iter().flatten() {
        let (Some(name), Some(version)) =
            (pkg.get("name").and_then(|v| v.as_str()), pkg.get("version").and_then(|v| v.as_str()))
        else {
            continue; // packages from a directory or VCS have no version to warm
        };
        if pkg.get("directory").is_some() || pkg.get("vcs").is_some() || pkg.get("archive").is_some() {
            continue;
        }
        let mut hashes = BTreeSet::new();
        let artifacts = pkg.get("wheels").and_then(|w| w.as_array()).into_iter().flatten().chain(pkg.get("sdist"));
        for artifact in artifacts {
            if let Some(sha) = artifact.get("hashes").and_then(|h| h.get("sha256")).and_then(|s| s.as_str()) {
                hashes.insert(sha.to_ascii_lowercase());
            }
        }
        pins.push(Pin { hashes, ..parse_pin(&format!("{name}=={version}"))? });
    }
    if pins.is_empty() {
        bail!("no [[packages]] with a name and version");
    }
    Ok(pins)
}

/// uv's lock file: `[[package]]` from a registry, with `sdist.hash` and `wheels[].hash`.
pub fn parse_uv_lock(text: &str) -> anyhow::Result<Vec<Pin>> {
    let doc: toml::Table = toml::from_str(text)?;
    let mut pins = Vec::new();
    for pkg in doc.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
        let from_registry = pkg.get("source").and_then(|s| s.get("registry")).is_some();
        let (Some(name), Some(version)) =
            (pkg.get("name").and_then(|v| v.as_str()), pkg.get("version").and_then(|v| v.as_str()))
        else {
            continue;
        };
        if !from_registry {
            continue; // the project itself, editables, paths, git
        }
        let mut hashes = BTreeSet::new();
        let artifacts = pkg.get("wheels").and_then(|w| w.as_array()).into_iter().flatten().chain(pkg.get("sdist"));
        for artifact in artifacts {
            if let Some(sha) = artifact.get("hash").and_then(|h| h.as_str()).and_then(|h| h.strip_prefix("sha256:")) {
                hashes.insert(sha.to_ascii_lowercase());
            }
        }
        pins.push(Pin { hashes, ..parse_pin(&format!("{name}=={version}"))? });
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_with_hashes_markers_and_comments() {
        let text = "# generated\nrequests==2.32.3 \\\n    --hash=sha256:AA11 \\\n    --hash=sha256:bb22\n    # via app\nidna==3.7 ; python_version >= '3.8'\nFoo_Bar[extra]==1.0  # pinned\n--index-url http://x/\n";
        let pins = parse_requirements(text).unwrap();
        assert_eq!(pins.len(), 3);
        assert_eq!(pins[0].name.as_str(), "requests");
        assert_eq!(pins[0].hashes, BTreeSet::from(["aa11".to_string(), "bb22".to_string()]));
        assert_eq!((pins[1].name.as_str(), pins[1].version.as_str()), ("idna", "3.7"));
        assert_eq!(pins[2].name.as_str(), "foo-bar");
        assert!(parse_requirements("requests>=2\n").is_err());
    }

    #[test]
    fn pylock_and_uv_lock() {
        let pylock = r#"
lock-version = "1.0"
[[packages]]
name = "app"
version = "1.0"
wheels = [{ name = "app-1.0-py3-none-any.whl", hashes = { sha256 = "aa" } }]
[[packages]]
name = "local"
directory = { path = "." }
"#;
        let pins = parse_pylock(pylock).unwrap();
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].hashes, BTreeSet::from(["aa".to_string()]));
        let uv = r#"
version = 1
[[package]]
name = "me"
version = "0.1"
source = { virtual = "." }
[[package]]
name = "lib-core"
version = "2.1"
source = { registry = "http://127.0.0.1/simple/" }
sdist = { url = "x", hash = "sha256:CC", size = 1 }
wheels = [{ url = "y", hash = "sha256:dd", size = 2 }]
"#;
        let pins = parse_uv_lock(uv).unwrap();
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].name.as_str(), "lib-core");
        assert_eq!(pins[0].hashes, BTreeSet::from(["cc".to_string(), "dd".to_string()]));
    }
}
