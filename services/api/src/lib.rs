//! `aos-cloud-manager-api`: the REST API on `[api] host`:`[api] port` (9362), registered in
//! Keystone as service type `cloud-manager` (docs/adr/0013-api.md).
//!
//! Every request goes through, outermost first:
//! 1. the request id: `x-openstack-request-id: req-<uuid>` on every answer, and in the span
//!    of every log line about the request;
//! 2. the audit (`[api] audit_enabled`): after the answer, one `audit_log` row and one log
//!    line per mutating request that got past authentication (`audit.rs`);
//! 3. authentication (everything under `/v1/` except version discovery): the `X-Auth-Token`
//!    validated with Keystone behind a bounded cache (`auth.rs`); 401 without a valid one;
//! 4. the handler, which asks the policy (`policy.rs`) for its action (403 when denied) and
//!    calls the domain crates (`aos-ha`, `aos-power`, `aos-storage`, `aos-db`) — the API owns
//!    no domain logic.
//!
//! Errors are `ApiError` in OpenStack's JSON shape (`error.rs`); bodies and query strings are
//! read by extractors whose 400s name the field (`extract.rs`).

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod policy;
mod routes;
pub mod snapshot;

pub use routes::settings::EffectiveSettings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aos_daemon::{CheckState, DaemonContext};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::audit::AuditEntry;
use crate::auth::TokenValidator;
use crate::error::ApiError;
use crate::policy::Policy;

pub const ROLE: &str = "api";

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// The request id of the request being handled (`req-<uuid>`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated caller, put into the request's extensions by the authentication layer
/// (and into the response's, for the audit).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<aos_openstack::TokenInfo>);

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

pub(crate) struct AppInner {
    pub config: Arc<aos_config::Config>,
    pub db: aos_db::DatabaseConnection,
    pub validator: TokenValidator,
    pub policy: Policy,
    /// Nova and Placement, connected at first use (dry runs): the API serves reads while
    /// OpenStack is down.
    pub cloud: tokio::sync::OnceCell<aos_ha::OpenStackCloud>,
    /// The effective configuration with its provenance (`GET /v1/settings`); `None` when the
    /// API was started from a bare `Config` (in-process, all-in-one).
    pub settings: Option<Arc<EffectiveSettings>>,
    /// Serialized `GET /v1/nodes` answers, dropped by every write (`snapshot.rs`).
    pub node_lists: snapshot::SnapshotCache,
}

impl AppState {
    /// Builds the state from the daemon's context: the policy file is read (and must parse)
    /// here; Keystone is not contacted yet.
    pub fn new(context: &DaemonContext, effective: Option<EffectiveSettings>) -> anyhow::Result<Self> {
        let config = context.config.clone();
        let policy = Policy::load(config.api.policy_file.as_deref())?;
        let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
        // Bounded so that a hung Keystone turns into a 503 rather than a hung client; GETs
        // (validation) are retried, which is harmless.
        let options = aos_openstack::ClientOptions {
            request_timeout: Duration::from_secs(20),
            attempts: 3,
            ..aos_openstack::ClientOptions::default()
        };
        let identity = aos_openstack::IdentityClient::new(settings, options)
            .context("cannot build the Keystone client ([keystone_authtoken])")?;
        let validator =
            TokenValidator::new(identity, u64::from(config.api.token_cache_size), config.api.token_cache_time);
        Ok(Self {
            inner: Arc::new(AppInner {
                config,
                db: context.db.clone(),
                validator,
                policy,
                cloud: tokio::sync::OnceCell::new(),
                settings: effective.map(Arc::new),
                node_lists: snapshot::SnapshotCache::default(),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &AppInner {
        &self.inner
    }

    /// 403 unless the policy allows `action` to `caller`.
    pub(crate) fn authorize(&self, caller: &Caller, action: &str) -> Result<(), ApiError> {
        if self.inner.policy.allows(action, &caller.0) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("Policy doesn't allow {action} to be performed.")))
        }
    }

    pub(crate) async fn cloud(&self) -> Result<&aos_ha::OpenStackCloud, ApiError> {
        self.inner
            .cloud
            .get_or_try_init(|| async {
                let settings = aos_openstack::AuthSettings::from(&self.inner.config.keystone_authtoken);
                aos_openstack::OpenStackClient::connect(settings).await.map(aos_ha::OpenStackCloud::new)
            })
            .await
            .map_err(|error| ApiError::ServiceUnavailable(format!("cannot reach OpenStack: {error}")))
    }
}

/// Binds `[api] host:port` and serves until shutdown (without the configuration's provenance:
/// `GET /v1/settings` answers 503; `run_with_settings` is the daemon's entry).
pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    run_with_settings(context, None).await
}

/// Binds `[api] host:port` and serves until shutdown; `settings` is what `GET /v1/settings`
/// shows.
pub async fn run_with_settings(context: DaemonContext, settings: Option<EffectiveSettings>) -> anyhow::Result<()> {
    let address = context.config.api.bind_address();
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot bind the API on {address} ([api] host / port)"))?;
    serve_with_settings(listener, context, settings).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(listener: TcpListener, context: DaemonContext) -> anyhow::Result<()> {
    serve_with_settings(listener, context, None).await
}

/// Serves on an already bound listener, with the configuration's provenance for
/// `GET /v1/settings`.
pub async fn serve_with_settings(
    listener: TcpListener,
    context: DaemonContext,
    settings: Option<EffectiveSettings>,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    // The Keystone client's TLS needs the process-wide provider; `main_entry` installs it,
    // callers that serve directly (tests, the benchmark) may not have.
    aos_daemon::startup::install_crypto_provider();
    let state = AppState::new(&context, settings)?;
    spawn_keystone_check(&state, &context);
    tracing::info!(%address, "API listening");
    let shutdown = context.shutdown.clone();
    axum::serve(listener, router(&context, state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("API server failed")
}

/// Reports Keystone (our service credentials) in `/readyz`: checked at start until it works,
/// then every minute.
fn spawn_keystone_check(state: &AppState, context: &DaemonContext) {
    let identity = state.inner.validator.identity().clone();
    let readiness = context.readiness.clone();
    let shutdown = context.shutdown.clone();
    readiness.set("keystone", CheckState::Pending);
    tokio::spawn(async move {
        loop {
            let delay = match identity.check().await {
                Ok(()) => {
                    readiness.set("keystone", CheckState::Ok);
                    Duration::from_secs(60)
                }
                Err(error) => {
                    readiness.set("keystone", CheckState::Failing(error.to_string()));
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    });
}

pub fn router(context: &DaemonContext, state: AppState) -> Router {
    let authenticated = routes::v1_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), audit_mutations));
    Router::new()
        .route("/", get(versions))
        .route("/v1", get(version_v1))
        .route("/v1/", get(version_v1))
        .route("/v1/openapi.json", get(openapi::serve))
        .merge(authenticated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(aos_daemon::status::status_routes(ROLE, context.readiness.clone()))
        .layer(middleware::from_fn(request_id))
}

/// Gives the request its id, runs it inside a span carrying it, and puts it on the answer.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 401 without a token Keystone accepts; otherwise the caller goes into the request (for the
/// handler) and the response (for the audit).
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request.headers().get("x-auth-token").and_then(|value| value.to_str().ok()).map(str::trim);
    let caller = match token {
        None | Some("") => {
            return ApiError::Unauthorized("authentication required: send a Keystone token in X-Auth-Token".into())
                .into_response();
        }
        Some(token) => match state.inner.validator.validate(token).await {
            Ok(info) => Caller(info),
            Err(error) => return error.into_response(),
        },
    };
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(caller);
    response
}

/// The audit of mutating requests (see `audit.rs`); every mutating request also drops the
/// list snapshots, when it starts and when its answer is ready (`snapshot.rs`).
async fn audit_mutations(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !mutating {
        return next.run(request).await;
    }
    let _write = state.inner.node_lists.write_guard();
    audited(&state, request, next).await
}

async fn audited(state: &AppState, request: Request, next: Next) -> Response {
    if !state.inner.config.api.audit_enabled {
        return next.run(request).await;
    }
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let fallback =
        AuditEntry { action: format!("{} {}", request.method(), request.uri().path()), target: None, details: None };
    let response = next.run(request).await;
    if let Some(Caller(caller)) = response.extensions().get::<Caller>() {
        let entry = response.extensions().get::<AuditEntry>().unwrap_or(&fallback);
        audit::record(&state.inner.db, &request_id, caller, entry, audit::outcome(response.status())).await;
    }
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no resource at {} (see GET /v1/openapi.json)", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

fn v1_document() -> Value {
    json!({
        "id": "v1",
        "status": "CURRENT",
        "links": [{ "rel": "self", "href": "/v1" }],
        "media-types": [{ "base": "application/json", "type": "application/vnd.openstack.cloud-manager-v1+json" }],
    })
}

/// OpenStack-style version discovery (`GET /`).
async fn versions() -> Json<Value> {
    Json(json!({ "versions": [v1_document()] }))
}

async fn version_v1() -> Json<Value> {
    Json(json!({ "version": v1_document() }))
}

/// `[api] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.api.logfile.as_deref()
}
