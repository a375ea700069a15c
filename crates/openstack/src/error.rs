//! `OpenStackError`: every way a call to Keystone, Nova or Placement can fail, typed so that
//! callers can tell "not there" from "refused" from "try again later".
//!
//! The three services shape their error bodies differently; `classify` reads all three:
//! - Nova: `{"itemNotFound": {"code": 404, "message": "..."}}` (the key names the fault),
//! - Keystone: `{"error": {"code": 401, "title": "Unauthorized", "message": "..."}}`,
//! - Placement: `{"errors": [{"status": 404, "title": "...", "detail": "..."}]}`.
//!
//! Nova's *message* sometimes matters more than its status: "Compute service of fake-1 is still
//! in use." comes with 400, "Unable to force up host ... `done` evacuation migration records
//! remain" also with 400, "Cannot 'os-migrateLive' instance ... while it is in task_state ..."
//! with 409. Those get their own variants (`ServiceInUse`, `InvalidState`) because the node
//! tracker and the evacuation steps react to them differently from a plain bad request.
//!
//! Messages never carry a token or a password: the client redacts both from anything a server
//! sent back before building an error (see `redact`).

/// A failed OpenStack call. `call` names it as `"nova GET /os-services?binary=nova-compute"`.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackError {
    /// 404: the server, service, aggregate or resource provider does not exist.
    #[error("{call}: not found: {message}")]
    NotFound { call: String, message: String },
    /// 409 not covered by a more specific variant (e.g. "Aggregate 1 already has host fake-1.").
    #[error("{call}: conflict: {message}")]
    Conflict { call: String, message: String },
    /// Nova refuses because a compute service is (or may be) still alive or still holds work:
    /// evacuating from a host whose nova-compute is up ("... is still in use"), clearing
    /// forced-down while `done` evacuation migrations remain, deleting a service that hosts
    /// instances or has migrations in progress. `status` is Nova's (400 or 409).
    #[error("{call}: the compute service is still in use: {message}")]
    ServiceInUse { call: String, status: u16, message: String },
    /// The server's vm_state or task_state does not allow the action ("Cannot 'evacuate'
    /// instance ... while it is in task_state ...").
    #[error("{call}: the server's state does not allow this: {message}")]
    InvalidState { call: String, message: String },
    /// 400 not covered by a more specific variant.
    #[error("{call}: bad request: {message}")]
    BadRequest { call: String, message: String },
    /// 401: wrong credentials, or a token refused even after one re-authentication.
    #[error("{call}: unauthorized: {message}")]
    Unauthorized { call: String, message: String },
    /// 403: the user lacks the role the policy requires (the service user needs admin).
    #[error("{call}: forbidden: {message}")]
    Forbidden { call: String, message: String },
    /// 406: the service is older than the microversion this client asks for.
    #[error("{call}: microversion not supported by the service: {message}")]
    MicroversionNotSupported { call: String, message: String },
    /// 5xx (500, 502, 503, 504 ...) after the retries this request was allowed.
    #[error("{call}: server error HTTP {status}: {message}")]
    Server { call: String, status: u16, message: String },
    /// Another status this client does not expect (e.g. 405, 413, 429).
    #[error("{call}: unexpected HTTP {status}: {message}")]
    UnexpectedStatus { call: String, status: u16, message: String },
    /// The connection could not be opened, or broke before the answer was complete.
    #[error("{call}: connection failed: {message}")]
    Connect { call: String, message: String },
    /// The connect timeout or the request timeout ran out.
    #[error("{call}: timed out: {message}")]
    Timeout { call: String, message: String },
    /// A 2xx answer whose body is not what the API documents.
    #[error("{call}: unexpected answer: {message}")]
    InvalidResponse { call: String, message: String },
    /// The token's catalogue has no endpoint for this service, interface and region.
    #[error("no '{service_type}' endpoint with interface '{interface}' in region '{region}' in the Keystone catalogue")]
    EndpointNotFound { service_type: String, interface: String, region: String },
    /// The HTTP client could not be built (e.g. no TLS crypto provider installed).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl OpenStackError {
    /// The HTTP status the service answered with, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::NotFound { .. } => Some(404),
            Self::Conflict { .. } => Some(409),
            Self::ServiceInUse { status, .. } => Some(*status),
            Self::InvalidState { .. } => Some(409),
            Self::BadRequest { .. } => Some(400),
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::MicroversionNotSupported { .. } => Some(406),
            Self::Server { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::InvalidResponse { .. }
            | Self::EndpointNotFound { .. }
            | Self::Client(_) => None,
        }
    }

    /// Whether trying the same call later may succeed without anyone changing anything
    /// (server errors, connection failures, timeouts). The client already retried these a
    /// few times where that was safe; a control loop may try again at its next period.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Connect { .. } | Self::Timeout { .. })
    }
}

/// Builds the error for a non-2xx answer from its status and body.
pub(crate) fn classify(call: String, status: u16, body: &[u8]) -> OpenStackError {
    let message = error_message(body).unwrap_or_else(|| fallback_message(status, body));
    if (400..500).contains(&status) && is_service_in_use(&message) {
        return OpenStackError::ServiceInUse { call, status, message };
    }
    match status {
        400 if is_invalid_state(&message) => OpenStackError::InvalidState { call, message },
        400 => OpenStackError::BadRequest { call, message },
        401 => OpenStackError::Unauthorized { call, message },
        403 => OpenStackError::Forbidden { call, message },
        404 => OpenStackError::NotFound { call, message },
        406 => OpenStackError::MicroversionNotSupported { call, message },
        409 if is_invalid_state(&message) => OpenStackError::InvalidState { call, message },
        409 => OpenStackError::Conflict { call, message },
        500..=599 => OpenStackError::Server { call, status, message },
        _ => OpenStackError::UnexpectedStatus { call, status, message },
    }
}

/// The human message inside Nova's, Keystone's or Placement's error body.
fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    // Placement: {"errors": [{"detail": ..., "title": ...}, ...]}
    if let Some(errors) = object.get("errors").and_then(|errors| errors.as_array()) {
        let details: Vec<String> = errors
            .iter()
            .filter_map(|error| error.get("detail").or_else(|| error.get("title"))?.as_str())
            .map(placement_detail)
            .collect();
        return (!details.is_empty()).then(|| details.join("; "));
    }
    // Nova and Keystone: one key (the fault's name) holding {"message": ...}.
    if object.len() == 1 {
        let fault = object.values().next()?;
        return fault.get("message")?.as_str().map(collapse_whitespace);
    }
    None
}

/// Placement's `detail` repeats webob's generic sentence before the real one:
/// "The resource could not be found.\n\n No resource provider with uuid X found : No resource
/// provider with uuid X found  ". Keep the specific part, once.
fn placement_detail(detail: &str) -> String {
    let specific = detail.split_once("\n\n").map_or(detail, |(_, rest)| rest);
    let specific = collapse_whitespace(specific);
    match specific.split_once(" : ") {
        Some((first, second)) if first.trim() == second.trim() => first.trim().to_string(),
        _ => specific,
    }
}

fn fallback_message(status: u16, body: &[u8]) -> String {
    let text = collapse_whitespace(&String::from_utf8_lossy(body));
    if text.is_empty() {
        return reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("no message")
            .to_string();
    }
    const LIMIT: usize = 300;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Nova's ways of saying that a compute service still has (or may have) work on it.
fn is_service_in_use(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        // evacuate while the source's nova-compute is up (ComputeServiceInUse)
        "is still in use",
        // clear forced_down while `done` evacuation migrations remain
        "evacuation migration records remain",
        // delete a compute service
        "is hosting instances",
        "has in-progress migrations",
    ]
    .iter()
    .any(|pattern| message.contains(pattern))
}

/// Nova's InstanceInvalidState: "Cannot 'X' instance Y while it is in task_state Z" and
/// "Instance Y in vm_state Z. Cannot X while the instance is in this state."
fn is_invalid_state(message: &str) -> bool {
    (message.starts_with("Cannot '") && message.contains(" while it is in "))
        || message.contains("while the instance is in this state")
}

/// Replaces every occurrence of each secret in `text` with `***`.
pub(crate) fn redact(text: String, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| secret.len() >= 4)
        .fold(text, |text, secret| if text.contains(secret) { text.replace(secret, "***") } else { text })
}

/// Applies `redact` to the message of an error built from a server's answer.
pub(crate) fn redact_error(error: OpenStackError, secrets: &[&str]) -> OpenStackError {
    use OpenStackError as E;
    let clean = |text: String| redact(text, secrets);
    match error {
        E::NotFound { call, message } => E::NotFound { call, message: clean(message) },
        E::Conflict { call, message } => E::Conflict { call, message: clean(message) },
        E::ServiceInUse { call, status, message } => E::ServiceInUse { call, status, message: clean(message) },
        E::InvalidState { call, message } => E::InvalidState { call, message: clean(message) },
        E::BadRequest { call, message } => E::BadRequest { call, message: clean(message) },
        E::Unauthorized { call, message } => E::Unauthorized { call, message: clean(message) },
        E::Forbidden { call, message } => E::Forbidden { call, message: clean(message) },
        E::MicroversionNotSupported { call, message } => E::MicroversionNotSupported { call, message: clean(message) },
        E::Server { call, status, message } => E::Server { call, status, message: clean(message) },
        E::UnexpectedStatus { call, status, message } => E::UnexpectedStatus { call, status, message: clean(message) },
        E::Connect { call, message } => E::Connect { call, message: clean(message) },
        E::Timeout { call, message } => E::Timeout { call, message: clean(message) },
        E::InvalidResponse { call, message } => E::InvalidResponse { call, message: clean(message) },
        other @ (E::EndpointNotFound { .. } | E::Client(_)) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> String {
        "nova POST /servers/x/action".to_string()
    }

    #[test]
    fn nova_bad_request_becomes_bad_request_with_novas_message() {
        let body = br#"{"badRequest": {"code": 400, "message": "No updates were requested. Fields 'status' or 'forced_down' should be specified."}}"#;
        match classify(call(), 400, body) {
            OpenStackError::BadRequest { message, .. } => {
                assert_eq!(message, "No updates were requested. Fields 'status' or 'forced_down' should be specified.")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nova_item_not_found_becomes_not_found() {
        let body = br#"{"itemNotFound": {"code": 404, "message": "Instance 00000000-0000-0000-0000-000000000000 could not be found."}}"#;
        let error = classify(call(), 404, body);
        assert!(matches!(&error, OpenStackError::NotFound { message, .. } if message.starts_with("Instance 0000")));
        assert_eq!(error.status(), Some(404));
        assert!(!error.is_transient());
    }

    #[test]
    fn nova_conflicting_request_becomes_conflict() {
        let body = br#"{"conflictingRequest": {"code": 409, "message": "Aggregate 1 already has host fake-1."}}"#;
        assert!(matches!(
            classify(call(), 409, body),
            OpenStackError::Conflict { message, .. } if message == "Aggregate 1 already has host fake-1."
        ));
    }

    #[test]
    fn evacuating_from_a_live_compute_is_reported_as_service_in_use() {
        // Captured from Nova 34 (POST evacuate while fake-1's nova-compute was up).
        let body = br#"{"badRequest": {"code": 400, "message": "Compute service of fake-1 is still in use."}}"#;
        assert!(matches!(
            classify(call(), 400, body),
            OpenStackError::ServiceInUse { status: 400, message, .. } if message.contains("fake-1")
        ));
    }

    #[test]
    fn clearing_forced_down_with_done_evacuations_is_reported_as_service_in_use() {
        let body = br#"{"badRequest": {"code": 400, "message": "Unable to force up host fake-2 as `done` evacuation migration records remain associated with the host. Ensure the compute service has been restarted, allowing these records to move to `completed` before retrying this request."}}"#;
        assert!(matches!(classify(call(), 400, body), OpenStackError::ServiceInUse { .. }));
    }

    #[test]
    fn deleting_a_service_that_hosts_instances_is_reported_as_service_in_use() {
        let body = br#"{"conflictingRequest": {"code": 409, "message": "Unable to delete compute service that is hosting instances. Migrate or delete the instances first."}}"#;
        assert!(matches!(classify(call(), 409, body), OpenStackError::ServiceInUse { status: 409, .. }));
    }

    #[test]
    fn an_action_refused_in_the_current_task_state_is_reported_as_invalid_state() {
        // Captured from Nova 34 (live migration requested while the server was powering off).
        let body = br#"{"conflictingRequest": {"code": 409, "message": "Cannot 'os-migrateLive' instance e089616d-5547-4f34-abdb-df304feb25b5 while it is in task_state powering-off"}}"#;
        assert!(matches!(classify(call(), 409, body), OpenStackError::InvalidState { .. }));
    }

    #[test]
    fn keystone_unauthorized_becomes_unauthorized() {
        let body = br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#;
        assert!(matches!(
            classify("keystone POST /v3/auth/tokens".into(), 401, body),
            OpenStackError::Unauthorized { message, .. } if message == "The request you have made requires authentication."
        ));
    }

    #[test]
    fn placement_errors_keep_the_specific_detail_once() {
        let body = include_bytes!("../fixtures/placement_error_not_found.json");
        match classify("placement GET /resource_providers/0/inventories".into(), 404, body) {
            OpenStackError::NotFound { message, .. } => {
                assert_eq!(message, "No resource provider with uuid 00000000-0000-0000-0000-000000000000 found")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_microversion_is_its_own_error() {
        let body = br#"{"computeFault": {"code": 406, "message": "Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.104."}}"#;
        assert!(matches!(classify(call(), 406, body), OpenStackError::MicroversionNotSupported { .. }));
    }

    #[test]
    fn server_errors_are_transient_and_keep_a_non_json_body_short() {
        let body = "<html><body>502 Bad Gateway ".repeat(50);
        let error = classify(call(), 502, body.as_bytes());
        assert!(error.is_transient());
        match error {
            OpenStackError::Server { status: 502, message, .. } => assert!(message.chars().count() <= 301, "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(call(), 503, b""),
            OpenStackError::Server { message, .. } if message == "Service Unavailable"
        ));
    }

    #[test]
    fn redaction_removes_tokens_and_passwords_from_messages() {
        let error =
            classify(call(), 400, br#"{"badRequest": {"message": "bad token gAAAAsecret-token and pw hunter22"}}"#);
        let error = redact_error(error, &["gAAAAsecret-token", "hunter22"]);
        let printed = format!("{error} {error:?}");
        assert!(!printed.contains("gAAAAsecret-token") && !printed.contains("hunter22"), "{printed}");
    }
}
