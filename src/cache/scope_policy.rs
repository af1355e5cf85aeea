//! A page as a scope sees it: `Cache::page` (the model) and `page_body` (the body a client of
//! the simple API is sent, streamed from the store like a file: issue 21), and the policy
//! applied to them (issue 14): which upstream a scope may be served a name from, and what
//! it sees of a page or may download, under the cooldown, the block list and project status.
//! Filtered renderings are made once per rule set and kept on the page head they came from
//! (their bodies stored like the page's own), until a held-back file comes out of its
//! cooldown or the block list is reloaded; a scope whose rules change nothing on a page gets
//! the shared rendering itself, at no cost.

use std::sync::Arc;

use super::pages::{Lookup, PageHead, PageState};
use super::{Cache, Error, Outcome, PageAnswer, PageReply, PageWant, Reader, ServedPage};
use crate::index::rendered::{Bodies, VariantKey};
use crate::index::{DistFile, PageModel, ProjectName, ViewKey};
use crate::policy::{BlockList, Filter, Filtered, Refusal, UnhashedFiles};

/// Where a page or file comes from, for the rules that differ: private uploads are never
/// held back; upstream files follow their upstream's cooldown.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Private,
    Upstream(&'a str),
}

impl Cache {
    /// One project's page as `reader` sees it: its private uploads when the name is claimed in
    /// one of its projects (never merged with, nor asking, the upstream; DC-1), else the
    /// upstream's, as a model (the pages for people, `larder warm`, the upload checks).
    /// Blocked projects, and names whose upstream the scope does not use, are not found,
    /// with the reason (issue 14); the rest is filtered by the scope's rules (`scope_policy`).
    pub async fn page(&self, reader: &Reader, name: &ProjectName) -> Result<PageAnswer, Error> {
        self.check_project(name)?;
        // Replicas: what another one claimed or changed is seen now (issue 13).
        self.private.refresh(&reader.projects, std::slice::from_ref(name), self.config.replica_lag).await?;
        if let Some(page) = self.private.page(&reader.projects, name) {
            // UP-06: an upload is visible at once.
            let page = self.view(reader, name, page, Source::Private);
            return Ok(PageAnswer::Found { page, outcome: Outcome::Hit, private_upload: true });
        }
        self.routed_page(reader, name).await
    }

    /// The same page as `page`, rendered for a client of the simple API: the body in the
    /// coding it accepts, streamed from the store like a file (issue 21).
    pub async fn page_body(
        &self,
        reader: &Reader,
        name: &ProjectName,
        want: &PageWant<'_>,
    ) -> Result<PageReply, Error> {
        self.check_project(name)?;
        self.private.refresh(&reader.projects, std::slice::from_ref(name), self.config.replica_lag).await?;
        if let Some((model, shared)) = self.private.page_with_bodies(&reader.projects, name) {
            let bodies = self.private_bodies(reader, name, model, shared);
            let served = self.serve_bodies(&bodies, want, Outcome::Hit, true).await;
            return served
                .map(PageReply::Found)
                .ok_or_else(|| Error::Unavailable("a private page body could not be read".into()));
        }
        let owner = self.owner_for(reader, name)?;
        let source = Source::Upstream(owner.as_deref().unwrap_or(crate::upstream::routes::DEFAULT));
        let Lookup { page: mut cached, mut outcome } = self.pages.get(name).await.map_err(Error::Page)?;
        for attempt in 0..3 {
            let head = match &cached.state {
                PageState::Found(head) => head.clone(),
                PageState::NotFound => return Ok(PageReply::NotFound),
            };
            if let Some(mut bodies) = self.upstream_bodies(reader, name, &head, source, want.files_base).await {
                // A page's HTML is rendered the first time a client asks for it (pip and uv
                // read JSON), then kept and stored with the page.
                if !bodies.has(want.media)
                    && let Some(with_html) = self.pages.plain_with_html(name, &head).await
                {
                    bodies = with_html;
                }
                if let Some(served) = self.serve_bodies(&bodies, want, outcome, false).await {
                    return Ok(PageReply::Found(served));
                }
            }
            // A body missing or damaged on disk: render the page again from its model; no
            // model either: fetch the page again.
            if attempt == 0 && self.pages.repair(name, &head).await.is_some() {
                cached = self.pages.get(name).await.map_err(Error::Page)?.page;
                continue;
            }
            self.pages.forget(name).await;
            Lookup { page: cached, outcome } = self.pages.get(name).await.map_err(Error::Page)?;
        }
        Err(Error::Unavailable(format!("the page of `{name}` could not be read from the store; retry")))
    }

    /// Picks the body for `want` and opens it (unless the client needs no bytes).
    /// `None`: the stored body could not be read.
    async fn serve_bodies(
        &self,
        bodies: &Bodies,
        want: &PageWant<'_>,
        outcome: Outcome,
        private_upload: bool,
    ) -> Option<ServedPage> {
        let (encoding, body, etag) = bodies.choose(want.media, want.accepted)?;
        let modified_unix = bodies.modified_unix;
        // A copy in any coding of these bytes is current; the 304 names the copy the client has.
        let current = bodies.etags(want.media).find(|t| (want.is_current)(t, modified_unix));
        let not_modified = current.is_some();
        let etag = current.unwrap_or(etag);
        let blob = match not_modified || want.head {
            true => None,
            false => Some(self.pages.read_body(body).await?),
        };
        Some(ServedPage {
            etag,
            encoding,
            len: body.len,
            modified_unix,
            body: blob,
            not_modified,
            outcome,
            private_upload,
        })
    }

    /// The upstream page `larder warm` fills the store from: never for a name with private
    /// uploads in any project (issue 22, item 10): warming it would fetch whatever the
    /// upstream has under an internal name (a squatter's package) into the store, and into
    /// every bundle exported from it. Replicas: claims made elsewhere are listed first.
    pub async fn page_to_warm(&self, reader: &Reader, name: &ProjectName) -> Result<PageAnswer, Error> {
        self.check_project(name)?;
        self.private.refresh_names().await?;
        if self.private.is_claimed_anywhere(name) {
            return Err(Error::Blocked(format!(
                "`{name}` has private uploads here, so its upstream files are never fetched; warm only names no project publishes"
            )));
        }
        self.routed_page(reader, name).await
    }

    /// The upstream page for `name` as `reader` sees it: from the name's owner, if the scope
    /// uses it, filtered by the scope's rules. Callers have checked the block list.
    async fn routed_page(&self, reader: &Reader, name: &ProjectName) -> Result<PageAnswer, Error> {
        let owner = self.owner_for(reader, name)?;
        Ok(match self.upstream_page(name).await? {
            PageAnswer::Found { page, outcome, private_upload } => {
                let source = Source::Upstream(owner.as_deref().unwrap_or(crate::upstream::routes::DEFAULT));
                PageAnswer::Found { page: self.view(reader, name, page, source), outcome, private_upload }
            }
            PageAnswer::NotFound => PageAnswer::NotFound,
        })
    }

    /// The upstream's page for `name`, from memory, disk or upstream, unfiltered.
    pub async fn upstream_page(&self, name: &ProjectName) -> Result<PageAnswer, Error> {
        let Lookup { page: cached, outcome } = self.pages.get(name).await.map_err(Error::Page)?;
        Ok(match &cached.state {
            PageState::Found(head) => {
                let page = match self.pages.model(name, head).await {
                    Some(m) => m,
                    None => {
                        // The record went away under the head: fetch it again.
                        self.pages.forget(name).await;
                        let cached = self.pages.get(name).await.map_err(Error::Page)?.page;
                        let PageState::Found(head) = &cached.state else { return Ok(PageAnswer::NotFound) };
                        self.pages.model(name, head).await.ok_or_else(|| {
                            Error::Unavailable(format!("the page of `{name}` could not be read from the store; retry"))
                        })?
                    }
                };
                PageAnswer::Found { page, outcome, private_upload: false }
            }
            PageState::NotFound => PageAnswer::NotFound,
        })
    }
}

impl Cache {
    /// The upstream `reader` may be served `name` from: `Ok(None)` when no upstream owns it
    /// (the page lookup then says there is none), an error when the owner is not one of the
    /// scope's upstreams. Never another upstream instead: that would be the merge.
    pub(crate) fn owner_for(&self, reader: &Reader, name: &ProjectName) -> Result<Option<String>, Error> {
        let Some(route) = self.upstreams.owner(name) else {
            // No upstream owns it (none is configured): only stored pages; a scope narrowed
            // to certain upstreams gets none of them.
            return match &reader.rules.upstreams {
                Some(_) => Err(Error::NotFound(format!(
                    "project `{name}` is not served to this project: no upstream it uses owns the name"
                ))),
                None => Ok(None),
            };
        };
        if reader.rules.uses(&route.name) {
            return Ok(Some(route.name.clone()));
        }
        let msg = match &reader.rules.upstreams {
            Some(set) if set.is_empty() => {
                format!("project `{name}` is not here: this project serves private packages only (upstreams = [])")
            }
            _ => format!(
                "project `{name}` is served from upstream `{}`, which this project does not use (its `upstreams` setting)",
                route.name
            ),
        };
        Err(Error::NotFound(msg))
    }

    fn filter<'a>(&self, reader: &'a Reader, blocks: &'a BlockList, name: &ProjectName, source: Source) -> Filter<'a> {
        let rules = &self.config.rules;
        let (cooldown, status) = match source {
            Source::Private => (None, reader.rules.status.as_ref()),
            Source::Upstream(upstream) => (rules.cooldown(&reader.rules, upstream, name), None),
        };
        let refuse_unhashed = match rules.unhashed_files {
            Some(setting) => setting == UnhashedFiles::Refuse,
            None => blocks.has_sha_rules(),
        };
        let advisories = self.advisories_apply(matches!(source, Source::Private));
        let (unknown, now) = (rules.unknown_upload_time, self.clock.unix());
        Filter { cooldown, unknown, blocks, status, now, refuse_unhashed, advisories }
    }

    /// A whole project on the block list: its page is not found, with the reason.
    pub(crate) fn check_project(&self, name: &ProjectName) -> Result<(), Error> {
        if self.blocks.is_empty() {
            return Ok(());
        }
        let (blocks, _) = self.blocks.current();
        match blocks.project(name) {
            Some(reason) => {
                metrics::counter!("larder_blocked_total", "kind" => "project").increment(1);
                Err(Error::NotFound(format!("project `{name}` is blocked on this index: {reason}")))
            }
            None => Ok(()),
        }
    }

    /// Whether any rule can change what `reader` sees of `name` (the hit path with no rules
    /// takes no lock).
    fn rules_apply(&self, reader: &Reader, name: &ProjectName, source: Source) -> bool {
        let status = matches!(source, Source::Private) && reader.rules.status.is_some();
        let cooldown = match source {
            Source::Upstream(upstream) => self.config.rules.cooldown(&reader.rules, upstream, name).is_some(),
            Source::Private => false,
        };
        status || cooldown || !self.blocks.is_empty() || self.refuses_unhashed()
    }

    /// `unhashed_files = "refuse"` set explicitly (with sha256 rules it is the default, and
    /// the block list is not empty then).
    pub(crate) fn refuses_unhashed(&self) -> bool {
        self.config.rules.unhashed_files == Some(UnhashedFiles::Refuse)
    }

    /// What `reader` sees of `page`, as a model (the pages for people, `larder warm`).
    pub(crate) fn view(
        &self,
        reader: &Reader,
        name: &ProjectName,
        page: Arc<PageModel>,
        source: Source<'_>,
    ) -> Arc<PageModel> {
        if !self.rules_apply(reader, name, source) {
            return page;
        }
        let (blocks, _) = self.blocks.current();
        let filter = self.filter(reader, &blocks, name, source);
        match filter.apply(&page.page) {
            Some(Filtered { page: Some(p), released, .. }) => {
                Arc::new(PageModel::new(p, page.modified_unix.max(released)))
            }
            _ => page,
        }
    }

    /// The rendering of a private page `reader` gets: the shared one, or its view under the
    /// scope's status rule.
    pub(crate) fn private_bodies(
        &self,
        reader: &Reader,
        name: &ProjectName,
        model: Arc<PageModel>,
        shared: Arc<Bodies>,
    ) -> Arc<Bodies> {
        let viewed = self.view(reader, name, model.clone(), Source::Private);
        if Arc::ptr_eq(&viewed, &model) {
            return shared;
        }
        Arc::new(Bodies::render(&viewed.page, None, viewed.modified_unix))
    }

    /// The rendering of an upstream page `reader` gets: the plain one, or the policy view
    /// and per-origin rendering it needs, each made once and kept (stored as blobs) until the
    /// rules change or a held-back file comes out of its cooldown. `None`: the page's model
    /// could not be read.
    pub(crate) async fn upstream_bodies(
        &self,
        reader: &Reader,
        name: &ProjectName,
        head: &Arc<PageHead>,
        source: Source<'_>,
        files_base: Option<&str>,
    ) -> Option<Arc<Bodies>> {
        let blocks = self.rules_apply(reader, name, source).then(|| self.blocks.current());
        let filter = blocks.as_ref().map(|(b, _)| self.filter(reader, b, name, source)).filter(|f| f.may_change(name));
        let view =
            filter.as_ref().map(|_| ViewKey { rules: reader.rules.id, blocks: blocks.as_ref().map_or(0, |b| b.1) });
        // Provenance links are per origin: only for the first few origins (issue 22, item 7).
        let files_base = files_base.filter(|b| head.provenance && self.provenance.origins.admit(b));
        let mut key = VariantKey { view, files_base: files_base.map(str::to_string) };
        let now = self.clock.unix();
        loop {
            if key.view.is_none() && key.files_base.is_none() {
                return Some(head.plain());
            }
            match head.variants.get(&key, now) {
                Some(Some(bodies)) => return Some(bodies),
                Some(None) => {
                    key.view = None; // the rules change nothing here
                    continue;
                }
                None => {}
            }
            let model = self.pages.model(name, head).await?;
            let (page, until, modified) = match (&key.view, &filter) {
                (Some(_), Some(filter)) => match filter.apply(&model.page) {
                    Some(filtered) => {
                        if filtered.shown_unknown > 0 {
                            tracing::info!(project = %name, files = filtered.shown_unknown, "files without an upload time are shown although new releases are held back (min_release_age_unknown = \"show\")");
                        }
                        // A file coming out of its cooldown changes the page then (Last-Modified, HDR-1).
                        let modified = model.modified_unix.max(filtered.released);
                        match filtered.page {
                            None if modified == model.modified_unix => {
                                self.pages.keep_variant(name, head, key.clone(), filtered.until, None).await;
                                key.view = None;
                                continue;
                            }
                            page => (page, filtered.until, modified),
                        }
                    }
                    None => (None, u64::MAX, model.modified_unix),
                },
                _ => (None, u64::MAX, model.modified_unix),
            };
            let page = page.as_ref().unwrap_or(&model.page);
            let bodies = Bodies::render(page, key.files_base.as_deref(), modified);
            return self.pages.keep_variant(name, head, key, until, Some(bodies)).await;
        }
    }

    /// May `reader` download `file` of project `name`? Blocked: 403 with the reason; held
    /// back by the cooldown: 404 saying until when.
    pub(crate) fn check_file(
        &self,
        reader: &Reader,
        name: &ProjectName,
        file: &DistFile,
        resolved_sha: Option<&str>,
        source: Source,
    ) -> Result<(), Error> {
        let cooldown = match source {
            Source::Upstream(upstream) => self.config.rules.cooldown(&reader.rules, upstream, name),
            Source::Private => None,
        };
        if cooldown.is_none() && self.blocks.is_empty() && !self.refuses_unhashed() {
            return Ok(()); // the hit path with no rules: no lock
        }
        let (blocks, _) = self.blocks.current();
        match self.filter(reader, &blocks, name, source).check(name, file, resolved_sha) {
            Ok(()) => {
                // A download a break-glass entry let through is on record, each time.
                if self.advisories_apply(matches!(source, Source::Private))
                    && let crate::policy::block::AdvisoryVerdict::Allowed { rule, allow } =
                        blocks.advisory(name, file, self.clock.unix())
                {
                    metrics::counter!("larder_advisory_allowed_total").increment(1);
                    tracing::warn!(file = %file.filename, advisory = %rule.advisory.id, reason = %allow.reason, "served under an [[advisories.allow]] break-glass entry");
                }
                Ok(())
            }
            Err(Refusal::Blocked(reason)) => {
                metrics::counter!("larder_blocked_total", "kind" => "file").increment(1);
                Err(Error::Blocked(reason))
            }
            Err(Refusal::Held(reason)) => {
                metrics::counter!("larder_held_back_total").increment(1);
                Err(Error::NotFound(reason))
            }
            Err(Refusal::Advisory { reason, kind }) => {
                metrics::counter!("larder_blocked_total", "kind" => "file", "advisory" => kind).increment(1);
                Err(Error::Blocked(reason))
            }
        }
    }

    /// Replaces the block list (SIGHUP); pages filtered under the old one are made again.
    pub fn replace_block_list(&self, list: BlockList) {
        let rules = list.len();
        self.blocks.replace(list);
        tracing::info!(rules, "block list reloaded");
    }
}
