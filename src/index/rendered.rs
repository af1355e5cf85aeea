//! A project page as Larder serves it: the model with its file lookup (`PageModel`), and the
//! bodies rendered from it (`Bodies`): PEP 503 HTML and PEP 691 JSON, each as identity, gzip
//! and zstd, made once per change. Upstream pages' bodies are kept as blobs in the store and
//! served like files (issue 21); memory holds only their descriptors.

use std::collections::HashMap;
use std::io::Write;
use std::sync::RwLock;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{DistFile, FileKey, MediaType, ProjectPage};

/// Per-origin renderings and policy views kept per page: a few at most (one per admitted
/// origin, `cache::provenance::Origins`, times the rule sets that change the page), so a
/// client sending odd Host headers can neither grow them nor make them evict each other.
const MAX_VARIANTS: usize = 8;

/// A page's model and its file lookup: what the file route and policy decide with.
pub struct PageModel {
    pub page: ProjectPage,
    by_key: HashMap<FileKey, usize>,
    /// When this content last changed, in seconds since the epoch (`Last-Modified`, HDR-1).
    pub modified_unix: u64,
}

impl PageModel {
    /// `modified_unix` is when its content last changed (0: unknown, then the newest upload
    /// time stands in).
    pub fn new(page: ProjectPage, modified_unix: u64) -> PageModel {
        let by_key = page.files.iter().enumerate().map(|(i, f)| (f.key(), i)).collect();
        // An upload time in the future (an upstream's clock, or its lie) must not pin
        // Last-Modified ahead of now: If-Modified-Since clients would miss every change.
        let now = crate::clock::Clock::system().unix();
        let modified_unix = modified_unix.max(page.newest_upload().unwrap_or(0).min(now));
        PageModel { page, by_key, modified_unix }
    }

    /// Whether this page's renderings depend on the client's host (provenance links).
    pub fn has_provenance(&self) -> bool {
        self.page.has_provenance()
    }

    pub fn file(&self, key: &FileKey) -> Option<&DistFile> {
        self.by_key.get(key).map(|&i| &self.page.files[i])
    }

    /// Memory this model takes, for the model cache's budget (measured with heaptrack: the
    /// strings, the map and allocator overhead come to about twice the text).
    pub fn weight(&self) -> u32 {
        let files: usize = self.page.files.iter().map(|f| 2 * (f.url.len() + f.filename.len()) + 400).sum();
        (1024 + files).try_into().unwrap_or(u32::MAX)
    }

    /// The compact file index of this page (what the file route asks on a hit).
    pub fn listing(&self) -> Listing {
        let mut entries: Vec<(u128, u64)> = self
            .page
            .files
            .iter()
            .map(|f| {
                let uploaded = f.upload_time.as_deref().and_then(super::parse_upload_time).unwrap_or(u64::MAX);
                (Listing::hash(&f.key(), &f.filename), uploaded)
            })
            .collect();
        entries.sort_unstable();
        let mut metadata: Vec<(u128, [u8; 32])> = self
            .page
            .files
            .iter()
            .filter_map(|f| {
                let md = f.core_metadata.as_deref()?;
                let mut sha = [0u8; 32];
                hex::decode_to_slice(md, &mut sha).ok()?;
                Some((Listing::hash(&f.key(), &f.filename), sha))
            })
            .collect();
        metadata.sort_unstable();
        Listing { entries, metadata }
    }
}

/// Which files a page lists, 24 bytes per file: a 128-bit hash of key and filename (a
/// second preimage is out of reach) and the upload time. Enough to serve a stored file
/// without the page's model when no rule needs the file's entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    entries: Vec<(u128, u64)>,
    /// The PEP 658 metadata sha256 of the files that have one (48 bytes each): a `.metadata`
    /// hit needs no model either.
    metadata: Vec<(u128, [u8; 32])>,
}

impl Listing {
    fn hash(key: &FileKey, filename: &str) -> u128 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(key.to_string().as_bytes());
        h.update(b"/");
        h.update(filename.as_bytes());
        let digest = h.finalize();
        u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
    }

    /// `Some(upload time)` when the page lists `filename` under `key`.
    pub fn find(&self, key: &FileKey, filename: &str) -> Option<Option<u64>> {
        let h = Listing::hash(key, filename);
        let i = self.entries.binary_search_by(|(e, _)| e.cmp(&h)).ok()?;
        let t = self.entries[i].1;
        Some((t != u64::MAX).then_some(t))
    }

    /// The metadata sha256 of `filename` under `key`, when the page names one.
    pub fn metadata(&self, key: &FileKey, filename: &str) -> Option<String> {
        let h = Listing::hash(key, filename);
        let i = self.metadata.binary_search_by(|(e, _)| e.cmp(&h)).ok()?;
        Some(hex::encode(self.metadata[i].1))
    }

    pub fn weight(&self) -> usize {
        self.entries.len() * 24 + self.metadata.len() * 48
    }

    /// The metadata part, as hex (96 digits per file), kept beside `to_hex`.
    pub fn metadata_hex(&self) -> String {
        let mut out = String::with_capacity(self.metadata.len() * 96);
        for (h, sha) in &self.metadata {
            out.push_str(&format!("{h:032x}"));
            out.push_str(&hex::encode(sha));
        }
        out
    }

    /// Kept in the page record's head as hex: 48 digits per file.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(self.entries.len() * 48);
        for (h, t) in &self.entries {
            out.push_str(&format!("{h:032x}{t:016x}"));
        }
        out
    }

    pub fn from_hex(s: &str, metadata: &str) -> Result<Listing, String> {
        let mut listing = Listing::entries_from_hex(s)?;
        if !metadata.len().is_multiple_of(96) || !metadata.is_ascii() {
            return Err("a page's metadata listing is not a whole number of entries".into());
        }
        for chunk in metadata.as_bytes().chunks(96) {
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            let h = u128::from_str_radix(&text[..32], 16).map_err(|e| format!("bad listing entry: {e}"))?;
            let mut sha = [0u8; 32];
            hex::decode_to_slice(&text[32..], &mut sha).map_err(|e| format!("bad listing entry: {e}"))?;
            listing.metadata.push((h, sha));
        }
        if !listing.metadata.is_sorted() {
            return Err("a page's metadata listing is not sorted".into());
        }
        Ok(listing)
    }

    fn entries_from_hex(s: &str) -> Result<Listing, String> {
        if !s.len().is_multiple_of(48) || !s.is_ascii() {
            return Err("a page listing is not a whole number of entries".into());
        }
        let mut entries = Vec::with_capacity(s.len() / 48);
        for chunk in s.as_bytes().chunks(48) {
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            let h = u128::from_str_radix(&text[..32], 16).map_err(|e| format!("bad listing entry: {e}"))?;
            let t = u64::from_str_radix(&text[32..], 16).map_err(|e| format!("bad listing entry: {e}"))?;
            entries.push((h, t));
        }
        if !entries.is_sorted() {
            return Err("a page listing is not sorted".into());
        }
        Ok(Listing { entries, metadata: Vec::new() })
    }
}

/// A content coding of a page body (RFC 9110 §8.4). Files are never re-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    const ALL: [Encoding; 3] = [Encoding::Identity, Encoding::Gzip, Encoding::Zstd];

    fn index(self) -> usize {
        self as usize
    }

    /// The `Content-Encoding` value; `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }

    /// A label for metrics and logs.
    pub fn label(self) -> &'static str {
        self.header().unwrap_or("identity")
    }

    /// The codings a client accepts, from its `Accept-Encoding` (q=0 refuses one; `*` stands
    /// for the rest). Identity is always acceptable: pages are never refused for this.
    pub fn accepted(header: Option<&str>) -> [bool; 3] {
        let mut out = [true, false, false];
        let Some(header) = header else { return out };
        let mut star = None;
        let mut named = [None; 3];
        for item in header.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            match coding.as_str() {
                "gzip" | "x-gzip" => named[1] = Some(!q_zero),
                "zstd" => named[2] = Some(!q_zero),
                "*" => star = Some(!q_zero),
                _ => {}
            }
        }
        for i in 1..3 {
            out[i] = named[i].or(star).unwrap_or(false);
        }
        out
    }
}

/// One body: its bytes in memory until they are stored, then their blob in the store.
#[derive(Clone, Debug)]
pub struct Body {
    pub sha256: String,
    pub len: u64,
    pub inline: Option<Bytes>,
}

/// The bodies of one rendering of a page, both media types, in every coding made so far
/// (identity always; gzip and zstd once compressed, in the background for upstream pages).
#[derive(Clone, Debug)]
pub struct Bodies {
    /// `Last-Modified` of this rendering.
    pub modified_unix: u64,
    html: [Option<Body>; 3],
    json: [Option<Body>; 3],
}

/// What a stored body is, in a page record's head.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredBody {
    pub encoding: Encoding,
    pub sha256: String,
    pub len: u64,
}

/// `Bodies` as a page record keeps them (only stored ones).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoredBodies {
    pub modified_unix: u64,
    pub html: Vec<StoredBody>,
    pub json: Vec<StoredBody>,
}

fn body_of(bytes: Vec<u8>) -> Body {
    let sha256 = crate::digest::sha256_hex(&bytes);
    Body { sha256, len: bytes.len() as u64, inline: Some(Bytes::from(bytes)) }
}

/// Levels for the background compression of every changed page: cheap enough that a cold
/// resolve of a hundred big pages (60 MB of bodies) costs well under a second of one core,
/// and still a tenth (zstd) or a fifth (gzip) of a JSON page's size.
const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: u32 = 3;

fn compress(encoding: Encoding, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Identity => Ok(data.to_vec()),
        Encoding::Gzip => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::new(GZIP_LEVEL));
            e.write_all(data)?;
            e.finish()
        }
        Encoding::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL),
    }
}

impl Bodies {
    /// Renders `page` in both media types, identity only, in memory. `files_base` makes
    /// provenance links absolute (PEP 740).
    pub fn render(page: &ProjectPage, files_base: Option<&str>, modified_unix: u64) -> Bodies {
        let html = body_of(super::html::render_project(page, files_base).into_bytes());
        let json = body_of(super::json::render_project(page, files_base));
        Bodies { modified_unix, html: [Some(html), None, None], json: [Some(json), None, None] }
    }

    /// The JSON body alone (what pip and uv ask for): a miss answers without rendering HTML,
    /// which the background write adds (`with_html`).
    pub fn render_json(page: &ProjectPage, files_base: Option<&str>, modified_unix: u64) -> Bodies {
        let json = body_of(super::json::render_project(page, files_base));
        Bodies { modified_unix, html: [None, None, None], json: [Some(json), None, None] }
    }

    /// Whether a body in `media` was made.
    pub fn has(&self, media: MediaType) -> bool {
        if media.is_json() { self.json[0].is_some() } else { self.html[0].is_some() }
    }

    /// The same bodies with the HTML one rendered, if it was missing.
    pub fn with_html(&self, page: &ProjectPage, files_base: Option<&str>) -> Bodies {
        let mut out = self.clone();
        if out.html[0].is_none() {
            out.html[0] = Some(body_of(super::html::render_project(page, files_base).into_bytes()));
        }
        out
    }

    /// These bodies with the HTML ones of `other` (a rendering of the same page): what was
    /// stored of these meanwhile stays stored.
    pub fn with_html_of(&self, other: &Bodies) -> Bodies {
        Bodies { html: other.html.clone(), ..self.clone() }
    }

    /// The same bodies with gzip and zstd made from the identity bytes (CPU work: run it on a
    /// blocking thread for big pages). Needs the identity bytes in memory.
    pub fn compressed(&self) -> std::io::Result<Bodies> {
        let mut out = self.clone();
        for set in [&mut out.html, &mut out.json] {
            let Some(identity) = set[0].as_ref().and_then(|b| b.inline.clone()) else { continue };
            for enc in [Encoding::Gzip, Encoding::Zstd] {
                if set[enc.index()].is_none() {
                    set[enc.index()] = Some(body_of(compress(enc, &identity)?));
                }
            }
        }
        Ok(out)
    }

    /// Every body still held in memory, to be stored.
    pub fn inline(&self) -> impl Iterator<Item = &Body> {
        self.html.iter().chain(&self.json).flatten().filter(|b| b.inline.is_some())
    }

    /// The sha256s of the bodies already in the store (their bytes not in memory).
    pub fn stored_shas(&self) -> Vec<String> {
        self.html.iter().chain(&self.json).flatten().filter(|b| b.inline.is_none()).map(|b| b.sha256.clone()).collect()
    }

    /// The same bodies, their bytes dropped: now in the store.
    pub fn stored(&self) -> Bodies {
        let strip = |set: &[Option<Body>; 3]| set.clone().map(|b| b.map(|b| Body { inline: None, ..b }));
        Bodies { modified_unix: self.modified_unix, html: strip(&self.html), json: strip(&self.json) }
    }

    /// The identity JSON body's sha256: both media types render the same model, and the JSON
    /// carries every field of it, so equal fingerprints are equal pages.
    pub fn fingerprint(&self) -> Option<&str> {
        self.json[0].as_ref().map(|b| b.sha256.as_str())
    }

    /// The body to send for `media` to a client accepting `accepted` (from
    /// `Encoding::accepted`): the smallest coding made so far that it accepts.
    pub fn choose(&self, media: MediaType, accepted: [bool; 3]) -> Option<(Encoding, &Body, String)> {
        let set = if media.is_json() { &self.json } else { &self.html };
        let identity = set[0].as_ref()?;
        let (enc, body) = [Encoding::Zstd, Encoding::Gzip, Encoding::Identity]
            .into_iter()
            .find_map(|e| set[e.index()].as_ref().filter(|_| accepted[e.index()]).map(|b| (e, b)))?;
        Some((enc, body, etag(&identity.sha256, media, enc)))
    }

    /// Every ETag this content has in `media`, one per coding made (a client's copy in any
    /// coding is current).
    pub fn etags(&self, media: MediaType) -> impl Iterator<Item = String> + '_ {
        let set = if media.is_json() { &self.json } else { &self.html };
        let identity = set[0].as_ref().map(|b| b.sha256.clone()).unwrap_or_default();
        Encoding::ALL.into_iter().filter(move |e| set[e.index()].is_some()).map(move |e| etag(&identity, media, e))
    }

    /// Memory the bodies hold (their bytes until stored, and the descriptors).
    pub fn weight(&self) -> usize {
        self.html.iter().chain(&self.json).flatten().map(|b| 160 + b.inline.as_ref().map_or(0, Bytes::len)).sum()
    }

    pub fn to_stored(&self) -> StoredBodies {
        let list = |set: &[Option<Body>; 3]| {
            Encoding::ALL
                .into_iter()
                .filter_map(|e| {
                    set[e.index()].as_ref().map(|b| StoredBody { encoding: e, sha256: b.sha256.clone(), len: b.len })
                })
                .collect()
        };
        StoredBodies { modified_unix: self.modified_unix, html: list(&self.html), json: list(&self.json) }
    }

    /// Bodies from a record's head; `None` when it lacks the identity JSON body, has a coding
    /// of HTML without its identity body, or a sha256 is bad. HTML may be missing: it is
    /// rendered and stored the first time a client asks for it.
    pub fn from_stored(s: &StoredBodies) -> Option<Bodies> {
        let set = |list: &[StoredBody]| -> Option<[Option<Body>; 3]> {
            let mut out: [Option<Body>; 3] = [None, None, None];
            for b in list {
                if !super::is_sha256_hex(&b.sha256) {
                    return None;
                }
                out[b.encoding.index()] = Some(Body { sha256: b.sha256.clone(), len: b.len, inline: None });
            }
            if out[0].is_none() && !list.is_empty() {
                return None;
            }
            Some(out)
        };
        let json = set(&s.json)?;
        json[0].as_ref()?;
        Some(Bodies { modified_unix: s.modified_unix, html: set(&s.html)?, json })
    }
}

/// A strong ETag per body (RFC 9110 §8.8.3): the identity content's digest, the media type
/// and the coding, so each representation has its own (HDR-1).
fn etag(identity_sha: &str, media: MediaType, enc: Encoding) -> String {
    let digest = &identity_sha[..20.min(identity_sha.len())];
    match enc.header() {
        None => format!("\"{digest}-{}\"", media.tag()),
        Some(coding) => format!("\"{digest}-{}-{coding}\"", media.tag()),
    }
}

/// Which rules and origin a rendering was made for: the scope's rule set and the block list's
/// generation (a policy view), and the absolute `files/` base for provenance links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantKey {
    pub view: Option<ViewKey>,
    pub files_base: Option<String>,
}

/// Which rules a view was made for: the scope's rule set and the block list's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewKey {
    pub rules: u64,
    pub blocks: u64,
}

struct Variant {
    key: VariantKey,
    /// Valid until this time (seconds since the epoch): when a held-back file comes out of its
    /// cooldown.
    until: u64,
    /// `None`: the rules change nothing on this page.
    bodies: Option<std::sync::Arc<Bodies>>,
}

/// The renderings a page keeps besides its plain one: per origin and per policy view, a few.
#[derive(Default)]
pub struct Variants(RwLock<Vec<Variant>>);

impl Variants {
    /// The rendering kept for `key`, valid at `now`: `Some(None)` when the rules change nothing.
    pub fn get(&self, key: &VariantKey, now: u64) -> Option<Option<std::sync::Arc<Bodies>>> {
        let all = self.0.read().expect("variants lock");
        all.iter().find(|v| &v.key == key && now < v.until).map(|v| v.bodies.clone())
    }

    pub fn keep(&self, key: VariantKey, until: u64, bodies: Option<std::sync::Arc<Bodies>>) {
        let mut all = self.0.write().expect("variants lock");
        all.retain(|v| v.key != key);
        if all.len() >= MAX_VARIANTS {
            all.remove(0);
        }
        all.push(Variant { key, until, bodies });
    }

    /// Replaces the bodies kept for `key` once they are stored (if still the same content).
    pub fn settle(&self, key: &VariantKey, stored: std::sync::Arc<Bodies>) {
        let mut all = self.0.write().expect("variants lock");
        if let Some(v) = all.iter_mut().find(|v| &v.key == key)
            && v.bodies.as_ref().is_some_and(|b| b.fingerprint() == stored.fingerprint())
        {
            v.bodies = Some(stored);
        }
    }

    pub fn weight(&self) -> usize {
        let all = self.0.read().expect("variants lock");
        all.iter()
            .map(|v| {
                64 + v.key.files_base.as_ref().map_or(0, String::len) + v.bodies.as_ref().map_or(0, |b| b.weight())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ProjectName;

    fn page() -> ProjectPage {
        let file = DistFile {
            filename: "p-1.0-py3-none-any.whl".into(),
            url: "http://up/p-1.0-py3-none-any.whl".into(),
            hashes: [("sha256".to_string(), "ab".repeat(32))].into(),
            requires_python: None,
            yanked: Default::default(),
            core_metadata: Some("ef".repeat(32)),
            size: Some(1),
            upload_time: Some("2024-01-01T00:00:00Z".into()),
            metadata_on_demand: false,
            provenance: None,
        };
        ProjectPage {
            name: ProjectName::parse("p").unwrap(),
            files: vec![file],
            versions: Some(vec!["1.0".into()]),
            status: None,
        }
    }

    #[test]
    fn accept_encoding_is_read_as_clients_send_it() {
        assert_eq!(Encoding::accepted(None), [true, false, false], "no header: identity");
        assert_eq!(Encoding::accepted(Some("gzip, deflate, zstd")), [true, true, true], "uv");
        assert_eq!(Encoding::accepted(Some("gzip, deflate, br")), [true, true, false], "pip");
        assert_eq!(Encoding::accepted(Some("zstd;q=0, *")), [true, true, false]);
        assert_eq!(Encoding::accepted(Some("GZIP;q=0.5")), [true, true, false]);
        assert_eq!(Encoding::accepted(Some("identity")), [true, false, false]);
    }

    #[test]
    fn each_coding_has_its_own_etag_and_the_smallest_accepted_wins() {
        let bodies = Bodies::render(&page(), None, 0).compressed().unwrap();
        let (enc, _, tag_zstd) = bodies.choose(MediaType::Json, [true, true, true]).unwrap();
        assert_eq!(enc, Encoding::Zstd);
        let (enc, _, tag_gzip) = bodies.choose(MediaType::Json, [true, true, false]).unwrap();
        assert_eq!(enc, Encoding::Gzip);
        let (enc, body, tag_id) = bodies.choose(MediaType::Json, [true, false, false]).unwrap();
        assert_eq!(enc, Encoding::Identity);
        assert_eq!(body.len, body.inline.as_ref().unwrap().len() as u64);
        assert!(tag_zstd != tag_gzip && tag_gzip != tag_id);
        assert_eq!(bodies.etags(MediaType::Json).count(), 3);
        // Stored and read back from a record's head: the same descriptors.
        let back = Bodies::from_stored(&bodies.to_stored()).unwrap();
        assert_eq!(back.fingerprint(), bodies.fingerprint());
        assert_eq!(
            back.choose(MediaType::Html, [true, true, true]).unwrap().2,
            bodies.choose(MediaType::Html, [true, true, true]).unwrap().2
        );
    }

    #[test]
    fn the_listing_finds_exactly_what_the_page_lists() {
        let model = PageModel::new(page(), 0);
        let listing = model.listing();
        let key = FileKey::Sha256("ab".repeat(32));
        assert_eq!(listing.find(&key, "p-1.0-py3-none-any.whl"), Some(Some(1_704_067_200)));
        assert_eq!(listing.find(&key, "p-1.1-py3-none-any.whl"), None);
        assert_eq!(listing.find(&FileKey::Sha256("cd".repeat(32)), "p-1.0-py3-none-any.whl"), None);
        assert_eq!(listing.metadata(&key, "p-1.0-py3-none-any.whl").as_deref(), Some("ef".repeat(32).as_str()));
        assert_eq!(listing.metadata(&key, "p-1.1-py3-none-any.whl"), None);
        assert_eq!(Listing::from_hex(&listing.to_hex(), &listing.metadata_hex()).unwrap(), listing);
        assert!(Listing::from_hex("zz", "").is_err());
    }
}
