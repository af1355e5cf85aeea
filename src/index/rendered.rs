//! A project page rendered once, in both formats, with its validators: a hit copies nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{DistFile, FileKey, MediaType, ProjectPage};

/// Renderings with absolute provenance links, and policy views, kept per page: a few at most
/// (one per host name and route a client uses; one per rule set), so a client sending odd
/// Host headers cannot grow them.
const MAX_VARIANTS: usize = 4;

/// Both renderings of one page and their ETag digests.
struct Renderings {
    html: Bytes,
    json: Bytes,
    digest_html: String,
    digest_json: String,
}

impl Renderings {
    fn new(page: &ProjectPage, files_base: Option<&str>) -> Renderings {
        let html = Bytes::from(super::html::render_project(page, files_base));
        let json = Bytes::from(super::json::render_project(page, files_base));
        let digest_html = crate::digest::sha256_hex(&html)[..20].to_string();
        let digest_json = crate::digest::sha256_hex(&json)[..20].to_string();
        Renderings { html, json, digest_html, digest_json }
    }

    fn body(&self, media: MediaType) -> Bytes {
        if media.is_json() { self.json.clone() } else { self.html.clone() }
    }

    /// A strong ETag naming these exact bytes in this media type (HDR-1).
    fn etag(&self, media: MediaType) -> String {
        let digest = if media.is_json() { &self.digest_json } else { &self.digest_html };
        format!("\"{digest}-{}\"", media.tag())
    }
}

/// Which rules a view was made for: the scope's rule set and the block list's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewKey {
    pub rules: u64,
    pub blocks: u64,
}

struct View {
    key: ViewKey,
    /// The view is valid until this time (seconds since the epoch): when a held-back file
    /// comes out of its cooldown.
    until: u64,
    /// `None`: the rules change nothing on this page.
    page: Option<Arc<RenderedPage>>,
}

/// A page with both renderings and their validators, built once when the page changes.
pub struct RenderedPage {
    pub page: ProjectPage,
    plain: Renderings,
    by_key: HashMap<FileKey, usize>,
    /// When this content last changed, in seconds since the epoch (`Last-Modified`, HDR-1).
    pub modified_unix: u64,
    /// Whether any file links to provenance (those renderings depend on the host).
    provenance: bool,
    absolute: RwLock<Vec<(String, Arc<Renderings>)>>,
    views: RwLock<Vec<View>>,
}

impl RenderedPage {
    /// Renders `page`; `modified_unix` is when its content last changed (0: unknown, then the
    /// newest upload time stands in).
    pub fn new(page: ProjectPage, modified_unix: u64) -> RenderedPage {
        let plain = Renderings::new(&page, None);
        let by_key = page.files.iter().enumerate().map(|(i, f)| (f.key(), i)).collect();
        // An upload time in the future (an upstream's clock, or its lie) must not pin
        // Last-Modified ahead of now: If-Modified-Since clients would miss every change.
        let now = crate::clock::Clock::system().unix();
        let modified_unix = modified_unix.max(page.newest_upload().unwrap_or(0).min(now));
        let provenance = page.has_provenance();
        RenderedPage {
            page,
            plain,
            by_key,
            modified_unix,
            provenance,
            absolute: RwLock::default(),
            views: RwLock::default(),
        }
    }

    pub fn body(&self, media: MediaType) -> Bytes {
        self.plain.body(media)
    }

    /// A strong ETag naming these exact bytes in this media type (HDR-1).
    pub fn etag(&self, media: MediaType) -> String {
        self.plain.etag(media)
    }

    /// The body and ETag for a client of the scope whose `files/` route is at `files_base`
    /// (an absolute URL): pages with provenance link to it absolutely (PEP 740), rendered once
    /// per base; every other page is the one shared rendering.
    /// The third value says a rendering was made (the page's weight grew).
    pub fn answer(&self, media: MediaType, files_base: Option<&str>) -> (Bytes, String, bool) {
        let Some(base) = files_base.filter(|_| self.provenance) else {
            return (self.plain.body(media), self.plain.etag(media), false);
        };
        let found =
            self.absolute.read().expect("renderings lock").iter().find(|(b, _)| b == base).map(|(_, r)| r.clone());
        let made = found.is_none();
        let r = found.unwrap_or_else(|| {
            let r = Arc::new(Renderings::new(&self.page, Some(base)));
            let mut all = self.absolute.write().expect("renderings lock");
            if all.len() >= MAX_VARIANTS {
                all.remove(0);
            }
            all.push((base.to_string(), r.clone()));
            r
        });
        (r.body(media), r.etag(media), made)
    }

    /// Whether this page's renderings depend on the client's host (provenance links).
    pub fn has_provenance(&self) -> bool {
        self.provenance
    }

    /// The view kept for `key` and still valid at `now`: `Some(None)` when the rules change
    /// nothing here, `None` when it must be made.
    pub fn view(&self, key: ViewKey, now: u64) -> Option<Option<Arc<RenderedPage>>> {
        let views = self.views.read().expect("views lock");
        views.iter().find(|v| v.key == key && now < v.until).map(|v| v.page.clone())
    }

    /// Keeps a view made for `key`, valid until `until`.
    pub fn keep_view(&self, key: ViewKey, until: u64, page: Option<Arc<RenderedPage>>) {
        let mut views = self.views.write().expect("views lock");
        views.retain(|v| v.key != key);
        if views.len() >= MAX_VARIANTS {
            views.remove(0);
        }
        views.push(View { key, until, page });
    }

    pub fn file(&self, key: &FileKey) -> Option<&DistFile> {
        self.by_key.get(key).map(|&i| &self.page.files[i])
    }

    /// Memory this page takes, for the page cache's budget.
    /// Measured with heaptrack under load: a page's model, maps and allocator overhead take
    /// about as much again as its two renderings, so both count (page_cache_mib is real memory);
    /// each entry also costs about 1.5 KiB of its own (cache entry, key, validators, maps), which
    /// is most of a one-file page (the 1,000-client load's misses).
    ///
    /// What a page grows later counts too: its per-origin renderings and policy views, at their
    /// size (the engine weighs the page again when it keeps one).
    pub fn weight(&self) -> u32 {
        const PER_PAGE: usize = 1536;
        let files: usize = self.page.files.iter().map(|f| 2 * (f.url.len() + f.filename.len()) + 400).sum();
        let renderings = self.plain.html.len() + self.plain.json.len();
        let absolute: usize = self
            .absolute
            .read()
            .expect("renderings lock")
            .iter()
            .map(|(b, r)| b.len() + r.html.len() + r.json.len())
            .sum();
        let views: usize = self
            .views
            .read()
            .expect("views lock")
            .iter()
            .filter_map(|v| v.page.as_ref())
            .map(|p| p.weight() as usize)
            .sum();
        (PER_PAGE + 2 * renderings + files + absolute + views).try_into().unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{DistFile, ProjectName};

    #[test]
    fn renderings_and_views_kept_later_count_in_the_weight() {
        let file = DistFile {
            filename: "p-1.0-py3-none-any.whl".into(),
            url: "http://up/p-1.0-py3-none-any.whl".into(),
            hashes: [("sha256".to_string(), "ab".repeat(32))].into(),
            requires_python: None,
            yanked: Default::default(),
            core_metadata: None,
            size: Some(1),
            upload_time: None,
            metadata_on_demand: false,
            provenance: Some("http://up/p/provenance".into()),
        };
        let page = ProjectPage {
            name: ProjectName::parse("p").unwrap(),
            files: vec![file],
            versions: Some(vec!["1.0".into()]),
            status: None,
        };
        let rendered = RenderedPage::new(page.clone(), 0);
        let bare = rendered.weight();
        let (_, _, made) = rendered.answer(MediaType::Json, Some("https://a.example/files/"));
        assert!(made);
        let with_origin = rendered.weight();
        assert!(with_origin > bare, "{with_origin} > {bare}");
        let (_, _, made) = rendered.answer(MediaType::Json, Some("https://a.example/files/"));
        assert!(!made, "made once per origin");
        rendered.keep_view(ViewKey { rules: 1, blocks: 1 }, u64::MAX, Some(Arc::new(RenderedPage::new(page, 0))));
        assert!(rendered.weight() > with_origin, "a kept view counts");
    }
}
