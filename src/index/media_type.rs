//! Content negotiation between PEP 503 HTML and PEP 691 JSON (NEG-01 … NEG-08).
//!
//! `Accept` is parsed per RFC 9110 §12.5.1:
//! `Accept = #( media-range [ weight ] )`, `weight = OWS ";" OWS "q=" qvalue`.
//! Each offer takes the q of its most specific matching range (exact > `type/*` > `*/*`);
//! the highest q wins, ties go to JSON, then v1 HTML, then `text/html`. When only wildcards
//! matched, the answer is `text/html`, as PyPI answers curl and browsers (NEG-04).

/// One of the three representations Larder serves for index pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaType {
    Json,
    Html,
    TextHtml,
}

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const JSON_LATEST: &str = "application/vnd.pypi.simple.latest+json";
const HTML: &str = "application/vnd.pypi.simple.v1+html";
const HTML_LATEST: &str = "application/vnd.pypi.simple.latest+html";

impl MediaType {
    /// The exact Content-Type string; uv compares it byte for byte (NEG-08).
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::Json => JSON,
            MediaType::Html => "application/vnd.pypi.simple.v1+html; charset=utf-8",
            MediaType::TextHtml => "text/html; charset=utf-8",
        }
    }

    /// A short tag that makes ETags differ per representation (HDR-1).
    pub fn tag(self) -> &'static str {
        match self {
            MediaType::Json => "json",
            MediaType::Html => "v1html",
            MediaType::TextHtml => "html",
        }
    }

    pub fn is_json(self) -> bool {
        self == MediaType::Json
    }

    /// Picks a representation for an `Accept` header; `None` means 406 (NEG-05).
    /// A missing header counts as `*/*` (NEG-02).
    pub fn negotiate(accept: Option<&str>) -> Option<MediaType> {
        let accept = accept.map(str::trim).filter(|a| !a.is_empty()).unwrap_or("*/*");
        // (offer, best specificity seen, q at that specificity)
        let offers = [MediaType::Json, MediaType::Html, MediaType::TextHtml];
        let mut best: [(u8, f32); 3] = [(0, 0.0); 3];
        for element in accept.split(',') {
            let mut parts = element.split(';');
            let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
            for (i, offer) in offers.iter().enumerate() {
                let specificity = offer.matches(&range);
                // The most specific range decides; among equally specific ones, the higher q.
                if specificity > best[i].0 || (specificity == best[i].0 && specificity > 0 && q > best[i].1) {
                    best[i] = (specificity, q);
                }
            }
        }
        let mut chosen: Option<(usize, f32)> = None;
        for (i, &(spec, q)) in best.iter().enumerate() {
            if spec > 0 && q > 0.0 && chosen.is_none_or(|(_, cq)| q > cq) {
                chosen = Some((i, q));
            }
        }
        let (i, _) = chosen?;
        let any_exact = best.iter().any(|&(spec, q)| spec == 3 && q > 0.0);
        if !any_exact && best[2].0 > 0 && best[2].1 > 0.0 {
            return Some(MediaType::TextHtml);
        }
        Some(offers[i])
    }

    /// How specifically `range` matches this type: 3 exact, 2 `type/*`, 1 `*/*`, 0 not at all.
    fn matches(self, range: &str) -> u8 {
        let exact = match self {
            MediaType::Json => range == JSON || range == JSON_LATEST,
            MediaType::Html => range == HTML || range == HTML_LATEST,
            MediaType::TextHtml => range == "text/html",
        };
        if exact {
            return 3;
        }
        let major = if self == MediaType::TextHtml { "text/*" } else { "application/*" };
        if range == major {
            2
        } else if range == "*/*" {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MediaType::{self, *};

    #[test]
    fn neg_table_real_clients() {
        let cases: &[(Option<&str>, Option<MediaType>)] = &[
            // pip >= 22.2 and pdm (unearth)
            (
                Some(
                    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
                ),
                Some(Json),
            ),
            // uv
            (
                Some(
                    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
                ),
                Some(Json),
            ),
            // poetry
            (Some("application/vnd.pypi.simple.v1+json, */*;q=0.1"), Some(Json)),
            // curl, requests, pip's HEAD
            (Some("*/*"), Some(TextHtml)),
            (None, Some(TextHtml)),
            (Some(""), Some(TextHtml)),
            // a browser
            (Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), Some(TextHtml)),
            (Some("application/vnd.pypi.simple.v1+html"), Some(Html)),
            (Some("application/vnd.pypi.simple.latest+json"), Some(Json)),
            (Some("application/vnd.pypi.simple.latest+html"), Some(Html)),
            (Some("text/html"), Some(TextHtml)),
            (Some("application/vnd.pypi.simple.v1+json;q=0, text/html"), Some(TextHtml)),
            (Some("Application/Vnd.Pypi.Simple.V1+JSON ; Q=0.5, text/html;q=0.4"), Some(Json)),
            (Some("application/vnd.pypi.simple.v1+html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.5"), Some(Json)),
            // NEG-05: nothing acceptable
            (Some("application/json"), None),
            (Some("application/vnd.pypi.simple.v1+json;q=0"), None),
        ];
        for (accept, want) in cases {
            assert_eq!(MediaType::negotiate(*accept), *want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn neg_08_exact_content_types() {
        assert_eq!(Json.content_type(), "application/vnd.pypi.simple.v1+json");
        assert_eq!(Html.content_type(), "application/vnd.pypi.simple.v1+html; charset=utf-8");
        assert_eq!(TextHtml.content_type(), "text/html; charset=utf-8");
    }
}
