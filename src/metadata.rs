//! Core metadata: reading it out of distributions (`*.dist-info/METADATA` from wheels,
//! `PKG-INFO` from sdists; EX-1 … EX-4) and parsing its headers. Filenames are parsed in
//! `index::filename`.
//! Everything here is synchronous file work; async callers use `spawn_blocking`.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::archive::{self, ArchiveLimits};
use crate::index::name::normalize;

/// Metadata larger than this is refused (EX-4).
pub(crate) const MAX_METADATA: u64 = 16 * 1024 * 1024;

/// Two versions are equal as PEP 440 versions (`1.0` == `1.0.0`? no: `1.0` == `1.0.0` is true
/// in PEP 440, and `1.0-post1` == `1.0.post1`).
pub fn same_version(a: &str, b: &str) -> bool {
    match (pep440_rs::Version::from_str(a), pep440_rs::Version::from_str(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn is_valid_version(v: &str) -> bool {
    pep440_rs::Version::from_str(v).is_ok()
}

/// Core metadata read from a distribution: the raw bytes (served as PEP 658 `.metadata`
/// unchanged, MD-04) and the fields Larder uses.
#[derive(Debug, Clone)]
pub struct CoreMetadata {
    pub raw: Vec<u8>,
    pub metadata_version: String,
    pub name: String,
    pub version: String,
    pub requires_python: Option<String>,
    /// `Dynamic` fields (PEP 643): a wheel built from this sdist may differ in them.
    pub dynamic: Vec<String>,
}

impl CoreMetadata {
    /// May this metadata be served as PEP 658 metadata of an sdist? Only when it cannot change
    /// when the sdist is built: Metadata-Version 2.2 or later and nothing `Dynamic` (MD-05).
    pub fn is_static_sdist_metadata(&self) -> bool {
        let mut parts = self.metadata_version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (2, 2) && self.dynamic.is_empty()
    }

    /// Parses RFC 822-style headers (EX-3): up to the first blank line, with continuations.
    pub fn parse(raw: Vec<u8>) -> Result<CoreMetadata, String> {
        let fields = headers(&raw);
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let name = get("name").ok_or("the metadata has no Name field")?;
        let version = get("version").ok_or("the metadata has no Version field")?;
        Ok(CoreMetadata {
            metadata_version: get("metadata-version").unwrap_or_default(),
            name,
            version,
            requires_python: get("requires-python").filter(|s| !s.is_empty()),
            dynamic: fields.iter().filter(|(k, _)| k == "dynamic").map(|(_, v)| v.clone()).collect(),
            raw,
        })
    }
}

/// The header fields of core metadata (EX-3), names lowercased, in order: up to the first
/// blank line, continuation lines joined with `\n`.
pub fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    fields
}

/// The body of core metadata, after the headers: the description (Metadata 2.1).
pub fn description(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (_, body) = text.split_once("\n\n")?;
    let body = body.trim_end_matches('\n');
    (!body.trim().is_empty()).then(|| body.to_string())
}

/// Reads `<single top-level>.dist-info/METADATA` from a wheel (EX-1), through the zip's
/// central directory.
pub fn read_wheel_metadata(path: &Path, limits: &ArchiveLimits) -> Result<CoreMetadata, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open the wheel: {e}"))?;
    archive::check_zip(&mut file, limits)?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("Invalid distribution file: not a zip archive ({e})"))?;
    wheel_metadata_from_zip(&mut zip)
}

/// The same, from any seekable reader (also used on in-memory wheels).
pub fn wheel_metadata_from_zip<R: Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>) -> Result<CoreMetadata, String> {
    let mut dirs: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter_map(|n| n.split('/').next().map(str::to_string))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    dirs.sort();
    dirs.dedup();
    let dir = match dirs.as_slice() {
        [one] => one.clone(),
        [] => return Err("Invalid distribution file: the wheel has no .dist-info directory".into()),
        _ => return Err(format!("Invalid distribution file: the wheel has {} .dist-info directories", dirs.len())),
    };
    let member = format!("{dir}/METADATA");
    let entry =
        zip.by_name(&member).map_err(|_| format!("Wheel does not contain the required METADATA file: {member}"))?;
    if entry.size() > MAX_METADATA {
        return Err(format!("{member} is larger than {MAX_METADATA} bytes"));
    }
    let mut raw = Vec::with_capacity(entry.size() as usize);
    entry
        .take(MAX_METADATA)
        .read_to_end(&mut raw)
        .map_err(|e| format!("Invalid distribution file: cannot read {member}: {e}"))?;
    CoreMetadata::parse(raw)
}

/// Reads `<top>/PKG-INFO` from an sdist (EX-2), without extracting anything.
pub fn read_sdist_metadata(path: &Path, filename: &str, limits: &ArchiveLimits) -> Result<CoreMetadata, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open the sdist: {e}"))?;
    let is_pkg_info = |p: &str| {
        let parts: Vec<&str> = p.trim_end_matches('/').split('/').collect();
        parts.len() == 2 && parts[1] == "PKG-INFO"
    };
    if filename.ends_with(".zip") {
        archive::check_zip(&mut file, limits)?;
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| format!("Invalid distribution file: not a zip archive ({e})"))?;
        let name = zip
            .file_names()
            .filter_map(Result::ok)
            .find(|n| is_pkg_info(n))
            .map(|n| n.into_owned())
            .ok_or("Invalid distribution file: the sdist has no PKG-INFO")?;
        let mut raw = Vec::new();
        zip.by_name(&name)
            .map_err(|e| e.to_string())?
            .take(MAX_METADATA)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
        return CoreMetadata::parse(raw);
    }
    match archive::tar_member(flate2::read::GzDecoder::new(file), limits, is_pkg_info, MAX_METADATA) {
        Ok(Some(raw)) => CoreMetadata::parse(raw),
        Ok(None) => Err("Invalid distribution file: the sdist has no PKG-INFO".into()),
        Err(e) => Err(format!("Invalid distribution file: {e}")),
    }
}

/// EX-1 step 3: the dist-info prefix must belong to the project (checked by the caller through
/// the METADATA name, which is stricter).
pub fn names_match(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(same_version("1.0", "1.0.0"));
        assert!(same_version("1.0-post1", "1.0.post1"));
        assert!(!same_version("1.0", "1.1"));
    }

    #[test]
    fn metadata_headers() {
        let md = CoreMetadata::parse(
            b"Metadata-Version: 2.1\nName: My.Pkg\nVersion: 1.0\nRequires-Python: >=3.9\nSummary: a\n  b\n\nBody: no"
                .to_vec(),
        )
        .unwrap();
        assert_eq!(md.name, "My.Pkg");
        assert_eq!(md.requires_python.as_deref(), Some(">=3.9"));
        assert!(CoreMetadata::parse(b"Version: 1\n".to_vec()).is_err());
        assert!(!md.is_static_sdist_metadata(), "2.1 is too old for sdist metadata");
        let md = CoreMetadata::parse(b"Metadata-Version: 2.4\nName: a\nVersion: 1\n".to_vec()).unwrap();
        assert!(md.is_static_sdist_metadata());
        let md = CoreMetadata::parse(b"Metadata-Version: 2.4\nName: a\nVersion: 1\nDynamic: Requires-Dist\n".to_vec())
            .unwrap();
        assert!(!md.is_static_sdist_metadata());
    }
}
