//! The subcommands, one file each; `main` dispatches here.

pub mod advisories;
pub mod bundle;
pub mod manage;
pub mod serve;
pub mod verify;
pub mod warm;

/// The tracker a one-shot command's store runs its background work on (copies of a bucket's
/// blobs into the local cache): best effort, so the command does not wait for it at exit.
/// `serve` and `warm` use the engine's tracker, which `Cache::shutdown` waits for.
pub(crate) fn background() -> crate::store::Background {
    crate::store::Background::default()
}
