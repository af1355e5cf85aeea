//! Distribution filenames: which project a filename belongs to, and safe use in URLs (FN-*).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::ProjectName;
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

/// Wheel or sdist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistKind {
    Wheel,
    Sdist,
}

/// A wheel's compatibility tags (FN-3), each possibly a `.`-separated set.
#[derive(Debug, PartialEq, Eq)]
pub struct WheelTags {
    pub python: String,
    pub abi: String,
    pub platform: String,
}

/// What a distribution's filename says: the one parser of distribution filenames.
#[derive(Debug, PartialEq, Eq)]
pub struct DistFilename {
    pub name: ProjectName,
    pub version: String,
    pub kind: DistKind,
    /// Wheels only.
    pub tags: Option<WheelTags>,
}

/// Parses a wheel or sdist filename; the error is a sentence for the uploader.
pub fn parse(filename: &str) -> Result<DistFilename, String> {
    let invalid =
        || format!("Invalid file extension: Use .tar.gz, .whl or .zip extension; `{filename}` is not a wheel or sdist");
    if let Some(stem) = filename.strip_suffix(".whl") {
        // FN-3: name-version(-build)?-python-abi-platform
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) {
            return Err(format!(
                "`{filename}` is not a valid wheel filename: expected name-version[-build]-python-abi-platform.whl"
            ));
        }
        let name = ProjectName::parse(parts[0]).map_err(|e| e.to_string())?;
        let n = parts.len();
        let tags = WheelTags {
            python: parts[n - 3].to_string(),
            abi: parts[n - 2].to_string(),
            platform: parts[n - 1].to_string(),
        };
        return Ok(DistFilename { name, version: parts[1].to_string(), kind: DistKind::Wheel, tags: Some(tags) });
    }
    let stem = filename.strip_suffix(".tar.gz").or_else(|| filename.strip_suffix(".zip")).ok_or_else(invalid)?;
    // FN-5: split at the last '-'.
    let (name, version) = stem
        .rsplit_once('-')
        .ok_or_else(|| format!("`{filename}` is not a valid sdist filename: expected name-version.tar.gz"))?;
    let name = ProjectName::parse(name).map_err(|e| e.to_string())?;
    Ok(DistFilename { name, version: version.to_string(), kind: DistKind::Sdist, tags: None })
}

/// Whether `filename` names a wheel (the one place the suffix is tested; `parse` says whether
/// it is a valid one).
pub fn is_wheel(filename: &str) -> bool {
    filename.ends_with(".whl")
}

/// The version of `filename` as a file of project `name`, read as pip reads it: a wheel's
/// second field; an sdist's name part is the page's project name (matched normalized) and the
/// rest is the version, so `lib-2.0.3-1.tar.gz` is `2.0.3-1` (2.0.3.post1), not `1` (issue 22:
/// splitting at the last dash let it slip past a version block).
pub fn version_of(name: &super::ProjectName, filename: &str) -> Option<String> {
    if is_wheel(filename) {
        return parse(filename).ok().map(|d| d.version);
    }
    let ext = SDIST_EXTENSIONS.iter().find(|e| filename.ends_with(*e))?;
    let stem = &filename[..filename.len() - ext.len()];
    stem.match_indices('-')
        .find(|(i, _)| super::ProjectName::parse(&stem[..*i]).is_ok_and(|n| &n == name))
        .map(|(i, _)| stem[i + 1..].to_string())
        .or_else(|| parse(filename).ok().map(|d| d.version))
}

const SDIST_EXTENSIONS: &[&str] =
    &[".tar.gz", ".zip", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma", ".tgz", ".tar"];

/// How many candidate projects a filename is given at most: a file miss looks at that many
/// pages, so one anonymous request cannot make Larder fetch many (issue 9).
pub const MAX_CANDIDATES: usize = 3;

/// The normalized project names a filename may belong to, most likely first, at most
/// `MAX_CANDIDATES`.
///
/// A wheel's name is its first `-` field (FN-3). An sdist is `name-version.ext`; PEP 625 names
/// split at the last `-`, legacy names like `foo-bar-1.0.tar.gz` may split earlier (FN-5), so
/// every split is offered, last first.
pub fn candidate_projects(filename: &str) -> Vec<String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        return stem.split('-').next().map(normalize).into_iter().collect();
    }
    let stem = match SDIST_EXTENSIONS.iter().find(|e| filename.ends_with(*e)) {
        Some(ext) => &filename[..filename.len() - ext.len()],
        // .egg and other legacy formats: same rule as sdists.
        None => match filename.rsplit_once('.') {
            Some((stem, _)) => stem,
            None => return Vec::new(),
        },
    };
    stem.rmatch_indices('-')
        .map(|(i, _)| normalize(&stem[..i]))
        .filter(|n| !n.is_empty())
        .take(MAX_CANDIDATES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        let w = parse("My_Pkg-1.0.0-py3-none-any.whl").unwrap();
        assert_eq!((w.name.as_str(), w.version.as_str(), w.kind), ("my-pkg", "1.0.0", DistKind::Wheel));
        let w = parse("pkg-1.0-1-cp312-cp312-manylinux_2_17_x86_64.whl").unwrap();
        assert_eq!(w.version, "1.0");
        let tags = w.tags.unwrap();
        assert_eq!(
            (tags.python.as_str(), tags.abi.as_str(), tags.platform.as_str()),
            ("cp312", "cp312", "manylinux_2_17_x86_64")
        );
        let s = parse("my_pkg-1.0.post1.tar.gz").unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str(), s.kind), ("my-pkg", "1.0.post1", DistKind::Sdist));
        assert!(parse("pkg-1.0.exe").is_err());
        assert!(parse("pkg-1.0-py3.whl").is_err());
    }

    #[test]
    fn fn_5_candidates() {
        assert_eq!(candidate_projects("My_Pkg-1.0-py3-none-any.whl"), vec!["my-pkg"]);
        assert_eq!(candidate_projects("my_pkg-1.0.tar.gz"), vec!["my-pkg"]);
        assert_eq!(candidate_projects("foo-bar-1.0.tar.gz"), vec!["foo-bar", "foo"]);
        let lib = crate::index::ProjectName::parse("lib").unwrap();
        assert_eq!(version_of(&lib, "lib-2.0.3-1.tar.gz").as_deref(), Some("2.0.3-1"));
        assert_eq!(version_of(&lib, "Lib-2.0.zip").as_deref(), Some("2.0"));
        let foo_bar = crate::index::ProjectName::parse("foo-bar").unwrap();
        assert_eq!(version_of(&foo_bar, "foo_bar-1.0.tar.gz").as_deref(), Some("1.0"));
        assert_eq!(version_of(&foo_bar, "foo-bar-1.0.tar.gz").as_deref(), Some("1.0"));
        assert_eq!(candidate_projects("Foo.Bar-1.0.zip"), vec!["foo-bar"]);
        // Bounded however many dashes a hostile name has.
        assert_eq!(candidate_projects(&format!("{}1.0.tar.gz", "a-".repeat(500))).len(), MAX_CANDIDATES);
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
