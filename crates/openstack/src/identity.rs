//! `IdentityClient`: Keystone v3 as an identity service rather than as a way to reach Nova —
//! validating the tokens users send to our API (what keystonemiddleware's `auth_token` does
//! for Python services) and managing the catalogue entries of our own service
//! (`aos-cloud-manager keystone register`).
//!
//! Why a client of its own next to [`crate::OpenStackClient`]: that client insists on Nova and
//! Placement endpoints in its catalogue (a control loop without them is misconfigured), talks
//! to the catalogue's endpoints, and never needs a second token in a request. Validation needs
//! the identity endpoint only (the configured `auth_url`, as keystonemiddleware's password
//! plugin uses), must work before Nova is registered (the API daemon starts first on a fresh
//! controller), and sends two tokens: ours in `X-Auth-Token`, the user's in `X-Subject-Token`.
//! The pieces both share are the pure ones in `auth.rs` and `error.rs` (the password request,
//! token parsing, renewal rule, error classification and redaction).
//!
//! Like the other client: the service token is renewed before expiry by one task while the
//! others wait, a 401 on a call triggers one re-authentication, GETs are retried on transport
//! errors, and no token or password ever reaches a log line or an error message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use aos_config::{EndpointInterface, Secret};

use crate::auth::{self, Session};
use crate::error::{OpenStackError, classify, redact, redact_error};
use crate::settings::{AuthSettings, ClientOptions};
use crate::time::parse_timestamp;

const AUTH_TOKEN_HEADER: &str = "X-Auth-Token";
const SUBJECT_TOKEN_HEADER: &str = "X-Subject-Token";

/// Who a valid token belongs to and what it allows, as Keystone answered
/// `GET /v3/auth/tokens`. Only the fields a policy or an audit record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: String,
    /// Empty for a domain- or system-scoped token.
    pub project_id: String,
    pub project_name: String,
    /// Role names, lower-case as Keystone stores them.
    pub roles: Vec<String>,
    /// A system-scoped token (`system: {all: true}`), which oslo.policy treats as `system_scope:all`.
    pub system_scope: bool,
    pub expires_at: DateTime<Utc>,
}

/// A token issued to a user by password authentication (tests and tools; the API never issues
/// tokens).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Secret<String>,
    pub info: TokenInfo,
}

#[derive(Deserialize)]
struct ValidationBody {
    token: ValidationToken,
}

#[derive(Deserialize)]
struct ValidationToken {
    expires_at: String,
    user: Named,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<NamedRole>,
    #[serde(default)]
    system: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    domain: Option<DomainRef>,
}

#[derive(Deserialize)]
struct DomainRef {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct NamedRole {
    name: String,
}

/// Reads the body of a token validation or issue answer.
pub(crate) fn parse_token_info(body: &[u8]) -> Result<TokenInfo, String> {
    let body: ValidationBody = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    let token = body.token;
    let expires_at =
        parse_timestamp(&token.expires_at).ok_or_else(|| format!("unreadable expires_at {:?}", token.expires_at))?;
    let (project_id, project_name) = token.project.map(|project| (project.id, project.name)).unwrap_or_default();
    Ok(TokenInfo {
        user_id: token.user.id,
        user_name: token.user.name,
        user_domain_id: token.user.domain.map(|domain| domain.id).unwrap_or_default(),
        project_id,
        project_name,
        roles: token.roles.into_iter().map(|role| role.name.to_ascii_lowercase()).collect(),
        system_scope: token.system.is_some(),
        expires_at,
    })
}

/// A service in Keystone's catalogue (`GET /v3/services`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogServiceRecord {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// An endpoint of a service (`GET /v3/endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    #[serde(default)]
    pub region_id: Option<String>,
    pub url: String,
}

/// What [`IdentityClient::register_service`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterReport {
    pub service_id: String,
    pub service_created: bool,
    /// `(interface, url)` created.
    pub endpoints_created: Vec<(String, String)>,
    /// `(interface, old url, new url)`.
    pub endpoints_updated: Vec<(String, String, String)>,
    /// Interfaces whose endpoint already had the asked URL.
    pub endpoints_unchanged: Vec<String>,
}

/// The catalogue entry `keystone register` makes.
#[derive(Debug, Clone)]
pub struct ServiceRegistration {
    pub name: String,
    pub service_type: String,
    pub description: String,
    /// Empty: endpoints without a region.
    pub region: String,
    /// One URL per interface; an interface may be left out.
    pub endpoints: Vec<(EndpointInterface, url::Url)>,
}

/// Keystone-only client with service credentials. Cheap to clone.
#[derive(Clone)]
pub struct IdentityClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: AuthSettings,
    options: ClientOptions,
    /// `…/v3`, from `auth_url`.
    base: String,
    session: Mutex<Option<Arc<Session>>>,
    generations: AtomicU64,
}

impl std::fmt::Debug for IdentityClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IdentityClient")
            .field("auth_url", &self.inner.settings.auth_url.as_str())
            .field("username", &self.inner.settings.username)
            .finish_non_exhaustive()
    }
}

/// One answer from Keystone, any status.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl IdentityClient {
    /// Builds the client without contacting Keystone: the API daemon must start (and report
    /// Keystone in `/readyz`) while Keystone is down. The first call authenticates.
    pub fn new(settings: AuthSettings, options: ClientOptions) -> Result<Self, OpenStackError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // An idle connection is not reused after POOL_IDLE_TIMEOUT: WSGI servers in front
            // of the APIs close idle keep-alive connections early (gunicorn after 2 s), and a
            // request written the moment the server closes fails with "connection closed
            // before message completed" — which a POST (evacuate, create) cannot retry.
            .pool_idle_timeout(crate::client::POOL_IDLE_TIMEOUT)
            // A redirect would carry both tokens to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aos-cloud-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| OpenStackError::Client(error.to_string()))?;
        let base = auth::tokens_url(&settings.auth_url).trim_end_matches("/auth/tokens").to_string();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings,
                options,
                base,
                session: Mutex::new(None),
                generations: AtomicU64::new(0),
            }),
        })
    }

    /// [`Self::new`] and one authentication, so that wrong credentials fail here.
    pub async fn connect(settings: AuthSettings, options: ClientOptions) -> Result<Self, OpenStackError> {
        let client = Self::new(settings, options)?;
        client.session().await?;
        Ok(client)
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// Checks that the service credentials work (for readiness).
    pub async fn check(&self) -> Result<(), OpenStackError> {
        self.session().await.map(|_| ())
    }

    /// Validates a user's token: `Some` with its owner, scope and roles when Keystone accepts
    /// it, `None` when Keystone says it is invalid, expired or revoked (404, or 401 even after
    /// our own token was renewed). Errors mean we could not ask (Keystone down, our service
    /// credentials refused): the caller must not treat those as "invalid token".
    pub async fn validate_token(&self, subject: &str) -> Result<Option<TokenInfo>, OpenStackError> {
        if subject.is_empty() || HeaderValue::from_str(subject).is_err() {
            return Ok(None);
        }
        let answer = self.call(Method::GET, "/auth/tokens", Some(subject), None).await?;
        match answer.status.as_u16() {
            200..=299 => parse_token_info(&answer.body).map(Some).map_err(|message| OpenStackError::InvalidResponse {
                call: "keystone GET /auth/tokens".into(),
                message,
            }),
            // 404 TokenNotFound: expired, revoked or never issued. A 401 that survived the
            // re-authentication in `call` is about the subject token (Keystone answers 401
            // for a malformed one): the user's problem, not ours.
            404 | 401 => Ok(None),
            _ => Err(self.error(answer, "keystone GET /auth/tokens")),
        }
    }

    /// Revokes a token (`DELETE /v3/auth/tokens`).
    pub async fn revoke_token(&self, subject: &str) -> Result<(), OpenStackError> {
        let answer = self.call(Method::DELETE, "/auth/tokens", Some(subject), None).await?;
        self.expect_success(answer, "keystone DELETE /auth/tokens").map(|_| ())
    }

    /// Password authentication as another user (tests and tools): the token and what it is.
    pub async fn issue_token(&self, settings: &AuthSettings) -> Result<IssuedToken, OpenStackError> {
        let (token, body) = self.password_authentication(settings).await?;
        let info = parse_token_info(&body).map_err(|message| OpenStackError::InvalidResponse {
            call: "keystone POST /auth/tokens".into(),
            message,
        })?;
        Ok(IssuedToken { token, info })
    }

    // ----- catalogue -----

    /// Services of `service_type`.
    pub async fn services_of_type(&self, service_type: &str) -> Result<Vec<CatalogServiceRecord>, OpenStackError> {
        #[derive(Deserialize)]
        struct Services {
            services: Vec<CatalogServiceRecord>,
        }
        let path = format!("/services?type={}", encode(service_type));
        let answer = self.call(Method::GET, &path, None, None).await?;
        let body = self.expect_success(answer, "keystone GET /services")?;
        Ok(decode::<Services>(&body, "keystone GET /services")?.services)
    }

    pub async fn create_service(
        &self,
        name: &str,
        service_type: &str,
        description: &str,
    ) -> Result<CatalogServiceRecord, OpenStackError> {
        #[derive(Deserialize)]
        struct Created {
            service: CatalogServiceRecord,
        }
        let body =
            json!({ "service": { "name": name, "type": service_type, "description": description, "enabled": true } });
        let answer = self.call(Method::POST, "/services", None, Some(body)).await?;
        let body = self.expect_success(answer, "keystone POST /services")?;
        Ok(decode::<Created>(&body, "keystone POST /services")?.service)
    }

    /// Deletes a service; Keystone deletes its endpoints with it.
    pub async fn delete_service(&self, service_id: &str) -> Result<(), OpenStackError> {
        let path = format!("/services/{}", encode(service_id));
        let answer = self.call(Method::DELETE, &path, None, None).await?;
        self.expect_success(answer, "keystone DELETE /services").map(|_| ())
    }

    pub async fn endpoints_of_service(&self, service_id: &str) -> Result<Vec<EndpointRecord>, OpenStackError> {
        #[derive(Deserialize)]
        struct Endpoints {
            endpoints: Vec<EndpointRecord>,
        }
        let path = format!("/endpoints?service_id={}", encode(service_id));
        let answer = self.call(Method::GET, &path, None, None).await?;
        let body = self.expect_success(answer, "keystone GET /endpoints")?;
        Ok(decode::<Endpoints>(&body, "keystone GET /endpoints")?.endpoints)
    }

    async fn create_endpoint(
        &self,
        service_id: &str,
        interface: &str,
        url: &str,
        region: &str,
    ) -> Result<EndpointRecord, OpenStackError> {
        #[derive(Deserialize)]
        struct Created {
            endpoint: EndpointRecord,
        }
        let mut endpoint = json!({ "service_id": service_id, "interface": interface, "url": url, "enabled": true });
        if !region.is_empty() {
            endpoint["region_id"] = json!(region);
        }
        let answer = self.call(Method::POST, "/endpoints", None, Some(json!({ "endpoint": endpoint }))).await?;
        let body = self.expect_success(answer, "keystone POST /endpoints")?;
        Ok(decode::<Created>(&body, "keystone POST /endpoints")?.endpoint)
    }

    async fn update_endpoint_url(&self, endpoint_id: &str, url: &str) -> Result<(), OpenStackError> {
        let path = format!("/endpoints/{}", encode(endpoint_id));
        let answer = self.call(Method::PATCH, &path, None, Some(json!({ "endpoint": { "url": url } }))).await?;
        self.expect_success(answer, "keystone PATCH /endpoints").map(|_| ())
    }

    /// Creates, idempotently, the service of `registration.service_type` (the first one found
    /// is reused; none is created when one exists) and one endpoint per interface in the
    /// region; an endpoint whose URL differs is updated in place. Running it twice changes
    /// nothing the second time.
    pub async fn register_service(&self, registration: &ServiceRegistration) -> Result<RegisterReport, OpenStackError> {
        let mut report = RegisterReport::default();
        let existing = self.services_of_type(&registration.service_type).await?;
        let service = match existing.into_iter().find(|service| service.name == registration.name) {
            Some(service) => service,
            None => {
                report.service_created = true;
                self.create_service(&registration.name, &registration.service_type, &registration.description).await?
            }
        };
        report.service_id = service.id.clone();
        let endpoints = self.endpoints_of_service(&service.id).await?;
        for (interface, url) in &registration.endpoints {
            let interface = interface.as_str();
            let url = url.as_str().trim_end_matches('/');
            let same_region = |endpoint: &&EndpointRecord| {
                endpoint.interface == interface
                    && endpoint.region_id.as_deref().unwrap_or("") == registration.region.as_str()
            };
            match endpoints.iter().find(same_region) {
                Some(endpoint) if endpoint.url.trim_end_matches('/') == url => {
                    report.endpoints_unchanged.push(interface.to_string());
                }
                Some(endpoint) => {
                    self.update_endpoint_url(&endpoint.id, url).await?;
                    report.endpoints_updated.push((interface.to_string(), endpoint.url.clone(), url.to_string()));
                }
                None => {
                    self.create_endpoint(&service.id, interface, url, &registration.region).await?;
                    report.endpoints_created.push((interface.to_string(), url.to_string()));
                }
            }
        }
        Ok(report)
    }

    /// Deletes one endpoint.
    pub async fn delete_endpoint(&self, endpoint_id: &str) -> Result<(), OpenStackError> {
        let answer = self.call(Method::DELETE, &format!("/endpoints/{}", encode(endpoint_id)), None, None).await?;
        self.expect_success(answer, "keystone DELETE /endpoints").map(|_| ())
    }

    /// Creates a region (Keystone refuses endpoints in a region it does not know).
    pub async fn create_region(&self, region_id: &str) -> Result<(), OpenStackError> {
        let body = json!({ "region": { "id": region_id } });
        let answer = self.call(Method::POST, "/regions", None, Some(body)).await?;
        self.expect_success(answer, "keystone POST /regions").map(|_| ())
    }

    pub async fn delete_region(&self, region_id: &str) -> Result<(), OpenStackError> {
        let answer = self.call(Method::DELETE, &format!("/regions/{}", encode(region_id)), None, None).await?;
        self.expect_success(answer, "keystone DELETE /regions").map(|_| ())
    }

    // ----- users and roles (tests and tools) -----

    /// The id of the project named `name` in the domain of our service user's project.
    pub async fn project_id(&self, name: &str) -> Result<String, OpenStackError> {
        self.id_by_name("projects", name).await
    }

    pub async fn role_id(&self, name: &str) -> Result<String, OpenStackError> {
        self.id_by_name("roles", name).await
    }

    async fn id_by_name(&self, collection: &str, name: &str) -> Result<String, OpenStackError> {
        let call = format!("keystone GET /{collection}?name={name}");
        let answer = self.call(Method::GET, &format!("/{collection}?name={}", encode(name)), None, None).await?;
        let body = self.expect_success(answer, &call)?;
        let value: serde_json::Value = decode(&body, &call)?;
        value[collection]
            .as_array()
            .and_then(|items| items.first())
            .and_then(|item| item["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| OpenStackError::NotFound { call, message: format!("no {collection} named {name}") })
    }

    /// Creates a user in the default domain with `default_project_id`; returns its id.
    pub async fn create_user(&self, name: &str, password: &str, project_id: &str) -> Result<String, OpenStackError> {
        let body = json!({ "user": { "name": name, "password": password, "domain_id": "default", "default_project_id": project_id, "enabled": true } });
        let answer = self.call(Method::POST, "/users", None, Some(body)).await?;
        let body = self.expect_success(answer, "keystone POST /users")?;
        let value: serde_json::Value = decode(&body, "keystone POST /users")?;
        value["user"]["id"].as_str().map(str::to_string).ok_or_else(|| OpenStackError::InvalidResponse {
            call: "keystone POST /users".into(),
            message: "no user id".into(),
        })
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<(), OpenStackError> {
        let answer = self.call(Method::DELETE, &format!("/users/{}", encode(user_id)), None, None).await?;
        self.expect_success(answer, "keystone DELETE /users").map(|_| ())
    }

    /// Grants `role_id` to `user_id` on `project_id`.
    pub async fn assign_project_role(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> Result<(), OpenStackError> {
        let path = format!("/projects/{}/users/{}/roles/{}", encode(project_id), encode(user_id), encode(role_id));
        let answer = self.call(Method::PUT, &path, None, None).await?;
        self.expect_success(answer, "keystone PUT /projects/{project}/users/{user}/roles/{role}").map(|_| ())
    }

    // ----- transport -----

    /// Our service token, authenticating when there is none or it is due for renewal.
    async fn session(&self) -> Result<Arc<Session>, OpenStackError> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref()
            && !auth::needs_renewal(
                Utc::now(),
                session.issued_at,
                session.expires_at,
                self.inner.options.token_renewal_margin,
            )
        {
            return Ok(Arc::clone(session));
        }
        let (token, body) = self.password_authentication(&self.inner.settings).await?;
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let session =
            auth::parse_token_response(token.into_exposed(), &body, Utc::now(), generation).map_err(|message| {
                OpenStackError::InvalidResponse { call: "keystone POST /auth/tokens".into(), message }
            })?;
        tracing::debug!(expires_at = %session.expires_at, generation, "service token obtained from Keystone");
        let session = Arc::new(session);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn forget_session(&self, generation: u64) {
        let mut slot = self.inner.session.lock().await;
        if slot.as_ref().is_some_and(|session| session.generation == generation) {
            *slot = None;
        }
    }

    /// `POST /v3/auth/tokens` with `settings`' password: the token and the body.
    async fn password_authentication(
        &self,
        settings: &AuthSettings,
    ) -> Result<(Secret<String>, Vec<u8>), OpenStackError> {
        let call = "keystone POST /auth/tokens";
        let url = auth::tokens_url(&settings.auth_url);
        let body = serde_json::to_vec(&auth::password_auth_body(settings)).expect("a JSON value serializes");
        let secrets = [settings.password.expose().as_str()];
        let response = self
            .send_with_retries(
                || self.inner.http.post(&url).header(CONTENT_TYPE, "application/json").body(body.clone()),
                call,
                &secrets,
                true,
            )
            .await?;
        if !response.status.is_success() {
            return Err(redact_error(classify(call.into(), response.status.as_u16(), &response.body), &secrets));
        }
        let token =
            response.headers.get(SUBJECT_TOKEN_HEADER).and_then(|value| value.to_str().ok()).ok_or_else(|| {
                OpenStackError::InvalidResponse {
                    call: call.into(),
                    message: format!("no {SUBJECT_TOKEN_HEADER} header in Keystone's answer"),
                }
            })?;
        Ok((Secret::new(token.to_string()), response.body))
    }

    /// One call with our token (and `subject` as `X-Subject-Token`); on 401 one
    /// re-authentication and one more try. Returns any answer Keystone gave.
    async fn call(
        &self,
        method: Method,
        path: &str,
        subject: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, OpenStackError> {
        let url = format!("{}{}", self.inner.base, path);
        let call = format!("keystone {method} {}", path.split('?').next().unwrap_or(path));
        let body = body.map(|body| serde_json::to_vec(&body).expect("a JSON value serializes"));
        let idempotent = method != Method::POST;
        let mut reauthenticated = false;
        loop {
            let session = self.session().await?;
            let service_token = sensitive(session.token.expose(), &call)?;
            let subject_token = subject.map(|subject| sensitive(subject, &call)).transpose()?;
            let secrets: Vec<&str> = [Some(session.token.expose().as_str()), subject].into_iter().flatten().collect();
            let answer = self
                .send_with_retries(
                    || {
                        let mut builder = self
                            .inner
                            .http
                            .request(method.clone(), &url)
                            .header(AUTH_TOKEN_HEADER, service_token.clone());
                        if let Some(subject_token) = &subject_token {
                            builder = builder.header(SUBJECT_TOKEN_HEADER, subject_token.clone());
                        }
                        if let Some(body) = &body {
                            builder = builder.header(CONTENT_TYPE, "application/json").body(body.clone());
                        }
                        builder
                    },
                    &call,
                    &secrets,
                    idempotent,
                )
                .await?;
            if answer.status == StatusCode::UNAUTHORIZED && !reauthenticated {
                tracing::debug!(%call, "service token refused; authenticating again");
                self.forget_session(session.generation).await;
                reauthenticated = true;
                continue;
            }
            return Ok(answer);
        }
    }

    /// Sends what `build` makes, retrying transport failures (any method when the connection
    /// never opened; otherwise only idempotent ones) and 5xx of idempotent calls.
    async fn send_with_retries<F>(
        &self,
        build: F,
        call: &str,
        secrets: &[&str],
        idempotent: bool,
    ) -> Result<Answer, OpenStackError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let attempts = self.inner.options.attempts.max(1);
        let mut attempt = 1;
        loop {
            let delay = self
                .inner
                .options
                .retry_base_delay
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(Duration::from_secs(8));
            match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) => {
                            tracing::debug!(%call, status = status.as_u16(), attempt, "keystone call");
                            if status.is_server_error() && idempotent && attempt < attempts {
                                tokio::time::sleep(delay).await;
                                attempt += 1;
                                continue;
                            }
                            return Ok(Answer { status, headers, body: body.to_vec() });
                        }
                        Err(error) if idempotent && attempt < attempts => {
                            tracing::debug!(%call, error = %redact(error.to_string(), secrets), "keystone answer broken; retrying");
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        Err(error) => {
                            return Err(OpenStackError::Connect {
                                call: call.into(),
                                message: redact(error.to_string(), secrets),
                            });
                        }
                    }
                }
                Err(error) => {
                    let message = redact(error_chain(&error), secrets);
                    if (error.is_connect() || idempotent) && attempt < attempts {
                        tracing::debug!(%call, error = %message, attempt, "keystone unreachable; retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(if error.is_timeout() {
                        OpenStackError::Timeout { call: call.into(), message }
                    } else {
                        OpenStackError::Connect { call: call.into(), message }
                    });
                }
            }
        }
    }

    fn error(&self, answer: Answer, call: &str) -> OpenStackError {
        redact_error(
            classify(call.into(), answer.status.as_u16(), &answer.body),
            &[self.inner.settings.password.expose().as_str()],
        )
    }

    fn expect_success(&self, answer: Answer, call: &str) -> Result<Vec<u8>, OpenStackError> {
        if answer.status.is_success() { Ok(answer.body) } else { Err(self.error(answer, call)) }
    }
}

fn sensitive(token: &str, call: &str) -> Result<HeaderValue, OpenStackError> {
    let mut value = HeaderValue::from_str(token).map_err(|_| OpenStackError::InvalidResponse {
        call: call.to_string(),
        message: "a token is not a valid header value".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], call: &str) -> Result<T, OpenStackError> {
    serde_json::from_slice(body).map_err(|error| OpenStackError::InvalidResponse {
        call: call.to_string(),
        message: format!("cannot decode the body: {error}"),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_FIXTURE: &[u8] = include_bytes!("../fixtures/keystone_token.json");

    #[test]
    fn a_validation_answer_gives_user_project_roles_and_expiry() {
        let info = parse_token_info(TOKEN_FIXTURE).unwrap();
        assert_eq!(info.user_name, "admin");
        assert_eq!(info.user_id, "f7f1b160ce7748a3b9b9d7a7d0544a16");
        assert_eq!(info.project_name, "admin");
        assert_eq!(info.user_domain_id, "default");
        assert!(info.roles.contains(&"admin".to_string()) && info.roles.contains(&"member".to_string()));
        assert!(!info.system_scope);
        assert_eq!(info.expires_at.to_rfc3339(), "2026-11-23T15:05:00+00:00");
    }

    #[test]
    fn a_domain_scoped_token_has_no_project_and_a_system_token_is_marked() {
        let body = br#"{"token": {"expires_at": "2026-11-23T15:05:00Z", "user": {"id": "u", "name": "n"},
            "roles": [{"id": "r", "name": "Reader"}], "system": {"all": true}}}"#;
        let info = parse_token_info(body).unwrap();
        assert_eq!(info.project_id, "");
        assert_eq!(info.roles, vec!["reader".to_string()]);
        assert!(info.system_scope);
    }

    #[test]
    fn a_body_without_expiry_is_rejected_naming_it() {
        let error = parse_token_info(br#"{"token": {"user": {"id": "u"}}}"#).unwrap_err();
        assert!(error.contains("expires_at"), "{error}");
    }
}
