//! The one response body type, and its constructors.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;

use crate::store::ByteStream;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn stream(s: ByteStream) -> Body {
    BodyExt::boxed_unsync(StreamBody::new(s.map_ok(Frame::data)))
}

/// A JSON request body of at most `max` bytes: 413 past it, 400 when it does not parse.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    body: hyper::body::Incoming,
    max: usize,
) -> Result<T, super::error::HttpError> {
    use super::error::HttpError;
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => HttpError::body_too_large(max),
            None => HttpError::bad_request(format!("cannot read the request body: {e}")),
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::bad_request(format!("the request body is not the JSON expected: {e}")))
}
