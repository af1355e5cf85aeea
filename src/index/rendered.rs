//! A project page rendered once, in both formats, with its validators: a hit copies nothing.

use std::collections::HashMap;

use bytes::Bytes;

use super::{DistFile, FileKey, MediaType, ProjectPage};

/// A page with both renderings and their validators, built once when the page changes.
pub struct RenderedPage {
    pub page: ProjectPage,
    html: Bytes,
    json: Bytes,
    digest_html: String,
    digest_json: String,
    by_key: HashMap<FileKey, usize>,
}

impl RenderedPage {
    pub fn new(page: ProjectPage) -> RenderedPage {
        let html = Bytes::from(super::html::render_project(&page));
        let json = Bytes::from(super::json::render_project(&page));
        let digest_html = crate::digest::sha256_hex(&html)[..20].to_string();
        let digest_json = crate::digest::sha256_hex(&json)[..20].to_string();
        let by_key = page.files.iter().enumerate().map(|(i, f)| (f.key(), i)).collect();
        RenderedPage { page, html, json, digest_html, digest_json, by_key }
    }

    pub fn body(&self, media: MediaType) -> Bytes {
        if media.is_json() { self.json.clone() } else { self.html.clone() }
    }

    /// A strong ETag naming these exact bytes in this media type (HDR-1).
    pub fn etag(&self, media: MediaType) -> String {
        let digest = if media.is_json() { &self.digest_json } else { &self.digest_html };
        format!("\"{digest}-{}\"", media.tag())
    }

    pub fn file(&self, key: &FileKey) -> Option<&DistFile> {
        self.by_key.get(key).map(|&i| &self.page.files[i])
    }

    /// Memory this page takes, for the page cache's budget.
    /// Measured with heaptrack under load: a page's model, maps and allocator overhead take
    /// about as much again as its two renderings, so both count (page_cache_mib is real memory);
    /// each entry also costs about 1.5 KiB of its own (cache entry, key, validators, maps), which
    /// is most of a one-file page (the 1,000-client load's misses).
    pub fn weight(&self) -> u32 {
        const PER_PAGE: usize = 1536;
        let files: usize = self.page.files.iter().map(|f| 2 * (f.url.len() + f.filename.len()) + 400).sum();
        (PER_PAGE + 2 * (self.html.len() + self.json.len()) + files).try_into().unwrap_or(u32::MAX)
    }
}
