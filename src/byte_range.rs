//! HTTP byte ranges (HDR-3): a `Range` header as the client sent it, resolved against a file's
//! length once that is known (for a file not stored, only after the upstream says it).

/// One `Range: bytes=…` header, not yet resolved against a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// `first-last` (`last` open when `None`).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// A request's `Range` header: none, one range, or one this server ignores (several ranges,
/// malformed), which still makes a miss wait for the whole stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeHeader {
    Absent,
    Single(Requested),
    Ignored,
}

impl RangeHeader {
    pub fn of(value: Option<&http::HeaderValue>) -> RangeHeader {
        match value {
            None => RangeHeader::Absent,
            Some(v) => v.to_str().ok().and_then(Requested::parse).map_or(RangeHeader::Ignored, RangeHeader::Single),
        }
    }

    pub fn is_present(self) -> bool {
        self != RangeHeader::Absent
    }

    pub fn single(self) -> Option<Requested> {
        match self {
            RangeHeader::Single(r) => Some(r),
            _ => None,
        }
    }
}

/// A request's range against a file of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

impl Requested {
    /// Single and suffix ranges. Multi-range and malformed headers are `None`: the whole file
    /// (RFC 9110 lets a server ignore Range).
    pub fn parse(value: &str) -> Option<Requested> {
        let spec = value.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.trim().split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return last.parse().ok().map(Requested::Suffix);
        }
        let start = first.parse().ok()?;
        match last {
            "" => Some(Requested::From(start, None)),
            _ => match last.parse::<u64>() {
                Ok(end) if end >= start => Some(Requested::From(start, Some(end))),
                _ => None,
            },
        }
    }

    pub fn resolve(self, len: u64) -> ByteRange {
        match self {
            Requested::Suffix(n) if n == 0 || len == 0 => ByteRange::Unsatisfiable,
            Requested::Suffix(n) => ByteRange::Part(len.saturating_sub(n), len - 1),
            Requested::From(start, _) if start >= len => ByteRange::Unsatisfiable,
            Requested::From(start, end) => ByteRange::Part(start, end.unwrap_or(u64::MAX).min(len - 1)),
        }
    }
}

/// The range a header asks of a file of `len` bytes.
pub fn resolve(value: Option<&str>, len: u64) -> ByteRange {
    value.and_then(Requested::parse).map_or(ByteRange::Whole, |r| r.resolve(len))
}

#[cfg(test)]
mod tests {
    use super::{ByteRange::*, resolve};

    #[test]
    fn hdr_3_ranges() {
        assert_eq!(resolve(None, 10), Whole);
        assert_eq!(resolve(Some("bytes=0-3"), 10), Part(0, 3));
        assert_eq!(resolve(Some("bytes=5-"), 10), Part(5, 9));
        assert_eq!(resolve(Some("bytes=-4"), 10), Part(6, 9));
        assert_eq!(resolve(Some("bytes=-40"), 10), Part(0, 9));
        assert_eq!(resolve(Some("bytes=8-100"), 10), Part(8, 9));
        assert_eq!(resolve(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-3"), 0), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(resolve(Some("bytes=5-2"), 10), Whole);
        assert_eq!(resolve(Some("items=0-1"), 10), Whole);
        assert_eq!(resolve(Some("bytes=x-1"), 10), Whole);
        assert_eq!(resolve(Some("bytes=-x"), 10), Whole);
    }
}
