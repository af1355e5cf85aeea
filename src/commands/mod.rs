//! The subcommands, one file each; `main` dispatches here.

pub mod manage;
pub mod serve;
pub mod warm;
