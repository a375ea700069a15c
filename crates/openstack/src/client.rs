//! `OpenStackClient`: one authenticated HTTP client for Nova and Placement, shared by every
//! task of a daemon.
//!
//! What each request goes through (`OpenStackClient::send`):
//! 1. a project-scoped token: reused until it is within `token_renewal_margin` of expiry, then
//!    renewed by one task while the others wait (a failed renewal falls back to the old token
//!    while it is still valid, so a Keystone blip does not stop the control loop);
//! 2. the endpoint from the token's catalogue (service type + interface + region);
//! 3. the request with `X-Auth-Token` (marked sensitive) and, for Nova and Placement, an
//!    explicit `OpenStack-API-Version` header — there is no "latest" here;
//! 4. retries with exponential backoff for connection errors, timeouts and 5xx, but only
//!    where repeating is harmless: GET/PUT/DELETE and Keystone authentication always; a POST
//!    action (evacuate, live-migrate, create) only when the connection never opened, because
//!    a 5xx or a timeout after Nova accepted an evacuation must not start a second one;
//! 5. on 401, one re-authentication and one more try (the token may have been revoked);
//! 6. every attempt logged at debug with service, method, path, status and latency — never a
//!    token, a password or a request body.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::auth::{self, Session};
use crate::error::{OpenStackError, classify, redact, redact_error};
use crate::settings::{AuthSettings, ClientOptions};
#[cfg(feature = "testing")]
use aos_config::Secret;

const AUTH_TOKEN_HEADER: &str = "X-Auth-Token";
const SUBJECT_TOKEN_HEADER: &str = "X-Subject-Token";
const MICROVERSION_HEADER: &str = "OpenStack-API-Version";

/// How long an idle connection to Keystone, Nova or Placement may wait in the pool for reuse:
/// under the keep-alive timeout of the usual WSGI servers and proxies (gunicorn 2 s, Apache
/// 5 s, uWSGI/haproxy more), so that we never write a request on a connection the server is
/// closing. Bursts (a recovery's requests) still share connections.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The services this client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Identity,
    Compute,
    Placement,
    Image,
}

impl Service {
    /// Name used in logs and error messages.
    fn name(self) -> &'static str {
        match self {
            Service::Identity => "keystone",
            Service::Compute => "nova",
            Service::Placement => "placement",
            Service::Image => "glance",
        }
    }

    /// Catalogue service type.
    fn catalog_type(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Compute => "compute",
            Service::Placement => "placement",
            Service::Image => "image",
        }
    }

    /// The service name inside `OpenStack-API-Version`.
    fn microversion_service(self) -> Option<&'static str> {
        match self {
            Service::Compute => Some("compute"),
            Service::Placement => Some("placement"),
            Service::Identity | Service::Image => None,
        }
    }
}

/// One API request, relative to its service's endpoint. Deliberately not `Debug`: the body
/// of an authentication request holds the password.
pub(crate) struct ApiRequest {
    pub service: Service,
    pub method: Method,
    /// Path below the endpoint, e.g. `/os-services`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// `"2.53"` for Nova, `"1.29"` for Placement.
    pub microversion: Option<&'static str>,
    pub body: Option<serde_json::Value>,
}

impl ApiRequest {
    pub(crate) fn new(service: Service, method: Method, path: impl Into<String>) -> Self {
        Self { service, method, path: path.into(), query: Vec::new(), microversion: None, body: None }
    }

    pub(crate) fn microversion(mut self, version: &'static str) -> Self {
        self.microversion = Some(version);
        self
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub(crate) fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Repeating the request cannot do anything twice.
    fn is_idempotent(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE)
            // Authenticating twice only issues two tokens.
            || self.service == Service::Identity
    }

    /// `path?query` as logged and shown in errors (query values are ids and host names).
    fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.query {
            serializer.append_pair(key, value);
        }
        format!("{}?{}", self.path, serializer.finish())
    }

    /// `"nova GET /os-services?binary=nova-compute"`.
    pub(crate) fn describe(&self) -> String {
        format!("{} {} {}", self.service.name(), self.method, self.path_and_query())
    }
}

/// A 2xx answer.
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    call: String,
}

impl ApiResponse {
    /// The body as `T`, or `InvalidResponse` naming the call.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, OpenStackError> {
        serde_json::from_slice(&self.body).map_err(|error| OpenStackError::InvalidResponse {
            call: self.call.clone(),
            message: format!("cannot decode the body: {error}"),
        })
    }
}

/// How long to keep using a still-valid token after a failed renewal before trying again.
const RENEWAL_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// The token in use, if any, and when renewing it may be tried again after a failure.
#[derive(Default)]
struct SessionSlot {
    session: Option<Arc<Session>>,
    retry_renewal_at: Option<Instant>,
}

/// Authenticated client for Keystone, Nova and Placement. Cheap to clone (one `Arc`); clones
/// share the connection pool and the token.
#[derive(Clone)]
pub struct OpenStackClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: AuthSettings,
    options: ClientOptions,
    session: Mutex<SessionSlot>,
    generations: AtomicU64,
}

impl fmt::Debug for OpenStackClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        formatter
            .debug_struct("OpenStackClient")
            .field("auth_url", &settings.auth_url.as_str())
            .field("username", &settings.username)
            .field("project_name", &settings.project_name)
            .field("region_name", &settings.region_name)
            .field("interface", &settings.interface)
            .finish_non_exhaustive()
    }
}

impl OpenStackClient {
    /// Authenticates with the default [`ClientOptions`]; see [`Self::connect_with`].
    pub async fn connect(settings: AuthSettings) -> Result<Self, OpenStackError> {
        Self::connect_with(settings, ClientOptions::default()).await
    }

    /// Builds the HTTP client, authenticates once and checks that the catalogue has Nova and
    /// Placement endpoints for the configured interface and region, so that a wrong password,
    /// region or interface fails here rather than at the first failover.
    ///
    /// TLS uses the process-wide rustls crypto provider, which every binary installs at start
    /// (`rustls::crypto::ring::default_provider().install_default()`); tests must too.
    pub async fn connect_with(settings: AuthSettings, options: ClientOptions) -> Result<Self, OpenStackError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // An idle connection is not reused after POOL_IDLE_TIMEOUT: WSGI servers in front
            // of the APIs close idle keep-alive connections early (gunicorn after 2 s), and a
            // request written the moment the server closes fails with "connection closed
            // before message completed" — which a POST (evacuate, create) cannot retry.
            .pool_idle_timeout(crate::client::POOL_IDLE_TIMEOUT)
            // A redirect would carry X-Auth-Token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aos-cloud-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| OpenStackError::Client(error_chain(&error)))?;
        let client = Self {
            inner: Arc::new(Inner {
                http,
                settings,
                options,
                session: Mutex::new(SessionSlot::default()),
                generations: AtomicU64::new(0),
            }),
        };
        let session = client.session().await?;
        for service in [Service::Compute, Service::Placement] {
            client.endpoint(&session, service)?;
        }
        Ok(client)
    }

    /// The settings this client authenticates with (the password stays a `Secret`).
    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// Sends `request` and returns its 2xx answer; any other outcome is an error.
    pub(crate) async fn send(&self, request: &ApiRequest) -> Result<ApiResponse, OpenStackError> {
        let mut reauthenticated = false;
        loop {
            let session = self.session().await?;
            let base = self.endpoint(&session, request.service)?;
            let answer = self.send_with_retries(request, &base, Some(&session)).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !reauthenticated {
                tracing::debug!(call = %request.describe(), "token refused; authenticating again");
                self.forget_session(session.generation).await;
                reauthenticated = true;
                continue;
            }
            return self.check(answer, Some(&session));
        }
    }

    /// Sends `request` and decodes its 2xx body as `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<T, OpenStackError> {
        self.send(request).await?.json()
    }

    fn endpoint(&self, session: &Session, service: Service) -> Result<url::Url, OpenStackError> {
        let settings = &self.inner.settings;
        session.catalog.endpoint(service.catalog_type(), settings.interface, &settings.region_name)
    }

    /// The current session, authenticating first when there is none or it is due for renewal.
    /// One task renews while the others wait on the lock. When renewal fails and the old
    /// token is still valid, the old token is used and renewal is tried again only after
    /// `RENEWAL_RETRY_INTERVAL`, so a Keystone outage does not slow every call.
    async fn session(&self) -> Result<Arc<Session>, OpenStackError> {
        let mut slot = self.inner.session.lock().await;
        let now = Utc::now();
        if let Some(session) = &slot.session {
            let due = auth::needs_renewal(
                now,
                session.issued_at,
                session.expires_at,
                self.inner.options.token_renewal_margin,
            );
            let still_valid = session.expires_at > now + chrono::TimeDelta::seconds(30);
            let backing_off = slot.retry_renewal_at.is_some_and(|at| Instant::now() < at);
            if !due || (still_valid && backing_off) {
                return Ok(Arc::clone(session));
            }
        }
        match self.authenticate().await {
            Ok(session) => {
                let session = Arc::new(session);
                slot.session = Some(Arc::clone(&session));
                slot.retry_renewal_at = None;
                Ok(session)
            }
            Err(error) => match &slot.session {
                Some(old) if old.expires_at > now + chrono::TimeDelta::seconds(30) => {
                    tracing::warn!(%error, expires_at = %old.expires_at, "token renewal failed; using the current token meanwhile");
                    let old = Arc::clone(old);
                    slot.retry_renewal_at = Some(Instant::now() + RENEWAL_RETRY_INTERVAL);
                    Ok(old)
                }
                _ => Err(error),
            },
        }
    }

    /// Drops the session if it is still the one with `generation` (another task may have
    /// renewed it already).
    async fn forget_session(&self, generation: u64) {
        let mut slot = self.inner.session.lock().await;
        if slot.session.as_ref().is_some_and(|session| session.generation == generation) {
            *slot = SessionSlot::default();
        }
    }

    /// `POST /v3/auth/tokens` with the password, scoped to the project.
    async fn authenticate(&self) -> Result<Session, OpenStackError> {
        let settings = &self.inner.settings;
        let request =
            ApiRequest::new(Service::Identity, Method::POST, "/auth/tokens").json(auth::password_auth_body(settings));
        let tokens_url = auth::tokens_url(&settings.auth_url);
        let base = tokens_url.trim_end_matches("/auth/tokens").parse::<url::Url>().map_err(|error| {
            OpenStackError::Client(format!("auth_url {} is not a valid URL: {error}", settings.auth_url))
        })?;
        let answer = self.send_with_retries(&request, &base, None).await?;
        let answer = self.check(answer, None)?;
        let token = answer
            .headers
            .get(SUBJECT_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| OpenStackError::InvalidResponse {
                call: request.describe(),
                message: format!("no {SUBJECT_TOKEN_HEADER} header in Keystone's answer"),
            })?
            .to_string();
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let session = auth::parse_token_response(token, &answer.body, Utc::now(), generation).map_err(|message| {
            OpenStackError::InvalidResponse { call: request.describe(), message: format!("token body: {message}") }
        })?;
        tracing::debug!(expires_at = %session.expires_at, generation, "authenticated with Keystone");
        Ok(session)
    }

    /// Turns a non-2xx answer into its error (secrets redacted).
    fn check(&self, answer: ApiResponse, session: Option<&Session>) -> Result<ApiResponse, OpenStackError> {
        if answer.status.is_success() {
            return Ok(answer);
        }
        let error = classify(answer.call.clone(), answer.status.as_u16(), &answer.body);
        Err(redact_error(error, &self.secrets(session)))
    }

    fn secrets<'a>(&'a self, session: Option<&'a Session>) -> Vec<&'a str> {
        let mut secrets = vec![self.inner.settings.password.expose().as_str()];
        if let Some(session) = session {
            secrets.push(session.token.expose().as_str());
        }
        secrets
    }

    /// One request with the retry policy described in the module header. Returns any answer
    /// the server gave (including 4xx and, once retries are spent, 5xx); errors only for
    /// transport failures.
    async fn send_with_retries(
        &self,
        request: &ApiRequest,
        base: &url::Url,
        session: Option<&Session>,
    ) -> Result<ApiResponse, OpenStackError> {
        let url = format!("{}{}", base.as_str().trim_end_matches('/'), request.path);
        let mut url =
            url::Url::parse(&url).map_err(|error| OpenStackError::Client(format!("bad URL {url}: {error}")))?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(request.query.iter().map(|(key, value)| (*key, value.as_str())));
        }
        let call = request.describe();
        let body = request.body.as_ref().map(|body| serde_json::to_vec(body).expect("a JSON value serializes"));
        let attempts = self.inner.options.attempts.max(1);
        let mut attempt = 1;
        loop {
            let mut builder = self.inner.http.request(request.method.clone(), url.clone());
            if let Some(session) = session {
                let mut token =
                    HeaderValue::from_str(session.token.expose()).map_err(|_| OpenStackError::InvalidResponse {
                        call: call.clone(),
                        message: "Keystone returned a token that is not a valid header value".into(),
                    })?;
                token.set_sensitive(true);
                builder = builder.header(AUTH_TOKEN_HEADER, token);
            }
            if let (Some(service), Some(version)) = (request.service.microversion_service(), request.microversion) {
                builder = builder.header(MICROVERSION_HEADER, format!("{service} {version}"));
            }
            if let Some(body) = &body {
                builder = builder.header(CONTENT_TYPE, "application/json").body(body.clone());
            }
            let started = Instant::now();
            let outcome = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.bytes().await.map(|bytes| (status, headers, bytes.to_vec()))
                }
                Err(error) => Err(error),
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let retry_delay = self.retry_delay(attempt);
            record_call_metrics(request, started.elapsed(), outcome.as_ref().map(|(status, _, _)| *status));
            match outcome {
                Ok((status, headers, body)) => {
                    tracing::debug!(
                        service = request.service.name(),
                        method = %request.method,
                        path = %request.path_and_query(),
                        microversion = request.microversion.unwrap_or(""),
                        status = status.as_u16(),
                        latency_ms,
                        attempt,
                        "openstack call"
                    );
                    if status.is_server_error() && request.is_idempotent() && attempt < attempts {
                        tracing::info!(call = %call, status = status.as_u16(), attempt, ?retry_delay, "server error; retrying");
                        tokio::time::sleep(retry_delay).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok(ApiResponse { status, headers, body, call });
                }
                Err(error) => {
                    let message = redact(error_chain(&error), &self.secrets(session));
                    tracing::debug!(
                        service = request.service.name(),
                        method = %request.method,
                        path = %request.path_and_query(),
                        latency_ms,
                        attempt,
                        error = %message,
                        "openstack call failed"
                    );
                    // A connect error means nothing reached the server: safe for any method.
                    let may_retry = error.is_connect() || request.is_idempotent();
                    if may_retry && attempt < attempts {
                        tracing::info!(call = %call, error = %message, attempt, ?retry_delay, "transport error; retrying");
                        tokio::time::sleep(retry_delay).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(if error.is_timeout() {
                        OpenStackError::Timeout { call, message }
                    } else {
                        OpenStackError::Connect { call, message }
                    });
                }
            }
        }
    }

    /// `retry_base_delay`, doubled per attempt, at most 8 s.
    fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.inner.options.retry_base_delay.saturating_mul(factor).min(Duration::from_secs(8))
    }

    /// The current token, for tests that check it never reaches a log line or an error.
    #[cfg(feature = "testing")]
    pub async fn token_for_tests(&self) -> Result<Secret<String>, OpenStackError> {
        Ok(self.session().await?.token.clone())
    }

    /// Revokes the current token at Keystone (`DELETE /v3/auth/tokens`) but keeps using it,
    /// so that the next call meets a 401 and exercises the re-authentication path.
    #[cfg(feature = "testing")]
    pub async fn revoke_token_keep_cached(&self) -> Result<(), OpenStackError> {
        let session = self.session().await?;
        let request = ApiRequest::new(Service::Identity, Method::DELETE, "/auth/tokens");
        let tokens_url = auth::tokens_url(&self.inner.settings.auth_url);
        let url: url::Url = tokens_url.parse().map_err(|_| OpenStackError::Client("bad auth_url".into()))?;
        let mut token = HeaderValue::from_str(session.token.expose()).expect("token is a header value");
        token.set_sensitive(true);
        let response = self
            .inner
            .http
            .delete(url)
            .header(AUTH_TOKEN_HEADER, token.clone())
            .header(SUBJECT_TOKEN_HEADER, token)
            .send()
            .await
            .map_err(|error| OpenStackError::Connect { call: request.describe(), message: error_chain(&error) })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(classify(request.describe(), status.as_u16(), &body));
        }
        Ok(())
    }
}

/// An id as one URL path segment: ids are UUIDs or integers, but never let one add a path
/// component or a query.
pub(crate) fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// An error and its sources in one line (reqwest names the URL: never one with a secret).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Prometheus metrics of one HTTP attempt (exported by the daemons' `/metrics`):
/// `aos_openstack_requests_total{service,method,code}` (code: `2xx`…`5xx`, or `transport`),
/// `aos_openstack_request_duration_seconds{service,method}`, and
/// `aos_openstack_errors_total{service,kind}` for 5xx answers, timeouts and connection failures.
fn record_call_metrics(request: &ApiRequest, took: Duration, outcome: Result<reqwest::StatusCode, &reqwest::Error>) {
    let service = request.service.name();
    let method = request.method.as_str().to_owned();
    metrics::histogram!("aos_openstack_request_duration_seconds", "service" => service, "method" => method.clone())
        .record(took.as_secs_f64());
    let code = match outcome {
        Ok(status) => format!("{}xx", status.as_u16() / 100),
        Err(_) => "transport".to_owned(),
    };
    metrics::counter!("aos_openstack_requests_total", "service" => service, "method" => method, "code" => code)
        .increment(1);
    let error_kind = match outcome {
        Ok(status) if status.is_server_error() => Some("server_error"),
        Ok(_) => None,
        Err(error) if error.is_timeout() => Some("timeout"),
        Err(_) => Some("connect"),
    };
    if let Some(kind) = error_kind {
        metrics::counter!("aos_openstack_errors_total", "service" => service, "kind" => kind).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_cannot_act_twice_count_as_idempotent() {
        let get = ApiRequest::new(Service::Compute, Method::GET, "/servers/detail");
        let put = ApiRequest::new(Service::Compute, Method::PUT, "/os-services/x");
        let action = ApiRequest::new(Service::Compute, Method::POST, "/servers/x/action");
        let auth = ApiRequest::new(Service::Identity, Method::POST, "/auth/tokens");
        assert!(get.is_idempotent() && put.is_idempotent() && auth.is_idempotent());
        assert!(!action.is_idempotent());
    }

    #[test]
    fn a_call_is_described_with_service_method_path_and_query() {
        let request = ApiRequest::new(Service::Compute, Method::GET, "/servers/detail")
            .query("all_tenants", "1")
            .query("host", "fake-1");
        assert_eq!(request.describe(), "nova GET /servers/detail?all_tenants=1&host=fake-1");
    }
}
