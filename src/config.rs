//! Configuration: the TOML file layer and the resolved `Config`.
//!
//! Priority, lowest first: built-in defaults, the TOML file, `LARDER_*` environment variables,
//! flags. clap already folds the environment under the flags (`cli::Settings`), so resolving is
//! one pure function, `Config::merge(file, settings)`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::cli::Settings;

/// The config file as written: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<url::Url>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub index_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub not_found_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_timeout: Option<Duration>,
    pub page_cache_mib: Option<u64>,
    pub default_project: Option<String>,
}

/// Resolved settings, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: Option<url::Url>,
    pub data_dir: PathBuf,
    pub index_ttl: Duration,
    pub stale_if_error: Duration,
    pub not_found_ttl: Duration,
    pub upstream_timeout: Duration,
    pub page_cache_bytes: u64,
    pub default_project: String,
}

const DEFAULT_CONFIG_PATH: &str = "config/larder.toml";

impl Config {
    /// Reads the config file (the one named, or `config/larder.toml` when present) and merges.
    pub fn load(settings: &Settings) -> anyhow::Result<Config> {
        let file = match &settings.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        Config::merge(file, settings)
    }

    /// Flags and environment (`settings`) over the file over defaults.
    pub fn merge(file: FileConfig, s: &Settings) -> anyhow::Result<Config> {
        let default_project = s
            .default_project
            .clone()
            .or(file.default_project)
            .unwrap_or_else(|| "default".into());
        anyhow::ensure!(
            crate::server::route::is_valid_project_id(&default_project),
            "invalid default_project `{default_project}`; use letters, digits, '.', '_', '-' or '%'"
        );
        Ok(Config {
            listen: s
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:3141".parse().unwrap()),
            upstream: s.upstream.clone().or(file.upstream),
            data_dir: s
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "larder-data".into()),
            index_ttl: s
                .index_ttl
                .or(file.index_ttl)
                .unwrap_or(Duration::from_secs(600)),
            stale_if_error: s
                .stale_if_error
                .or(file.stale_if_error)
                .unwrap_or(Duration::from_secs(7 * 86400)),
            not_found_ttl: s
                .not_found_ttl
                .or(file.not_found_ttl)
                .unwrap_or(Duration::from_secs(60)),
            upstream_timeout: s
                .upstream_timeout
                .or(file.upstream_timeout)
                .unwrap_or(Duration::from_secs(30)),
            page_cache_bytes: s.page_cache_mib.or(file.page_cache_mib).unwrap_or(256) * 1024 * 1024,
            default_project,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_override_file_override_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nupstream = \"http://127.0.0.1:1/simple/\"\nindex_ttl = \"5m\"\n",
        )
        .unwrap();
        let settings = Settings {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::merge(file, &settings).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.upstream.unwrap().as_str(), "http://127.0.0.1:1/simple/");
        assert_eq!(c.index_ttl, Duration::from_secs(300));
        assert_eq!(c.not_found_ttl, Duration::from_secs(60));
        assert_eq!(c.default_project, "default");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../config/larder.toml");
        toml::from_str::<FileConfig>(text).expect("config/larder.toml must stay valid");
    }
}
