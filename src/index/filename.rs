//! Distribution filenames: which project a filename belongs to, and safe use in URLs (FN-*).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::name::normalize;

/// Characters escaped in a filename path segment: pip re-quotes paths itself, and `+`/`!` are
/// left raw, which both pip and uv accept (FN-7, ROUTE-05).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\');

/// Appends `s` to `out`, percent-encoded as one URL path segment.
pub fn write_path_segment(out: &mut String, s: &str) {
    for part in utf8_percent_encode(s, SEGMENT) {
        out.push_str(part);
    }
}

/// A filename is safe to use as a path segment and a store label: no separators, no control
/// characters, not `.`/`..` (FN-7).
pub fn is_safe(filename: &str) -> bool {
    !filename.is_empty()
        && filename != "."
        && filename != ".."
        && filename.len() <= 255
        && !filename.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

const SDIST_EXTENSIONS: &[&str] =
    &[".tar.gz", ".zip", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma", ".tgz", ".tar"];

/// The normalized project names a filename may belong to, most likely first.
///
/// A wheel's name is its first `-` field (FN-3). An sdist is `name-version.ext`; PEP 625 names
/// split at the last `-`, legacy names like `foo-bar-1.0.tar.gz` may split earlier (FN-5), so
/// every split is offered, last first.
pub fn candidate_projects(filename: &str) -> Vec<String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        return stem.split('-').next().map(normalize).into_iter().collect();
    }
    if let Some(ext) = SDIST_EXTENSIONS.iter().find(|e| filename.ends_with(*e)) {
        let stem = &filename[..filename.len() - ext.len()];
        return stem.rmatch_indices('-').map(|(i, _)| normalize(&stem[..i])).filter(|n| !n.is_empty()).collect();
    }
    // .egg and other legacy formats: same rule as sdists.
    filename
        .rsplit_once('.')
        .map(|(stem, _)| stem.rmatch_indices('-').map(|(i, _)| normalize(&stem[..i])).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fn_5_candidates() {
        assert_eq!(candidate_projects("My_Pkg-1.0-py3-none-any.whl"), vec!["my-pkg"]);
        assert_eq!(candidate_projects("my_pkg-1.0.tar.gz"), vec!["my-pkg"]);
        assert_eq!(candidate_projects("foo-bar-1.0.tar.gz"), vec!["foo-bar", "foo"]);
        assert_eq!(candidate_projects("Foo.Bar-1.0.zip"), vec!["foo-bar"]);
    }

    #[test]
    fn fn_7_unsafe_names() {
        assert!(!is_safe("../x.whl"));
        assert!(!is_safe("a/b.whl"));
        assert!(!is_safe("a\\b.whl"));
        assert!(!is_safe(".."));
        assert!(!is_safe("a\nb"));
        assert!(is_safe("pkg-1.0+local-py3-none-any.whl"));
    }

    #[test]
    fn encoding_keeps_plus_and_escapes_hash() {
        let encode = |s: &str| {
            let mut out = String::new();
            write_path_segment(&mut out, s);
            out
        };
        assert_eq!(encode("a-1.0+l.whl"), "a-1.0+l.whl");
        assert_eq!(encode("a b#c.whl"), "a%20b%23c.whl");
    }
}
