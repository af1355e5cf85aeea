//! The subcommands, one file each; `main` dispatches here.

pub mod advisories;
pub mod bundle;
pub mod manage;
pub mod serve;
pub mod verify;
pub mod warm;
