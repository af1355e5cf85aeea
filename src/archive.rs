//! Bounded reading of archives that come from outside: uploaded sdists (tar.gz, zip) and wheels,
//! and upstream wheels. Every read is capped, so that one crafted file cannot exhaust memory or
//! hold a thread for long (issue 9):
//! - tar header records (GNU long names, pax extensions) are read only up to
//!   `MAX_HEADER_RECORD`; the `tar` crate alone would read whatever size they declare;
//! - the number of members, and the bytes decompressed while looking for one, are bounded;
//! - a zip's central directory is sized from its end record *before* the zip crate reads it.

use std::io::{Read, Seek, SeekFrom};

/// The archive limits an operator can tune (`max_archive_members`, `max_archive_unpacked`).
#[derive(Clone, Copy, Debug)]
pub struct ArchiveLimits {
    /// Members (tar entries, zip central-directory entries) in one archive.
    pub max_members: u64,
    /// Bytes decompressed while looking for a member of a tar.gz.
    pub max_unpacked: u64,
}

impl Default for ArchiveLimits {
    fn default() -> ArchiveLimits {
        ArchiveLimits { max_members: 100_000, max_unpacked: 4 << 30 }
    }
}

/// A GNU long name or a pax record longer than this is refused: paths are at most 4 KiB on
/// Linux, and no real archive needs more than a few records per member.
pub const MAX_HEADER_RECORD: u64 = 64 * 1024;

/// Central-directory bytes allowed per member (name, extra field and comment included).
const CD_BYTES_PER_MEMBER: u64 = 1024;

/// A reader that fails once more than `left` bytes were read through it.
struct Budget<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "the archive unpacks to more than {} bytes before the member is found (max_archive_unpacked)",
                self.limit
            ))
        })?;
        Ok(n)
    }
}

/// Finds the first regular-file member whose path `wanted` accepts in a tar stream, and reads
/// it (at most `max_member` bytes). `Ok(None)` when there is none.
pub fn tar_member(
    reader: impl Read,
    limits: &ArchiveLimits,
    wanted: impl Fn(&str) -> bool,
    max_member: u64,
) -> Result<Option<Vec<u8>>, String> {
    let budget = Budget { inner: reader, left: limits.max_unpacked, limit: limits.max_unpacked };
    let mut archive = tar::Archive::new(budget);
    // Raw: header records are handled here, with a bound, not read whole by the tar crate.
    let entries = archive.entries().map_err(|e| format!("not a tar archive ({e})"))?.raw(true);
    let (mut long_name, mut pax_path): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    for (n, entry) in entries.enumerate() {
        if n as u64 >= limits.max_members {
            return Err(format!("the archive has more than {} members (max_archive_members)", limits.max_members));
        }
        let mut entry = entry.map_err(|e| format!("broken tar archive ({e})"))?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(|e| format!("broken tar header ({e})"))?;
        if kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            if size > MAX_HEADER_RECORD {
                return Err(format!(
                    "a tar header record declares {size} bytes; at most {MAX_HEADER_RECORD} are accepted"
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry).take(MAX_HEADER_RECORD).read_to_end(&mut data).map_err(|e| e.to_string())?;
            if kind.is_gnu_longname() {
                long_name = Some(data.split(|&b| b == 0).next().unwrap_or_default().to_vec());
            } else if kind.is_pax_local_extensions() {
                pax_path = pax_record(&data, "path");
            }
            continue;
        }
        let path = pax_path.take().or(long_name.take()).unwrap_or_else(|| entry.path_bytes().into_owned());
        if kind.is_file() && wanted(&String::from_utf8_lossy(&path)) {
            if size > max_member {
                return Err(format!("the member is {size} bytes; at most {max_member} are accepted"));
            }
            let mut out = Vec::with_capacity(size as usize);
            entry.take(max_member).read_to_end(&mut out).map_err(|e| e.to_string())?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// The value of `key` in pax extended-header records (`<len> <key>=<value>\n`).
fn pax_record(mut data: &[u8], key: &str) -> Option<Vec<u8>> {
    let mut found = None;
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space || len > data.len() {
            return None;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(key.as_bytes()).and_then(|r| r.strip_prefix(b"=")) {
            found = Some(value.to_vec());
        }
        data = &data[len..];
    }
    found
}

/// Checks a zip's end record before the zip crate reads the central directory into memory:
/// at most `max_members` entries and a directory of a plausible size. Files without an end
/// record are left for the zip crate to refuse.
pub fn check_zip<R: Read + Seek>(file: &mut R, limits: &ArchiveLimits) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot read the archive: {e}");
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let tail_len = len.min(22 + 65535);
    file.seek(SeekFrom::Start(len - tail_len)).map_err(io)?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail).map_err(io)?;
    file.rewind().map_err(io)?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as u64;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    // Every end record in the tail is checked, not only the last: a zip reader that skips a
    // broken one reads an earlier one (found in review).
    let ends: Vec<usize> =
        (0..tail.len().saturating_sub(21)).rev().filter(|&i| u32_at(&tail, i) == 0x0605_4b50).collect();
    for eocd in ends {
        let (mut members, mut cd_size) = (u16_at(&tail, eocd + 10), u32_at(&tail, eocd + 12));
        if (members == 0xFFFF || cd_size == 0xFFFF_FFFF) && eocd >= 20 && u32_at(&tail, eocd - 20) == 0x0706_4b50 {
            // Zip64: the real counts are in the zip64 end record the locator points to.
            let at = u64_at(&tail, eocd - 20 + 8);
            if at.checked_add(56).is_none_or(|end| end > len) {
                return Err("Invalid distribution file: a broken zip64 end record".into());
            }
            let mut record = [0u8; 56];
            file.seek(SeekFrom::Start(at)).map_err(io)?;
            file.read_exact(&mut record).map_err(io)?;
            file.rewind().map_err(io)?;
            if u32_at(&record, 0) != 0x0606_4b50 {
                return Err("Invalid distribution file: a broken zip64 end record".into());
            }
            (members, cd_size) = (u64_at(&record, 32), u64_at(&record, 40));
        }
        if members > limits.max_members {
            return Err(format!(
                "the archive has {members} members; at most {} are accepted (max_archive_members)",
                limits.max_members
            ));
        }
        if cd_size > len || cd_size > limits.max_members.saturating_mul(CD_BYTES_PER_MEMBER) {
            return Err(format!(
                "the archive's central directory declares {cd_size} bytes, more than its members need"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn targz(build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        build(&mut tar);
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn file(tar: &mut tar::Builder<impl Write>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, path, data).unwrap();
    }

    fn pkg_info(p: &str) -> bool {
        p.ends_with("/PKG-INFO")
    }

    #[test]
    fn finds_members_behind_long_names_and_pax_records() {
        let long_dir = "d".repeat(150);
        let gz = targz(|t| {
            file(t, &format!("{long_dir}/x.py"), b"x"); // a GNU long name
            file(t, "pkg-1.0/PKG-INFO", b"Name: pkg");
        });
        let found = tar_member(flate2::read::GzDecoder::new(&gz[..]), &ArchiveLimits::default(), pkg_info, 1024);
        assert_eq!(found.unwrap().unwrap(), b"Name: pkg");
        let gz = targz(|t| {
            let mut h = tar::Header::new_ustar();
            h.set_size(9);
            h.set_mode(0o644);
            t.append_pax_extensions([("path", b"pkg-1.0/PKG-INFO".as_slice())]).unwrap();
            t.append_data(&mut h, "short-name", &b"Name: pax"[..]).unwrap();
        });
        let found = tar_member(flate2::read::GzDecoder::new(&gz[..]), &ArchiveLimits::default(), pkg_info, 1024);
        assert_eq!(found.unwrap().unwrap(), b"Name: pax", "the pax path is the member's path");
    }

    #[test]
    fn a_long_name_record_declaring_gigabytes_is_refused_without_reading_it() {
        // The review's attack: an 'L' record of 16 GiB (here it is announced, then cut short).
        let mut raw = Vec::new();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(16 << 30);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        raw.extend_from_slice(h.as_bytes());
        raw.extend(std::iter::repeat_n(0u8, 1 << 20));
        let err = tar_member(&raw[..], &ArchiveLimits::default(), pkg_info, 1024).unwrap_err();
        assert!(err.contains("at most 65536"), "{err}");
    }

    #[test]
    fn members_and_unpacked_bytes_are_bounded() {
        let gz = targz(|t| {
            for i in 0..20 {
                file(t, &format!("pkg/f{i}"), &[0u8; 1000]);
            }
        });
        let few = ArchiveLimits { max_members: 10, max_unpacked: u64::MAX };
        let err = tar_member(flate2::read::GzDecoder::new(&gz[..]), &few, pkg_info, 1024).unwrap_err();
        assert!(err.contains("max_archive_members"), "{err}");
        let small = ArchiveLimits { max_members: 1000, max_unpacked: 8 * 1024 };
        let err = tar_member(flate2::read::GzDecoder::new(&gz[..]), &small, pkg_info, 1024).unwrap_err();
        assert!(err.contains("max_archive_unpacked"), "{err}");
    }

    #[test]
    fn zip_end_records_are_checked_before_the_directory_is_read() {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            for i in 0..20 {
                zip.start_file(format!("f{i}"), zip::write::SimpleFileOptions::default()).unwrap();
            }
            zip.finish().unwrap();
        }
        let bytes = buf.into_inner();
        assert!(check_zip(&mut Cursor::new(&bytes), &ArchiveLimits::default()).is_ok());
        let few = ArchiveLimits { max_members: 10, max_unpacked: u64::MAX };
        assert!(check_zip(&mut Cursor::new(&bytes), &few).unwrap_err().contains("20 members"));
        // An end record that claims a directory far larger than the file.
        let mut lying = bytes.clone();
        let eocd = lying.len() - 22;
        lying[eocd + 12..eocd + 16].copy_from_slice(&u32::MAX.to_le_bytes()[..]);
        lying[eocd + 12] = 0xfe;
        assert!(check_zip(&mut Cursor::new(&lying), &ArchiveLimits::default()).is_err());
        assert!(check_zip(&mut Cursor::new(b"not a zip"), &ArchiveLimits::default()).is_ok(), "left to the zip crate");
    }
}
