//! Files and their PEP 658 metadata: what `files/<key>/<filename>` answers.
//!
//! The file route serves only what a page visible to the reader lists (issue 9): the private
//! page of a claimed name, else an upstream page Larder has (no upstream request on a hit).
//! A blob no visible page lists (a record's contents, a refused upload, another project's
//! private file) is not found, even by its hash. A miss finds the file on its project's page
//! and joins the one download of it (`fill`).
//!
//! `Cache::read_file` is the one call a file request makes: it decides whether the bytes come
//! from the store, from a download under way, or from the upstream passed through (a HEAD or a
//! small Range of a file Larder does not have: issue 11), and hands the HTTP layer a
//! `FileReply` that needs no further engine call.

use std::sync::Arc;

use bytes::Bytes;

use super::fill::{Fill, FillRequest, FillState, MAX_PASSTHROUGH_RANGE};
use super::private::Visibility;
use super::records::{self, RecordKey};
use super::scope_policy::Source;
use super::{Cache, Error, Outcome, Reader};
use crate::byte_range::{ByteRange, RangeHeader};
use crate::index::{DistFile, FileKey, PageModel, ProjectName};
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

/// Where a file's bytes come from.
enum FileAnswer {
    /// In the store.
    Stored { blob: Blob, sha256: String, outcome: Outcome, modified: Option<u64> },
    /// Being downloaded: stream it from the fill, or wait for it. `sha256` is the hash the page
    /// lists, when it lists one.
    Filling { fill: Arc<Fill>, sha256: Option<String>, modified: Option<u64> },
    /// Not stored and not being downloaded, for a request that wants part of it (Range, or
    /// HEAD): answer from the upstream without starting a download (issue 11).
    Upstream { url: String, sha256: Option<String>, size: Option<u64>, upstream: Box<Upstream> },
}

/// What a file request wants: the whole file (a download starts on a miss), or a part of it
/// or its headers (a resolver reading a wheel's tail: nothing is downloaded for that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Whole,
    Part,
}

fn uploaded(file: &DistFile) -> Option<u64> {
    file.upload_time.as_deref().and_then(crate::index::parse_upload_time)
}

fn not_listed(dist_name: &str, key: &FileKey) -> Error {
    Error::NotFound(format!("`{dist_name}` with key `{key}` is not listed on its project's page"))
}

impl Cache {
    /// A stored blob (from the hot-file memory when small), or `None`; every use counts for the
    /// size limit's recency (the store counts its own reads).
    pub(super) async fn stored(&self, sha: &str) -> Result<Option<Blob>, Error> {
        if self.bounded.is_record_content(sha) {
            return Ok(None); // the store's own records are never files, whatever a page says
        }
        if let Some(bytes) = self.hot_files.get(sha).await {
            self.bounded.touch(sha, bytes.len() as u64);
            return Ok(Some(Blob::in_memory(bytes)));
        }
        let Some(blob) = self.store.open_blob(sha).await? else { return Ok(None) };
        if let Some(bytes) = blob.bytes() {
            self.hot_files.insert(sha.to_string(), bytes.clone()).await;
        }
        Ok(Some(blob))
    }

    /// `modified`: the upload time of the file it is (its `Last-Modified`, HDR-2).
    async fn answer_stored(
        &self,
        sha: &str,
        outcome: Outcome,
        modified: Option<u64>,
    ) -> Result<Option<FileAnswer>, Error> {
        Ok(self.stored(sha).await?.map(|blob| FileAnswer::Stored { blob, sha256: sha.to_string(), outcome, modified }))
    }

    /// Replicas (issue 13): the records of the names `dist_name` may belong to are checked
    /// against the shared store first, so a claim, yank or delete made elsewhere counts. `strict`:
    /// within `replica_lag` (pages' freshness); else within `replica_file_lag`, for answers
    /// this replica can give from what it knows (a "not found" is then checked strictly: a file
    /// uploaded through another replica a moment ago must download here, behind a balancer).
    /// `Err`: a name the store could not be asked about (fail closed).
    pub(super) async fn refresh_claims(
        &self,
        projects: &[String],
        dist_name: &str,
        strict: bool,
    ) -> Result<(), super::private::Unchecked> {
        if !self.private.is_shared() {
            return Ok(());
        }
        let names: Vec<ProjectName> = crate::index::filename::candidate_projects(dist_name)
            .iter()
            .filter_map(|n| ProjectName::parse(n).ok())
            .collect();
        let lag = if strict { self.config.replica_lag } else { self.config.replica_file_lag };
        self.private.refresh(projects, &names, lag).await
    }

    /// Whether a "not found" given under the file lag must be checked again strictly.
    fn recheck(&self, answer: &Result<FileAnswer, Error>) -> bool {
        self.private.is_shared()
            && self.config.replica_file_lag > self.config.replica_lag
            && matches!(answer, Err(Error::NotFound(_)))
    }

    /// The claimed name and private page `dist_name` belongs to, when it is claimed here.
    fn claimed(&self, reader: &Reader, dist_name: &str) -> Option<(ProjectName, Arc<PageModel>)> {
        self.private.claimed_by_file(&reader.projects, dist_name)
    }

    /// An upstream file `reader` may have: its project not blocked, its upstream one the scope
    /// uses, the file itself neither blocked nor held back.
    /// `resolved_sha`: the sha256 a `u-` key resolved to, for a file its page lists without one.
    pub(super) fn check_upstream_file(
        &self,
        reader: &Reader,
        name: &ProjectName,
        file: &DistFile,
        resolved_sha: Option<&str>,
    ) -> Result<(), Error> {
        self.check_project(name)?;
        let owner = self.owner_for(reader, name)?;
        let owner = owner.as_deref().unwrap_or(crate::upstream::routes::DEFAULT);
        self.check_file(reader, name, file, resolved_sha, Source::Upstream(owner))
    }

    /// `check_upstream_file` for a file a stored page lists: the page's model is read only
    /// when a rule needs the file's entry (the hit path with no rules reads none).
    /// `Ok(false)`: the model could not be read; the caller takes the miss path.
    async fn check_listed(
        &self,
        reader: &Reader,
        name: &ProjectName,
        key: &FileKey,
        dist_name: &str,
        sha: &str,
    ) -> Result<bool, Error> {
        self.check_project(name)?;
        let owner = self.owner_for(reader, name)?;
        let owner = owner.as_deref().unwrap_or(crate::upstream::routes::DEFAULT);
        if self.blocks.is_empty()
            && !self.refuses_unhashed()
            && self.config.rules.cooldown(&reader.rules, owner, name).is_none()
        {
            return Ok(true);
        }
        let Some(model) = self.pages.stored_model(name).await else {
            self.pages.forget(name).await;
            return Ok(false);
        };
        let file = model.file(key).filter(|f| f.filename == dist_name).ok_or_else(|| not_listed(dist_name, key))?;
        self.check_file(reader, name, file, Some(sha), Source::Upstream(owner)).map(|()| true)
    }

    /// `check_upstream_file`, and the client of the upstream to fetch it from.
    pub(super) fn allow_upstream_file(
        &self,
        reader: &Reader,
        name: &ProjectName,
        file: &DistFile,
    ) -> Result<Upstream, Error> {
        self.check_upstream_file(reader, name, file, None)?;
        self.upstreams.client(name).cloned().ok_or_else(|| {
            let why = if self.config.offline { "Larder is offline" } else { "no upstream is configured for it" };
            Error::NotFound(format!("{why}, and `{}` is not in the cache", file.filename))
        })
    }

    /// Is `sha` another project's private file? Replicas also ask the store about a blob this
    /// one has not seen before (another replica's upload since the last listing, issue 22).
    async fn hidden(&self, reader: &Reader, sha: &str) -> Result<bool, Error> {
        Ok(matches!(self.private.visibility_checked(sha, &reader.projects).await?, Visibility::Hidden))
    }

    /// A stored blob `reader` may see: never another project's private file.
    pub async fn stored_for(&self, reader: &Reader, sha: &str) -> Result<Option<Blob>, Error> {
        if self.hidden(reader, sha).await? {
            return Ok(None);
        }
        self.stored(sha).await
    }

    /// `files/<key>/<dist_name>`.
    async fn file(&self, reader: &Reader, key: &FileKey, dist_name: &str, want: Want) -> Result<FileAnswer, Error> {
        self.refresh_claims_for(reader, dist_name, false).await?;
        let answer = self.file_as_known(reader, key, dist_name, want).await;
        if !self.recheck(&answer) {
            return answer;
        }
        self.refresh_claims_for(reader, dist_name, true).await?;
        self.file_as_known(reader, key, dist_name, want).await
    }

    /// `refresh_claims` for a read: when the store does not answer, a file claimed here is
    /// still served from its record (a sibling name the filename might belong to, `my` for
    /// `my-pkg-1.0.tar.gz`, must not make a claimed file 503); anything else fails closed.
    async fn refresh_claims_for(&self, reader: &Reader, dist_name: &str, strict: bool) -> Result<(), Error> {
        match self.refresh_claims(&reader.projects, dist_name, strict).await {
            Err(_) if self.claimed(reader, dist_name).is_some() => Ok(()),
            other => Ok(other?),
        }
    }

    async fn file_as_known(
        &self,
        reader: &Reader,
        key: &FileKey,
        dist_name: &str,
        want: Want,
    ) -> Result<FileAnswer, Error> {
        // DC-2: a name claimed by a private upload is served from its private files alone;
        // asked again after the listing, which may have learned a claim made elsewhere.
        for listed in [false, true] {
            if let Some((name, page)) = self.claimed(reader, dist_name) {
                let file =
                    page.file(key).filter(|f| f.filename == dist_name).ok_or_else(|| not_listed(dist_name, key))?;
                self.check_project(&name)?;
                self.check_file(reader, &name, file, None, Source::Private)?;
                let sha = file.sha256().map(str::to_string).ok_or_else(|| not_listed(dist_name, key))?;
                return self.answer_stored(&sha, Outcome::Hit, uploaded(file)).await?.ok_or_else(|| {
                    Error::NotFound(format!("`{dist_name}` is a private file missing from the store; upload it again"))
                });
            }
            if !listed {
                // Replicas: which blobs are other projects' private files, as of a second ago at most.
                self.private.refresh_names().await?;
            }
        }
        let sha = match key {
            FileKey::Sha256(sha) => Some(sha.clone()),
            // The alias body becomes a path: only a valid sha256 is used (issue 9).
            FileKey::UrlDigest(digest) => {
                let alias = RecordKey::Alias(digest.clone()).to_string();
                self.store.get_record(&alias).await?.and_then(|v| records::decode_alias(&v).ok())
            }
        };
        if let Some(sha) = &sha {
            // Another project's private file is not found from here, even if a page lists it.
            if self.hidden(reader, sha).await? {
                return Err(not_listed(dist_name, key));
            }
            // Hit: an upstream page Larder has lists it; no upstream request.
            if let Some(listed) = self.pages.listed_locally(key, dist_name).await
                && self.check_listed(reader, &listed.name, key, dist_name, sha).await?
                && let Some(answer) = self.answer_stored(sha, Outcome::Hit, listed.uploaded).await?
            {
                return Ok(answer);
            }
        }
        // Miss: find the file on its project's page, then fill. Misses tell the prefetcher
        // which platforms the clients run (hits pass no lock).
        self.demand.saw(dist_name);
        let (project, dist) = self.find_upstream(key, dist_name).await?;
        self.check_upstream_file(reader, &project, &dist, sha.as_deref())?;
        if let Some(listed_sha) = dist.sha256() {
            // Asked once per file: the key's own hash was checked above.
            if sha.as_deref() != Some(listed_sha) && self.hidden(reader, listed_sha).await? {
                return Err(not_listed(dist_name, key));
            }
            // Listed only now (the page was refreshed), and already stored.
            if let Some(answer) = self.answer_stored(listed_sha, Outcome::Hit, uploaded(&dist)).await? {
                return Ok(answer);
            }
        }
        let fills = self.fills()?;
        let upstream = self.allow_upstream_file(reader, &project, &dist)?;
        let mut request =
            FillRequest::for_file(&upstream, key, &dist, self.links.should_extract(&dist).then_some(project));
        if want == Want::Part {
            // A download under way serves parts once it has them; else the upstream does.
            if let Some(fill) = fills.in_flight(&request.key) {
                return Ok(FileAnswer::Filling {
                    fill,
                    sha256: dist.sha256().map(str::to_string),
                    modified: uploaded(&dist),
                });
            }
            return Ok(FileAnswer::Upstream {
                url: dist.url.clone(),
                sha256: dist.sha256().map(str::to_string),
                size: dist.size,
                upstream: Box::new(upstream),
            });
        }
        // Issue 22: a client's own large downloads are capped; joining one under way is free.
        if fills.in_flight(&request.key).is_none() {
            request.slot = fills.slot_for(reader.client.as_ref(), dist.size).await?;
        }
        let fill = fills.join(request);
        Ok(FileAnswer::Filling { fill, sha256: dist.sha256().map(str::to_string), modified: uploaded(&dist) })
    }

    /// `files/<key>/<dist_name>.metadata`: served only with the hash the page advertised
    /// (MD-03, MD-04).
    async fn metadata(&self, reader: &Reader, key: &FileKey, dist_name: &str) -> Result<FileAnswer, Error> {
        let answer = self.metadata_checked(reader, key, dist_name).await;
        // Ahead of the client (issue 21): the requirements of an upstream wheel's metadata.
        if let Some(ahead) = &self.ahead
            && self.claimed(reader, dist_name).is_none()
        {
            match &answer {
                Ok(FileAnswer::Stored { blob, .. }) => {
                    if let Some(raw) = blob.bytes() {
                        ahead.follow(raw.clone(), 1);
                    }
                }
                Ok(FileAnswer::Filling { fill, sha256: Some(md), .. }) => {
                    ahead.follow_fill(fill.clone(), md.clone(), 1)
                }
                _ => {}
            }
        }
        answer
    }

    /// The core metadata of a file `reader` sees, read exactly as `.metadata` is (stored, or
    /// fetched as the upstream's PEP 658 file or by ranges: never the whole distribution), for
    /// the JSON API's `info`. `None` when no metadata is known for it.
    pub async fn core_metadata(&self, reader: &Reader, file: &DistFile) -> Result<Option<bytes::Bytes>, Error> {
        let limit = crate::metadata::MAX_METADATA;
        let blob = match self.metadata(reader, &file.key(), &file.filename).await {
            Ok(FileAnswer::Stored { blob, .. }) => blob,
            Ok(FileAnswer::Filling { fill, sha256, .. }) => match fill.finished().await {
                FillState::Failed(e) => return Err(Error::Fill(e)),
                _ => match sha256 {
                    Some(sha) => match self.stored(&sha).await? {
                        Some(blob) => blob,
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                },
            },
            Ok(FileAnswer::Upstream { .. }) | Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = format!("the core metadata of `{}`", file.filename);
        let raw = blob.read_to_bytes(limit).await.map_err(|source| crate::store::Error::Io { what, source })?;
        Ok(Some(raw))
    }

    async fn metadata_checked(&self, reader: &Reader, key: &FileKey, dist_name: &str) -> Result<FileAnswer, Error> {
        self.refresh_claims_for(reader, dist_name, false).await?;
        let answer = self.metadata_as_known(reader, key, dist_name).await;
        if !self.recheck(&answer) {
            return answer;
        }
        self.refresh_claims_for(reader, dist_name, true).await?;
        self.metadata_as_known(reader, key, dist_name).await
    }

    async fn metadata_as_known(&self, reader: &Reader, key: &FileKey, dist_name: &str) -> Result<FileAnswer, Error> {
        let no_metadata = || Error::NotFound(format!("no core metadata is known for `{dist_name}`"));
        if !matches!(key, FileKey::Sha256(_)) {
            return Err(no_metadata());
        }
        for listed in [false, true] {
            if let Some((name, page)) = self.claimed(reader, dist_name) {
                let file = page.file(key).filter(|f| f.filename == dist_name).ok_or_else(no_metadata)?;
                self.check_project(&name)?;
                self.check_file(reader, &name, file, None, Source::Private)?;
                let md_sha = file.core_metadata.clone().ok_or_else(no_metadata)?;
                return self.answer_stored(&md_sha, Outcome::Hit, uploaded(file)).await?.ok_or_else(no_metadata);
            }
            if !listed {
                self.private.refresh_names().await?; // as in `file_as_known`
            }
        }
        self.demand.saw(dist_name);
        // Hit: a stored page names this file's metadata, and it is stored; no model is read.
        if let FileKey::Sha256(sha) = key
            && !self.hidden(reader, sha).await?
            && let Some(listed) = self.pages.listed_locally(key, dist_name).await
            && let Some(md_sha) = &listed.metadata
            && !self.hidden(reader, md_sha).await?
            && self.check_listed(reader, &listed.name, key, dist_name, sha).await?
            && let Some(answer) = self.answer_stored(md_sha, Outcome::Hit, listed.uploaded).await?
        {
            return Ok(answer);
        }
        let (project, dist) = self.find_upstream(key, dist_name).await.map_err(|e| match e {
            Error::NotFound(_) => no_metadata(),
            e => e,
        })?;
        self.check_upstream_file(reader, &project, &dist, None)?;
        let md_sha = match dist.core_metadata.clone().or_else(|| dist.sha256().and_then(|sha| self.links.get(sha))) {
            Some(md) => md,
            // Advertised as `true`: read it now (issue 11).
            None if self.links.on_demand(&dist) && !self.hidden(reader, dist.sha256().unwrap_or_default()).await? => {
                let fills = self.fills().map_err(|_| no_metadata())?;
                let upstream = self.allow_upstream_file(reader, &project, &dist)?;
                fills.metadata_on_demand(&upstream, &project, key, &dist).await.map_err(Error::Fill)?
            }
            None => return Err(no_metadata()),
        };
        // An upstream page may name any hash as its metadata: never another project's private file.
        if self.hidden(reader, &md_sha).await? {
            return Err(no_metadata());
        }
        if let Some(answer) = self.answer_stored(&md_sha, Outcome::Hit, uploaded(&dist)).await? {
            return Ok(answer);
        }
        let fills = self.fills().map_err(|_| no_metadata())?;
        let upstream = self.allow_upstream_file(reader, &project, &dist)?;
        let fill = fills.join(FillRequest::for_metadata(&upstream, &dist, &md_sha));
        Ok(FileAnswer::Filling { fill, sha256: Some(md_sha), modified: uploaded(&dist) })
    }

    pub(super) fn fills(&self) -> Result<&Arc<super::fill::Fills>, Error> {
        self.fills.as_ref().ok_or_else(|| {
            let why = if self.config.offline { "Larder is offline" } else { "no upstream is configured" };
            Error::NotFound(format!("{why}, and the file is not in the cache"))
        })
    }

    /// The project and entry of the upstream page that lists `dist_name` under `key`.
    pub(super) async fn find_upstream(&self, key: &FileKey, dist_name: &str) -> Result<(ProjectName, DistFile), Error> {
        self.pages.find_file(key, dist_name).await.map_err(Error::Page)?.ok_or_else(|| not_listed(dist_name, key))
    }

    /// Fetches one upstream file (and its upstream metadata) into the store, for `larder
    /// warm`; `Ok(Some(bytes))` when it was downloaded, `Ok(None)` when it was there already.
    /// `project` is the page it was listed on: its owner is the upstream it comes from.
    pub async fn warm_file(&self, project: &ProjectName, file: &DistFile) -> Result<Option<u64>, String> {
        let sha = file.sha256().ok_or("the index lists no sha256 for it; Larder cannot verify it")?;
        let fills = self.fills().map_err(|e| e.to_string())?;
        let upstream = self.upstreams.client(project).ok_or("no upstream is configured for it")?;
        let mut fetched = None;
        if !self.store.has_blob(sha).await.map_err(|e| e.to_string())? {
            let extract = self.links.should_extract(file).then(|| project.clone());
            let req = || FillRequest::for_file(upstream, &file.key(), file, extract.clone());
            fetched = Some(fill_with_retries(fills, req).await?);
        }
        if let Some(md) = &file.core_metadata
            && !self.store.has_blob(md).await.map_err(|e| e.to_string())?
        {
            fill_with_retries(fills, || FillRequest::for_metadata(upstream, file, md))
                .await
                .map_err(|e| format!("metadata: {e}"))?;
        }
        Ok(fetched)
    }
}

/// Waits for a fill, retrying transient upstream errors (a hash mismatch or a 404 will not heal).
async fn fill_with_retries(fills: &Arc<super::fill::Fills>, req: impl Fn() -> FillRequest) -> Result<u64, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fills.join(req()).finished().await {
            FillState::Done { len, .. } => return Ok(len),
            FillState::Failed(e) | FillState::Unstored { error: e, .. } => {
                // A pause the upstream asked for outlasts these retries: not retried.
                let transient = matches!(&*e, super::fill::Error::Upstream(u)
                    if u.is_transient() && !matches!(u, crate::upstream::Error::Throttled { .. }));
                if !transient || attempt >= 3 {
                    return Err(e.to_string());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            _ => return Err("the download ended without a result".into()),
        }
    }
}
