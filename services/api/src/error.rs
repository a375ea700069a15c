//! `ApiError`: every error the API answers with, in OpenStack's JSON shape — one key naming
//! the fault, holding the HTTP code and a message for a human, as Nova answers
//! (`{"itemNotFound": {"code": 404, "message": "..."}}`), so python-openstackclient and our own
//! `aos_openstack` error classification read it like any other OpenStack service's.
//!
//! Messages say what was wrong and name the field, the node, the marker; an internal error
//! says only that it happened and gives the request id, under which the cause is logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: malformed JSON, a wrong type, an unknown field, a bad query parameter.
    BadRequest(String),
    /// 401: no token, or Keystone does not accept it.
    Unauthorized(String),
    /// 403: the policy denies the action to this token's roles.
    Forbidden(String),
    /// 404: no such resource (or route).
    NotFound(String),
    /// 405: the route exists, the method does not.
    MethodNotAllowed(String),
    /// 409: the resource's state does not allow the action now.
    Conflict(String),
    /// 503: a dependency (Keystone, the database, OpenStack) cannot be reached.
    ServiceUnavailable(String),
    /// 500: a bug or an unexpected failure; the message is logged, not returned.
    Internal(String),
}

/// The body of every error, for the OpenAPI document: one key naming the fault
/// (`badRequest`, `unauthorized`, `forbidden`, `itemNotFound`, `conflictingRequest`, ...).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    #[schema(rename = "<fault>")]
    fault: Fault,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Fault {
    code: u16,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The fault name Nova uses for this status.
    fn fault(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "badRequest",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "itemNotFound",
            ApiError::MethodNotAllowed(_) => "methodNotAllowed",
            ApiError::Conflict(_) => "conflictingRequest",
            ApiError::ServiceUnavailable(_) => "serviceUnavailable",
            ApiError::Internal(_) => "computeFault",
        }
    }

    /// An unexpected failure: logged here with its cause, answered as a bare 500.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(message)
            | ApiError::Unauthorized(message)
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::MethodNotAllowed(message)
            | ApiError::Conflict(message)
            | ApiError::ServiceUnavailable(message)
            | ApiError::Internal(message) => formatter.write_str(message),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(error: sea_orm::DbErr) -> Self {
        ApiError::internal(format!("database: {error}"))
    }
}

impl From<aos_db::DbError> for ApiError {
    fn from(error: aos_db::DbError) -> Self {
        ApiError::internal(format!("database: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "The server has either erred or is incapable of performing the requested operation; the \
                 x-openstack-request-id of this answer finds the cause in the API's log."
                    .to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ self.fault(): { "code": status.as_u16(), "message": message } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // keystonemiddleware's hint where to get a token.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Keystone"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_openstacks_shape_with_code_and_message() {
        let response = ApiError::NotFound("no node named \"x\"".into()).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 10_000).await.unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["itemNotFound"]["code"], 404);
        assert_eq!(value["itemNotFound"]["message"], "no node named \"x\"");
    }

    #[tokio::test]
    async fn an_internal_error_does_not_leak_its_cause() {
        let response = ApiError::internal("database: password=hunter2 refused").into_response();
        let body = axum::body::to_bytes(response.into_body(), 10_000).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("computeFault"), "{text}");
    }
}
