//! Reading a remote wheel's METADATA with HTTP range requests: the zip's end record and central
//! directory from the file's tail, then that one member, never the whole wheel (issue 6). The
//! member's CRC-32 from the central directory checks the bytes.
//!
//! Suffix ranges (`bytes=-N`) are not used: some file hosts do not support them (UP-11).

use std::io::Read;

use bytes::Bytes;
use reqwest::{StatusCode, header};

use super::{Error, Upstream, guard::redact};

/// How much of the tail to fetch first: enough for the central directory of most wheels.
const TAIL: u64 = 32 * 1024;
const MAX_METADATA: u64 = 16 * 1024 * 1024;
/// A wheel's central directory larger than this is not read by ranges (the whole-file path
/// still works): ~100,000 members.
const MAX_CENTRAL_DIRECTORY: u64 = 16 * 1024 * 1024;

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::BadPage { url: redact(url), reason: reason.into() }
}

fn u16_at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}

fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as u64
}

/// Sends one Range request; anything but a 206 is an error (the body of a 200 is never read).
async fn send_range(up: &Upstream, url: &str, range: &str) -> Result<reqwest::Response, Error> {
    let started = std::time::Instant::now();
    let resp = up
        .get(&up.files, url)?
        .header(header::RANGE, range)
        .header(header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .map_err(|e| Error::from_reqwest(url, e))?;
    super::record(&up.name, "range", started);
    let resp = up.pause_if_asked(url, resp)?;
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Err(bad(url, format!("no range support (answered {} to a Range request)", resp.status())));
    }
    Ok(resp)
}

/// One `bytes=start-end` request (inclusive); anything but a matching 206 is an error, and the
/// body of a 200 is never read.
pub(super) async fn get_range(up: &Upstream, url: &str, start: u64, end: u64) -> Result<Bytes, Error> {
    if end < start {
        return Err(bad(url, "an empty byte range"));
    }
    let resp = send_range(up, url, &format!("bytes={start}-{end}")).await?;
    // Never more than asked for: a hostile upstream's 206 is read in pieces, up to the range.
    let want = end - start + 1;
    if resp.content_length().is_some_and(|n| n != want) {
        return Err(bad(url, "a range answer of the wrong length"));
    }
    read_range_body(resp, want, url).await
}

/// A 206's body of exactly `want` bytes, read in pieces: never more than asked for.
async fn read_range_body(mut resp: reqwest::Response, want: u64, url: &str) -> Result<Bytes, Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::from_reqwest(url, e))? {
        if (body.len() + chunk.len()) as u64 > want {
            return Err(bad(url, "a range answer longer than the range"));
        }
        body.extend_from_slice(&chunk);
    }
    if body.len() as u64 != want {
        return Err(bad(url, "a range answer of the wrong length"));
    }
    Ok(body.freeze())
}

/// The last `n` bytes of a file and the file's size, by one suffix range (`bytes=-n`): no HEAD
/// round trip first when the page does not list the size. Anything but a 206 with a matching
/// `Content-Range` is an error.
async fn get_suffix(up: &Upstream, url: &str, n: u64) -> Result<(Bytes, u64), Error> {
    let resp = send_range(up, url, &format!("bytes=-{n}")).await?;
    // `bytes <start>-<end>/<size>`
    let (start, end, size) = resp
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (range, size) = v.split_once('/')?;
            let (a, b) = range.split_once('-')?;
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?, size.trim().parse::<u64>().ok()?))
        })
        .ok_or_else(|| bad(url, "a suffix range answer without a usable Content-Range"))?;
    if end + 1 != size || start > end || end - start + 1 > n {
        return Err(bad(url, "a suffix range answer for the wrong bytes"));
    }
    Ok((read_range_body(resp, end - start + 1, url).await?, size))
}

/// The file's size: from the page when known, else from a HEAD request.
pub(super) async fn file_size(up: &Upstream, url: &str) -> Result<u64, Error> {
    let resp =
        up.request(&up.files, reqwest::Method::HEAD, url)?.send().await.map_err(|e| Error::from_reqwest(url, e))?;
    let resp = up.pause_if_asked(url, resp)?;
    if !resp.status().is_success() {
        return Err(Error::Status { url: redact(url), status: resp.status() });
    }
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(url, "no Content-Length on HEAD"))
}

pub(crate) struct Member {
    method: usize,
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
    local_header: u64,
}

/// Finds the single `*.dist-info/METADATA` in a central directory.
pub(crate) fn find_metadata(cd: &[u8], url: &str) -> Result<Member, Error> {
    let mut i = 0;
    let mut dist_infos = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    while i + 46 <= cd.len() && u32_at(cd, i) == 0x0201_4b50 {
        let (n, e, c) = (u16_at(cd, i + 28), u16_at(cd, i + 30), u16_at(cd, i + 32));
        let Some(name) = cd.get(i + 46..i + 46 + n) else { break };
        let name = String::from_utf8_lossy(name);
        if let Some(top) = name.split('/').next().filter(|t| t.ends_with(".dist-info")) {
            dist_infos.insert(top.to_string());
            if name == format!("{top}/METADATA") {
                found.push(Member {
                    method: u16_at(cd, i + 10),
                    crc32: u32_at(cd, i + 16) as u32,
                    compressed: u32_at(cd, i + 20),
                    uncompressed: u32_at(cd, i + 24),
                    local_header: u32_at(cd, i + 42),
                });
            }
        }
        i += 46 + n + e + c;
    }
    if dist_infos.len() != 1 || found.len() != 1 {
        return Err(bad(
            url,
            format!("{} .dist-info directories; expected exactly one with a METADATA", dist_infos.len()),
        ));
    }
    Ok(found.pop().expect("checked"))
}

/// Reads the METADATA of the wheel at `url` with range requests only.
/// Usually one request (the tail holds the central directory and, in most wheels, METADATA
/// itself, written near the end), at most three.
pub async fn fetch_wheel_metadata(up: &Upstream, url: &str, size: Option<u64>) -> Result<Vec<u8>, Error> {
    let (tail, size) = match size {
        Some(size) if size < 22 => return Err(bad(url, "too small to be a zip")),
        Some(size) => (get_range(up, url, size.saturating_sub(TAIL), size - 1).await?, size),
        // Some file hosts serve explicit ranges only: then the size by HEAD, and the tail.
        None => match get_suffix(up, url, TAIL).await {
            Ok(found) => found,
            Err(_) => {
                let size = file_size(up, url).await?;
                if size < 22 {
                    return Err(bad(url, "too small to be a zip"));
                }
                (get_range(up, url, size.saturating_sub(TAIL), size - 1).await?, size)
            }
        },
    };
    if size < 22 || tail.len() < 22 {
        return Err(bad(url, "too small to be a zip"));
    }
    let tail_start = size - tail.len() as u64;
    let eocd = (0..=tail.len() - 22)
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| bad(url, "no zip end record in the last 64 KiB"))?;
    let (cd_size, cd_offset) = (u32_at(&tail, eocd + 12), u32_at(&tail, eocd + 16));
    if cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF || cd_size == 0 || cd_offset + cd_size > size {
        return Err(bad(url, "zip64 or a broken end record"));
    }
    if cd_size > MAX_CENTRAL_DIRECTORY {
        return Err(bad(url, "the central directory is too large"));
    }
    let cd: Bytes = if cd_offset >= tail_start {
        let from = (cd_offset - tail_start) as usize;
        tail.slice(from..from + cd_size as usize)
    } else {
        get_range(up, url, cd_offset, cd_offset + cd_size - 1).await?
    };
    let member = find_metadata(&cd, url)?;
    if member.uncompressed > MAX_METADATA || member.compressed > MAX_METADATA {
        return Err(bad(url, "METADATA is too large"));
    }
    // The local header's extra field may differ from the central one; fetch some slack.
    let slack = 30 + 1024 + 1024;
    if member.local_header >= size {
        return Err(bad(url, "the central directory points past the end of the file"));
    }
    let end = (member.local_header + slack + member.compressed).min(size) - 1;
    // Already in the tail (most wheels): no request at all.
    let local = if member.local_header >= tail_start {
        tail.slice((member.local_header - tail_start) as usize..)
    } else {
        get_range(up, url, member.local_header, end).await?
    };
    if local.len() < 30 || u32_at(&local, 0) != 0x0403_4b50 {
        return Err(bad(url, "no local file header where the central directory points"));
    }
    let data_start = 30 + u16_at(&local, 26) + u16_at(&local, 28);
    let data = local
        .get(data_start..data_start + member.compressed as usize)
        .ok_or_else(|| bad(url, "the local header's extra field is larger than expected"))?;
    let raw = match member.method {
        0 => data.to_vec(),
        8 => {
            let mut out = Vec::with_capacity(member.uncompressed as usize);
            flate2::read::DeflateDecoder::new(data)
                .take(MAX_METADATA)
                .read_to_end(&mut out)
                .map_err(|e| bad(url, format!("METADATA does not inflate: {e}")))?;
            out
        }
        m => return Err(bad(url, format!("unsupported zip compression method {m}"))),
    };
    if crc32fast::hash(&raw) != member.crc32 {
        return Err(bad(url, "METADATA fails its CRC-32 check"));
    }
    Ok(raw)
}
