//! Scopes: what a URL reads or writes. A GitLab project (`/api/v4/projects/:id/…`) or group
//! (`/api/v4/groups/:id/…`), by id.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Project(String),
    Group(String),
}

impl Scope {
    /// The project's or group's id.
    pub fn id(&self) -> &str {
        match self {
            Scope::Project(id) | Scope::Group(id) => id,
        }
    }
}

/// A GitLab project or group id: a number or a URL-encoded path (`group%2Fproject`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
}
