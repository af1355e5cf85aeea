//! Project names: validation (NAME-01) and normalization (NAME-02, ROUTE-04).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A valid project name in its fully normalized form: lower case, every run of `-`, `_` and `.`
/// replaced by one `-`. Every lookup and every upstream decision uses this form (ROUTE-04, DC-3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

/// Names longer than this are refused: no real project comes close, and every name is a key
/// in memory and on disk (issue 9).
pub const MAX_LEN: usize = 200;

/// Why a string is not a project name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid project name `{0}`; names use ASCII letters, digits, '.', '_' and '-', start and end with a letter or digit, and are at most 200 characters long"
)]
pub struct InvalidName(pub String);

impl ProjectName {
    /// Validates `raw` against NAME-01 (`^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])\Z`, ASCII,
    /// case-insensitive) and normalizes it.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let bytes = raw.as_bytes();
        if bytes.len() > MAX_LEN {
            return Err(InvalidName(format!("{}…", raw.chars().take(40).collect::<String>())));
        }
        let alnum = |b: &u8| b.is_ascii_alphanumeric();
        let valid = match bytes {
            [] => false,
            [only] => alnum(only),
            [first, middle @ .., last] => {
                alnum(first) && alnum(last) && middle.iter().all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            }
        };
        if !valid {
            return Err(InvalidName(raw.to_string()));
        }
        Ok(ProjectName(normalize(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// NAME-02: lower case, and each run of `-`, `_`, `.` becomes a single `-`.
pub fn normalize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_sep = false;
    for c in raw.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    out
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ProjectName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ProjectName::parse(&s)
    }
}

impl From<ProjectName> for String {
    fn from(n: ProjectName) -> String {
        n.0
    }
}

/// A project name pattern from the config: a name, or a name with `*` wildcards
/// (`nvidia-*`), matched against normalized names (`NVIDIA_*` and `nvidia-*` are one pattern).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    pub fn parse(raw: &str) -> Result<NamePattern, String> {
        let raw = raw.trim();
        // Every piece between wildcards must be usable inside a name.
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'));
        if !ok {
            return Err(format!(
                "invalid project name pattern `{raw}`; use a name, or a name with `*` wildcards such as `nvidia-*`"
            ));
        }
        let normalized = raw.split('*').map(normalize).collect::<Vec<_>>().join("*");
        Ok(NamePattern(normalized))
    }

    pub fn matches(&self, name: &ProjectName) -> bool {
        glob(self.0.as_bytes(), name.as_str().as_bytes())
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of characters; everything else matches itself. Iterative with one
/// backtrack point, so a pattern of many stars stays linear-ish (no exponential blow-up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns_match_normalized_names() {
        let name = |s| ProjectName::parse(s).unwrap();
        let pat = |s| NamePattern::parse(s).unwrap();
        assert!(pat("torch").matches(&name("Torch")));
        assert!(!pat("torch").matches(&name("torchvision")));
        assert!(pat("NVIDIA_*").matches(&name("nvidia-cublas-cu12")));
        assert!(pat("nvidia-*").matches(&name("nvidia-cudnn")));
        assert!(!pat("nvidia-*").matches(&name("nvidia")));
        assert!(pat("*").matches(&name("anything")));
        assert!(pat("a*b*c").matches(&name("a-x-b-y-c")));
        assert!(!pat("a*b*c").matches(&name("a-x-b-y")));
        assert!(pat("*-internal").matches(&name("team-internal")));
        assert!(NamePattern::parse("a/b").is_err());
        assert!(NamePattern::parse("").is_err());
        // Many stars against a long name: answered at once, not exponentially.
        let long = name(&"a".repeat(MAX_LEN));
        assert!(!pat(&format!("{}b", "a*".repeat(50))).matches(&long));
    }

    #[test]
    fn name_02_all_spellings_normalize_alike() {
        for raw in ["Friendly-Bard", "friendly.bard", "friendly_bard", "friendly--bard", "FrIeNdLy-._.-bArD"] {
            assert_eq!(ProjectName::parse(raw).unwrap().as_str(), "friendly-bard", "{raw}");
        }
    }

    #[test]
    fn name_01_rejects_invalid_names() {
        let long = "a".repeat(MAX_LEN + 1);
        for raw in ["", "-a", "a-", ".a", "a b", "a/b", "a\n", "é", "../etc", "a%2Fb", &long] {
            assert!(ProjectName::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        for raw in ["a", "A1", "zope.interface", "x_y-z"] {
            assert!(ProjectName::parse(raw).is_ok(), "{raw:?} should be accepted");
        }
    }
}
