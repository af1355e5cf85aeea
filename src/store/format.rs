//! The store's format version (issue 27): every store, a data dir or a bucket, carries one small
//! record, `store-format`, naming the layout of the blobs and records it holds. A Larder opens a
//! store of its own format or an older one (upgrading it in place), and refuses one written by a
//! newer Larder rather than misread it. Bundles carry their own version (`bundle.rs`), not this.

use serde::{Deserialize, Serialize};

use super::{Error, Store};

/// The record's key; `cache::records` knows it as `RecordKey::StoreFormat`.
pub const KEY: &str = "store-format";

/// The format this Larder writes. 1: blobs by sha256, records as `cache::records` describes them;
/// every store written before the stamp existed (releases up to 0.1.0) is format 1 too. A change
/// that an older Larder would misread raises it, adds an upgrade step to `upgrade`, and adds a
/// golden store to `tests/fixtures/` (scripts/golden-store).
pub const CURRENT: u32 = 1;

const MAX_LEN: usize = 4096;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stamp {
    pub format: u32,
    /// Which Larder wrote the stamp, for the refusal message.
    pub written_by: String,
}

impl Stamp {
    fn current() -> Stamp {
        Stamp { format: CURRENT, written_by: format!("larder {}", env!("CARGO_PKG_VERSION")) }
    }
}

/// Parses and checks a stamp (bounded: it is read before anything else is trusted). Lenient
/// about everything but the number: a later Larder may write other fields, or none but
/// `format`, and must still be recognised as newer rather than taken for damage.
pub fn decode(body: &[u8]) -> Result<Stamp, String> {
    #[derive(Deserialize)]
    struct Lenient {
        format: u32,
        #[serde(default)]
        written_by: Option<String>,
    }
    if body.len() > MAX_LEN {
        let format = serde_json::from_slice::<Lenient>(body).map(|l| l.format).ok();
        return match format {
            Some(format) if format > CURRENT => Ok(Stamp { format, written_by: "an unknown Larder".into() }),
            _ => Err(format!("the store-format record is {} bytes (at most {MAX_LEN})", body.len())),
        };
    }
    let stamp: Lenient =
        serde_json::from_slice(body).map_err(|e| format!("the store-format record does not parse: {e}"))?;
    if stamp.format == 0 {
        return Err("the store-format record names format 0".into());
    }
    let written_by = stamp.written_by.unwrap_or_else(|| "an unknown Larder".into());
    Ok(Stamp { format: stamp.format, written_by: written_by.chars().take(100).collect() })
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the store at {location} was written by a newer Larder ({written_by}, store format {found}); this \
         Larder ({ours}) reads store formats up to {CURRENT}: run that release or a later one, or give this \
         one another data dir (or bucket prefix)"
    )]
    Newer { location: String, written_by: String, found: u32, ours: String },
    #[error("the store at {location} has an unreadable format stamp: {reason}; `larder verify --repair` rewrites it")]
    Unreadable { location: String, reason: String },
    #[error(transparent)]
    Store(#[from] Error),
}

/// What `check` found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// The stamp says this format.
    Current,
    /// No stamp (a store from before stamps, or a new one): stamped now.
    Stamped,
    /// An older format, upgraded to this one.
    Upgraded { from: u32 },
}

/// Reads the stamp without writing anything (`larder verify` without `--repair`): `None` for a
/// store without one; refuses a newer or unreadable one as `check` does.
pub async fn read(store: &dyn Store) -> Result<Option<Stamp>, Refused> {
    match store.get_record(KEY).await? {
        None => Ok(None),
        Some(body) => accept(store, &body).map(Some),
    }
}

/// A stamp this Larder can open: decoded, and not of a newer format.
fn accept(store: &dyn Store, body: &[u8]) -> Result<Stamp, Refused> {
    let stamp = decode(body).map_err(|reason| Refused::Unreadable { location: store.location(), reason })?;
    if stamp.format > CURRENT {
        return Err(Refused::Newer {
            location: store.location(),
            written_by: stamp.written_by,
            found: stamp.format,
            ours: format!("larder {}", env!("CARGO_PKG_VERSION")),
        });
    }
    Ok(stamp)
}

/// Reads the stamp; stamps a store that has none; upgrades an older one; refuses a newer one.
pub async fn check(store: &dyn Store) -> Result<Opened, Refused> {
    for _ in 0..5 {
        let current = store.get_record_versioned(KEY).await?;
        let (opened, version) = match &current {
            None => (Opened::Stamped, None),
            Some((body, version)) => {
                let stamp = accept(store, body)?;
                if stamp.format == CURRENT {
                    return Ok(Opened::Current);
                }
                upgrade(store, stamp.format).await?;
                (Opened::Upgraded { from: stamp.format }, Some(version.as_str()))
            }
        };
        let body = serde_json::to_vec(&Stamp::current()).expect("a stamp serializes");
        // Replicas opening one bucket at once: the first write wins, the others read it again.
        if store.put_record_if(KEY, body, version).await?.is_some() {
            return Ok(opened);
        }
    }
    Err(Refused::Store(Error::Unreachable {
        what: KEY.into(),
        reason: "the format stamp kept changing while it was written".into(),
    }))
}

/// Rewrites what format `from` holds into the current format. Format 1 is the first; there is
/// nothing older to upgrade yet.
async fn upgrade(_store: &dyn Store, from: u32) -> Result<(), Error> {
    debug_assert!(from < CURRENT);
    Ok(())
}

/// Writes the current stamp whatever is there (`larder verify --repair` of an unreadable one).
pub async fn restamp(store: &dyn Store) -> Result<(), Error> {
    store.put_record(KEY, serde_json::to_vec(&Stamp::current()).expect("a stamp serializes")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, super::super::LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::LocalStore::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_store_without_a_stamp_is_stamped_and_then_current() {
        let (_dir, store) = store().await;
        assert_eq!(check(&store).await.unwrap(), Opened::Stamped);
        let stamp = decode(&store.get_record(KEY).await.unwrap().unwrap()).unwrap();
        assert_eq!(stamp.format, CURRENT);
        assert!(stamp.written_by.starts_with("larder "));
        assert_eq!(check(&store).await.unwrap(), Opened::Current);
    }

    #[tokio::test]
    async fn a_newer_format_is_refused_with_what_to_do() {
        let (_dir, store) = store().await;
        let newer = format!(r#"{{"format":{},"written_by":"larder 9.0.0"}}"#, CURRENT + 1);
        store.put_record(KEY, newer.clone().into_bytes()).await.unwrap();
        let err = check(&store).await.unwrap_err().to_string();
        assert!(err.contains("newer Larder (larder 9.0.0, store format 2)"), "{err}");
        assert!(err.contains("reads store formats up to 1"), "{err}");
        // Refused means untouched.
        assert_eq!(store.get_record(KEY).await.unwrap().unwrap(), newer.into_bytes());
    }

    #[tokio::test]
    async fn a_later_stamp_of_another_shape_is_still_newer_not_damage() {
        let (_dir, store) = store().await;
        let long = format!(r#"{{"format":7,"notes":"{}"}}"#, "x".repeat(MAX_LEN));
        for newer in [r#"{"format":7}"#.to_string(), r#"{"format":7,"written_by":"larder 3","more":[1]}"#.into(), long]
        {
            store.put_record(KEY, newer.clone().into_bytes()).await.unwrap();
            let err = check(&store).await.unwrap_err();
            assert!(matches!(err, Refused::Newer { found: 7, .. }), "{err}");
            assert!(matches!(read(&store).await, Err(Refused::Newer { found: 7, .. })));
        }
    }

    #[tokio::test]
    async fn an_unreadable_stamp_is_refused_not_overwritten() {
        let (_dir, store) = store().await;
        for bad in [&b"not json"[..], br#"{"format":0,"written_by":"x"}"#, &[b' '; MAX_LEN + 1]] {
            store.put_record(KEY, bad.to_vec()).await.unwrap();
            let err = check(&store).await.unwrap_err().to_string();
            assert!(err.contains("unreadable format stamp") && err.contains("verify --repair"), "{err}");
            assert_eq!(store.get_record(KEY).await.unwrap().unwrap(), bad);
        }
        restamp(&store).await.unwrap();
        assert_eq!(check(&store).await.unwrap(), Opened::Current);
    }
}
