//! One call answers a file read: `Cache::read_file` decides whether the bytes come from the
//! store, from a download under way, or from the upstream passed through (a HEAD or a small
//! Range of a file Larder does not have: issue 11), and hands the HTTP layer a `FileReply`
//! that needs no further engine call.

use std::sync::Arc;

use bytes::Bytes;

use super::files::{FileAnswer, Want};
use super::fill::{Fill, FillState, MAX_PASSTHROUGH_RANGE};
use super::{Cache, Error, Outcome, Reader};
use crate::byte_range::{ByteRange, RangeHeader};
use crate::index::FileKey;
use crate::store::{Blob, ByteStream};
use crate::upstream::Upstream;

/// A read of `files/<key>/<filename>` or its `.metadata`, as the client put it.
pub struct FileRead<'a> {
    pub key: &'a FileKey,
    /// The distribution's filename (without `.metadata`).
    pub dist_name: &'a str,
    /// `.metadata`: the file's PEP 658 core metadata.
    pub metadata: bool,
    pub head: bool,
    /// The client's `Range`.
    pub range: RangeHeader,
    /// If-None-Match was sent: a HEAD on a download under way waits for the stored file.
    pub if_none_match: bool,
    pub if_modified_since: bool,
    /// If-Range was sent: a Range on a download under way waits for the stored file.
    pub if_range: bool,
}

/// What to send for a file read.
pub struct FileReply {
    /// The hash the bytes have (the ETag), when known.
    pub sha256: Option<String>,
    /// The file's upload time (`Last-Modified`, HDR-2), when known.
    pub modified: Option<u64>,
    pub outcome: Outcome,
    pub body: FileBody,
}

pub enum FileBody {
    /// The stored file: the HTTP layer applies validators, Range and HEAD to it.
    Stored(Blob),
    /// Headers only (HEAD) of a file not stored: its length.
    Length(u64),
    /// One range of a file not stored, or of one still downloading.
    Part { start: u64, end: u64, total: u64, bytes: Bytes },
    /// The range starts past the end of the file.
    Unsatisfiable { total: u64 },
    /// The whole file as it downloads; `total` when the upstream or the page stated it.
    Streaming { stream: ByteStream, total: Option<u64> },
}

impl FileRead<'_> {
    /// Validators were sent: a miss is answered from the whole file, which knows them.
    fn conditional(&self) -> bool {
        self.if_none_match || self.if_modified_since || self.if_range
    }
}

impl FileReply {
    fn miss(sha256: Option<String>, modified: Option<u64>, body: FileBody) -> FileReply {
        FileReply { sha256, modified, outcome: Outcome::Miss, body }
    }
}

impl Cache {
    /// `files/<key>/<dist_name>[.metadata]`: what may be served (`file`, `metadata` decide)
    /// and where its bytes come from.
    pub async fn read_file(&self, reader: &Reader, read: &FileRead<'_>) -> Result<FileReply, Error> {
        // A Range or HEAD on a miss is answered from the upstream without downloading the
        // whole file (issue 11: a resolver wants a wheel's tail, not the wheel).
        let want = match !read.metadata && !read.conditional() && (read.head || read.range.is_present()) {
            true => Want::Part,
            false => Want::Whole,
        };
        let mut answer = match read.metadata {
            true => self.metadata(reader, read.key, read.dist_name).await?,
            false => self.file(reader, read.key, read.dist_name, want).await?,
        };
        if let FileAnswer::Upstream { url, sha256, size, upstream } = &answer {
            if let Some(body) = self.pass_through(upstream, url, *size, read).await? {
                return Ok(FileReply::miss(sha256.clone(), None, body));
            }
            // Not answerable by a passed-through range: download the file, as for a whole GET.
            answer = self.file(reader, read.key, read.dist_name, Want::Whole).await?;
        }
        match answer {
            FileAnswer::Stored { blob, sha256, outcome, modified } => {
                Ok(FileReply { sha256: Some(sha256), modified, outcome, body: FileBody::Stored(blob) })
            }
            FileAnswer::Filling { fill, sha256, modified } => self.read_fill(fill, sha256, modified, read).await,
            FileAnswer::Upstream { .. } => Err(Error::Internal("a whole-file read was not downloaded".into())),
        }
    }

    /// HEAD or one Range of a file Larder does not have, from the upstream: the length by one
    /// HEAD (unless the page lists it), the bytes by one Range request, both coalesced and
    /// never stored. `None` when this cannot answer it (no usable single range, a range over
    /// `MAX_PASSTHROUGH_RANGE`, or an upstream without range support): download it instead.
    async fn pass_through(
        &self,
        upstream: &Upstream,
        url: &str,
        size: Option<u64>,
        read: &FileRead<'_>,
    ) -> Result<Option<FileBody>, Error> {
        let fills = self.fills()?;
        // No range support, or an answer that does not fit: the whole file it is.
        let not_here =
            |e: &Arc<super::fill::Error>| matches!(&**e, super::fill::Error::Upstream(u) if !u.is_transient());
        let total = match size {
            Some(n) => n,
            None => match fills.upstream_len(upstream, url).await {
                Ok(n) => n,
                Err(e) if not_here(&e) => return Ok(None),
                Err(e) => return Err(Error::Fill(e)),
            },
        };
        if read.head {
            return Ok(Some(FileBody::Length(total)));
        }
        let (start, end) = match read.range.single().map(|r| r.resolve(total)) {
            Some(ByteRange::Part(start, end)) if end - start < MAX_PASSTHROUGH_RANGE => (start, end),
            Some(ByteRange::Unsatisfiable) => return Ok(Some(FileBody::Unsatisfiable { total })),
            _ => return Ok(None),
        };
        match fills.upstream_range(upstream, url, start, end).await {
            Ok(bytes) => Ok(Some(FileBody::Part { start, end, total, bytes })),
            Err(e) if not_here(&e) => Ok(None),
            Err(e) => Err(Error::Fill(e)),
        }
    }

    /// A download under way: its headers or one small range as soon as it has them (a HEAD,
    /// a resolver's Range), the whole file streamed from the spool, else the stored file once
    /// it is done (other ranges need the whole verified file: UP-11).
    async fn read_fill(
        &self,
        fill: Arc<Fill>,
        sha256: Option<String>,
        modified: Option<u64>,
        read: &FileRead<'_>,
    ) -> Result<FileReply, Error> {
        let total = match fill.started().await {
            FillState::Failed(e) => return Err(Error::Fill(e)),
            FillState::Streaming { total, .. } => total,
            _ => None,
        };
        // HEAD needs only the length upstream announced and the hash the page names (pip's
        // lazy wheel and uv send HEAD first). The download goes on meanwhile.
        if read.head
            && !read.if_none_match
            && let (Some(total), Some(_)) = (total, &sha256)
        {
            return Ok(FileReply::miss(sha256, modified, FileBody::Length(total)));
        }
        if !read.head
            && !read.if_range
            && let (Some(total), Some(range)) = (total, read.range.single())
            && let ByteRange::Part(start, end) = range.resolve(total)
            && end - start < MAX_PASSTHROUGH_RANGE
            && let Some(bytes) = fill.range(start, end).await
        {
            return Ok(FileReply::miss(sha256, modified, FileBody::Part { start, end, total, bytes }));
        }
        let wants_whole = read.head || read.range.is_present();
        if !wants_whole && let Some(stream) = fill.stream().await {
            return Ok(FileReply::miss(sha256, modified, FileBody::Streaming { stream, total }));
        }
        match fill.finished().await {
            FillState::Done { sha256, .. } => {
                let blob = self.stored(&sha256).await?.ok_or_else(|| {
                    Error::Internal(format!("the stored file {sha256} vanished right after it was written"))
                })?;
                Ok(FileReply::miss(Some(sha256), modified, FileBody::Stored(blob)))
            }
            FillState::Failed(e) | FillState::Unstored { error: e, .. } => Err(Error::Fill(e)),
            _ => Err(Error::Incomplete("the download ended without a result; retry".into())),
        }
    }
}
