//! Request extractors whose rejections are 400s in OpenStack's shape that name the offending
//! field: `ApiJson<T>` for bodies (malformed JSON with line and column; a wrong type, a
//! missing or an unknown field with its path, e.g. `evacuate.dry_run`), `ApiQuery<T>` for
//! query strings (the parameter's name).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted (actions are a few hundred bytes).
const BODY_LIMIT: usize = 64 * 1024;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = request.headers().get(axum::http::header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or("");
            if !content_type.starts_with("application/json") {
                return Err(ApiError::BadRequest(format!(
                    "the request body must be application/json, not {content_type:?}"
                )));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|error| ApiError::BadRequest(format!("cannot read the request body: {error}")))?;
        if bytes.len() > BODY_LIMIT {
            return Err(ApiError::BadRequest(format!("the request body is larger than {BODY_LIMIT} bytes")));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`, naming what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request body is empty; a JSON object is expected".into()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("malformed JSON in the request body: {inner}"))
        } else if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid request body: {}", strip_position(&inner.to_string())))
        } else {
            ApiError::BadRequest(format!("invalid field `{path}`: {}", strip_position(&inner.to_string())))
        }
    })?;
    deserializer.end().map_err(|error| ApiError::BadRequest(format!("malformed JSON in the request body: {error}")))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 27" to type errors; the field path says more.
fn strip_position(message: &str) -> &str {
    message.rsplit_once(" at line ").map_or(message, |(head, _)| head)
}

pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(ApiQuery).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." || path.is_empty() {
                ApiError::BadRequest(format!("invalid query string: {inner}"))
            } else {
                ApiError::BadRequest(format!("invalid query parameter `{path}`: {inner}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Evacuate {
        #[allow(dead_code)]
        dry_run: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        evacuate: Evacuate,
    }

    fn message(result: Result<Body, ApiError>) -> String {
        match result.unwrap_err() {
            ApiError::BadRequest(message) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let text = message(parse_json(br#"{"evacuate": {"dry_run": "yes"}}"#));
        assert!(text.contains("`evacuate.dry_run`") && text.contains("expected a boolean"), "{text}");
    }

    #[test]
    fn malformed_json_says_where() {
        let text = message(parse_json(br#"{"evacuate": {"dry_run": tru"#));
        assert!(text.starts_with("malformed JSON") && text.contains("line 1"), "{text}");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let text = message(parse_json(br#"{"evacuate": {"dry_run": true, "force": 1}}"#));
        assert!(text.contains("force"), "{text}");
        let text = message(parse_json(br#"{"evacuate": {}}"#));
        assert!(text.contains("dry_run"), "{text}");
        let text = message(parse_json(b"  "));
        assert!(text.contains("empty"), "{text}");
    }
}
