//! Why a configuration cannot be used. Each error names what to fix: the file, or the setting
//! as the config file spells it (its flag and variable share the name: `index_ttl`,
//! `--index-ttl`, `LARDER_INDEX_TTL`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML of Larder's settings (an unknown key, a value of the wrong
    /// type); the source says where.
    #[error("invalid config file `{}`", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting's value cannot be used.
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
    /// A setting names an environment variable (`secret_env`, `password_env`) that is not set.
    #[error("{setting}: environment variable `{var}` is not set")]
    MissingVariable { setting: String, var: String },
    /// An entry of a list section (`[[block]]`, `[[webhooks]]`, `[[trusted_publishers]]`,
    /// `[advisories]`) that its own parser refused; the message names the entry.
    #[error("{message}")]
    Entry { section: &'static str, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(setting: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid { setting: setting.into(), reason: reason.to_string() }
    }

    pub(crate) fn entry(section: &'static str) -> impl FnOnce(String) -> ConfigError {
        move |message| ConfigError::Entry { section, message }
    }
}

/// `Err` unless `ok`: `ensure(ok, setting, reason)` reads like the check it makes.
pub(crate) fn ensure(ok: bool, setting: impl Into<String>, reason: impl std::fmt::Display) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::invalid(setting, reason)) }
}
