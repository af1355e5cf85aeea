//! The policy applied (issue 14): which upstream a scope may be served a name from, and what
//! it sees of a page or may download, under the cooldown, the block list and project status.
//! Filtered pages are made once per rule set and kept on the page they came from, until a
//! held-back file comes out of its cooldown or the block list is reloaded; a scope whose
//! rules change nothing on a page gets the shared page itself, at no cost.

use std::sync::Arc;

use super::{Cache, Error, Reader};
use crate::index::{DistFile, ProjectName, RenderedPage, ViewKey};
use crate::policy::{BlockList, Filter, Refusal};

/// Where a page or file comes from, for the rules that differ: private uploads are never
/// held back; upstream files follow their upstream's cooldown.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Private,
    Upstream(&'a str),
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
        Filter { cooldown, unknown: rules.unknown_upload_time, blocks, status, now: self.clock.unix() }
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

    /// What `reader` sees of `page`.
    pub(crate) async fn view(
        &self,
        reader: &Reader,
        name: &ProjectName,
        page: Arc<RenderedPage>,
        source: Source<'_>,
    ) -> Arc<RenderedPage> {
        // The common case, no rule for this scope and name at all: no lock, no copy.
        let status = matches!(source, Source::Private) && reader.rules.status.is_some();
        let cooldown = match source {
            Source::Upstream(upstream) => self.config.rules.cooldown(&reader.rules, upstream, name).is_some(),
            Source::Private => false,
        };
        if !status && !cooldown && self.blocks.is_empty() {
            return page;
        }
        let (blocks, generation) = self.blocks.current();
        let filter = self.filter(reader, &blocks, name, source);
        if !filter.may_change(name) {
            return page;
        }
        let key = ViewKey { rules: reader.rules.id, blocks: generation };
        if let Some(kept) = page.view(key, filter.now) {
            return kept.unwrap_or(page);
        }
        let Some(filtered) = filter.apply(&page.page) else { return page };
        if filtered.shown_unknown > 0 {
            tracing::info!(project = %name, files = filtered.shown_unknown, "files without an upload time are shown although new releases are held back (min_release_age_unknown = \"show\")");
        }
        // A file coming out of its cooldown changes the page then (Last-Modified, HDR-1).
        let modified = page.modified_unix.max(filtered.released);
        let made = match filtered.page {
            None if modified == page.modified_unix => None,
            None => Some(Arc::new(RenderedPage::new(page.page.clone(), modified))),
            Some(p) => Some(Arc::new(RenderedPage::new(p, modified))),
        };
        page.keep_view(key, filtered.until, made.clone());
        // The view lives on the page: the page cache weighs it again, so that its memory counts.
        if made.is_some() && matches!(source, Source::Upstream(_)) {
            self.pages.reweigh(name).await;
        }
        made.unwrap_or(page)
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
        if cooldown.is_none() && self.blocks.is_empty() {
            return Ok(()); // the hit path with no rules: no lock
        }
        let (blocks, _) = self.blocks.current();
        match self.filter(reader, &blocks, name, source).check(name, file, resolved_sha) {
            Ok(()) => Ok(()),
            Err(Refusal::Blocked(reason)) => {
                metrics::counter!("larder_blocked_total", "kind" => "file").increment(1);
                Err(Error::Blocked(reason))
            }
            Err(Refusal::Held(reason)) => {
                metrics::counter!("larder_held_back_total").increment(1);
                Err(Error::NotFound(reason))
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
