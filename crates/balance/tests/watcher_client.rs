//! The Watcher client against a small local HTTP server that answers like Watcher's API
//! (JSON shaped after Watcher's api-ref samples and its own controllers: `POST /v1/audits`,
//! `GET /v1/audits/{uuid}`, `GET /v1/action_plans/detail?audit_uuid=`,
//! `GET /v1/actions/detail?action_plan_uuid=`), with the token issued by the real test
//! cloud's Keystone (127.0.0.1:5000): the mapping, the polling and the error paths (a FAILED
//! audit, refused credentials, nothing listening), which the real Watcher
//! (`tests/watcher_real.rs`) does not easily produce.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_balance::drs::Recommender;
use aos_balance::watcher::{WatcherRecommender, WatcherSettings};
use aos_openstack::testing::{admin_settings, install_crypto_provider};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Watcher {
    /// Bodies of the audits created.
    created: Vec<Value>,
    /// How many times the audit was polled.
    polls: u32,
    /// The audit's final state.
    final_state: String,
    tokens: Vec<String>,
}

type Shared = Arc<Mutex<Watcher>>;

const AUDIT: &str = "9ef1c8a5-0f8d-4b5b-9c7e-2d6e1b1a0c01";
const PLAN: &str = "4b3f1b1c-7a2e-4cf4-9d52-0c0a1d8c8e02";

fn token(state: &Shared, headers: &HeaderMap) -> Result<(), StatusCode> {
    let token = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if token.is_empty() {
        return Err(StatusCode::UNAUTHORIZED);
    }
    state.lock().unwrap().tokens.push(token);
    Ok(())
}

async fn create_audit(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    token(&state, &headers)?;
    if body["audit_type"] != "ONESHOT" || body["goal"].as_str().is_none() {
        return Err(StatusCode::BAD_REQUEST);
    }
    state.lock().unwrap().created.push(body.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "uuid": AUDIT, "name": body["name"], "audit_type": "ONESHOT", "state": "PENDING",
            "goal_uuid": "e1a5a45b-f251-47cf-9c5f-fa1e66e1286a", "goal_name": body["goal"],
            "strategy_name": body["strategy"], "parameters": body["parameters"], "auto_trigger": false,
            "scope": [], "interval": null, "created_at": "2026-12-06T12:00:00+00:00"
        })),
    ))
}

async fn show_audit(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    token(&state, &headers)?;
    if uuid != AUDIT {
        return Err(StatusCode::NOT_FOUND);
    }
    let mut watcher = state.lock().unwrap();
    watcher.polls += 1;
    let audit_state = match watcher.polls {
        1 => "PENDING".to_owned(),
        2 => "ONGOING".to_owned(),
        _ => watcher.final_state.clone(),
    };
    Ok(Json(json!({ "uuid": AUDIT, "audit_type": "ONESHOT", "state": audit_state })))
}

async fn action_plans(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    token(&state, &headers)?;
    if query.get("audit_uuid").map(String::as_str) != Some(AUDIT) {
        return Ok(Json(json!({ "action_plans": [] })));
    }
    Ok(Json(json!({ "action_plans": [
        { "uuid": "0ld-plan", "audit_uuid": AUDIT, "state": "SUPERSEDED", "created_at": "2026-12-06T11:00:00+00:00" },
        { "uuid": PLAN, "audit_uuid": AUDIT, "state": "RECOMMENDED", "strategy_name": "workload_balance",
          "efficacy_indicators": [{ "name": "instance_migrations_count", "value": 2, "unit": null }],
          "global_efficacy": [], "created_at": "2026-12-06T12:00:05+00:00" }
    ]})))
}

async fn actions(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    token(&state, &headers)?;
    if query.get("action_plan_uuid").map(String::as_str) != Some(PLAN) {
        return Ok(Json(json!({ "actions": [] })));
    }
    Ok(Json(json!({ "actions": [
        { "uuid": "a-1", "action_plan_uuid": PLAN, "action_type": "migrate", "state": "PENDING", "parents": [],
          "input_parameters": { "migration_type": "live", "source_node": "compute-1", "destination_node": "compute-2",
                                "resource_id": "1b2c3d4e-0000-4000-8000-000000000001", "resource_name": "web-1" } },
        { "uuid": "a-2", "action_plan_uuid": PLAN, "action_type": "migrate", "state": "PENDING", "parents": ["a-1"],
          "input_parameters": { "migration_type": "live", "source_node": "compute-1", "destination_node": "compute-3",
                                "resource_id": "1b2c3d4e-0000-4000-8000-000000000002" } },
        { "uuid": "a-3", "action_plan_uuid": PLAN, "action_type": "change_nova_service_state", "state": "PENDING",
          "parents": ["a-2"], "input_parameters": { "resource_id": "compute-1", "state": "disabled" } }
    ]})))
}

async fn serve(final_state: &str) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Watcher { final_state: final_state.into(), ..Watcher::default() }));
    let app = Router::new()
        .route("/v1/audits", post(create_audit))
        .route("/v1/audits/{uuid}", get(show_audit))
        .route("/v1/action_plans/detail", get(action_plans))
        .route("/v1/actions/detail", get(actions))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/"), state)
}

fn settings(endpoint: &str) -> WatcherSettings {
    WatcherSettings {
        endpoint: endpoint.parse().unwrap(),
        auth: admin_settings(),
        goal: "workload_balancing".into(),
        strategy: Some("workload_balance".into()),
        parameters: serde_json::from_value(json!({ "metrics": "instance_ram_usage", "threshold": 25.0 })).unwrap(),
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn an_audit_becomes_a_plan_of_live_migrations_and_the_rest_is_listed_as_ignored() {
    install_crypto_provider();
    let (endpoint, state) = serve("SUCCEEDED").await;
    let watcher = WatcherRecommender::new(settings(&endpoint), None).expect("client");
    let recommendation = watcher.recommend(None).await.expect("recommendation");
    assert_eq!(recommendation.audit_external_id.as_deref(), Some(AUDIT));
    let plan = recommendation.plan.expect("a plan");
    assert_eq!(plan.external_id.as_deref(), Some(PLAN), "the RECOMMENDED plan, not the superseded one");
    let moves: Vec<(&str, &str, Option<&str>, Option<&str>)> = plan
        .actions
        .iter()
        .map(|a| (a.server_id.as_str(), a.server_name.as_str(), a.source_host.as_deref(), a.target_host.as_deref()))
        .collect();
    assert_eq!(
        moves,
        [
            ("1b2c3d4e-0000-4000-8000-000000000001", "web-1", Some("compute-1"), Some("compute-2")),
            (
                "1b2c3d4e-0000-4000-8000-000000000002",
                "1b2c3d4e-0000-4000-8000-000000000002",
                Some("compute-1"),
                Some("compute-3")
            ),
        ]
    );
    let summary = plan.summary.expect("summary");
    assert_eq!(summary["ignored"][0]["uuid"], "a-3", "{summary}");
    assert_eq!(summary["strategy"], "workload_balance");
    let watcher_state = state.lock().unwrap();
    let created = &watcher_state.created[0];
    assert_eq!(created["goal"], "workload_balancing");
    assert_eq!(created["strategy"], "workload_balance");
    assert_eq!(created["auto_trigger"], false, "we apply plans ourselves");
    assert_eq!(created["parameters"]["threshold"], 25.0);
    assert!(watcher_state.polls >= 3, "the audit is polled until it is SUCCEEDED");
    // A Keystone token (not the password) on every call.
    assert!(watcher_state.tokens.iter().all(|t| t.len() > 20 && t != "admin"), "{:?}", watcher_state.tokens);
}

#[tokio::test]
async fn a_failed_audit_and_refused_credentials_are_errors_that_say_so() {
    install_crypto_provider();
    let (endpoint, _) = serve("FAILED").await;
    let watcher = WatcherRecommender::new(settings(&endpoint), None).expect("client");
    let error = watcher.recommend(None).await.unwrap_err();
    assert_eq!(error, format!("Watcher audit {AUDIT} is FAILED"));

    let mut wrong = settings(&endpoint);
    wrong.auth.password = aos_openstack::Secret::new("not-the-password".to_owned());
    let error = WatcherRecommender::new(wrong, None).unwrap().recommend(None).await.unwrap_err();
    assert!(error.starts_with("Keystone refused the [drs] credentials"), "{error}");
    assert!(!error.contains("not-the-password"), "the password must not leak: {error}");

    // Nothing listening: the call is named.
    let gone = WatcherRecommender::new(settings("http://127.0.0.1:9/"), None).unwrap();
    let error = gone.recommend(None).await.unwrap_err();
    assert!(error.starts_with("watcher POST /v1/audits:"), "{error}");
}
