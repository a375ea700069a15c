//! The API against the real Keystone of the test cloud (`scripts/ensure-openstack.sh`): tokens
//! validated by Keystone, the reader/admin policy, the audit trail, revocation after the
//! cache window, and the 400/404/409 answers. Each test creates its own reader user (deleted
//! afterwards, also when the test fails) and serves the API on port 0 over a fresh database.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{admin_identity, create_reader, reader_token};

use aos_db::ObservedComputeHost;
use aos_openstack::testing::{admin_settings, eventually};
use aos_testkit::config_database_url;
use aos_testkit::testing::TestDatabase;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

/// The API served on port 0 over `database`, with `[keystone_authtoken]` = the test cloud's
/// admin and `extra` config lines.
struct Api {
    address: std::net::SocketAddr,
    shutdown: aos_daemon::ShutdownToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: aos_db::DatabaseConnection,
    http: reqwest::Client,
}

impl Api {
    async fn start(database: &TestDatabase, api_section: &str) -> anyhow::Result<Self> {
        Self::start_with(database, api_section, "").await
    }

    /// As `start`, with `more` (whole sections) at the end of the configuration.
    async fn start_with(database: &TestDatabase, api_section: &str, more: &str) -> anyhow::Result<Self> {
        database.connect_migrated().await?.close().await?;
        let admin = admin_settings();
        let ini = format!(
            "[database]\nurl = {}\n[keystone_authtoken]\nauth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\n\
             interface = public\n[api]\n{api_section}\n{more}",
            config_database_url(database),
            admin.auth_url,
            admin.username,
            admin.password.expose(),
            admin.project_name,
        );
        let loaded = aos_config::load_from_str(&[("test.conf", &ini)]).map_err(|error| anyhow::anyhow!("{error}"))?;
        let settings = aos_api::EffectiveSettings::from_loaded(&loaded);
        let shutdown = aos_daemon::ShutdownToken::new();
        let context =
            aos_daemon::DaemonContext::connect(aos_api::ROLE, Arc::new(loaded.config), shutdown.clone()).await?;
        let db = context.db.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(aos_api::serve_with_settings(listener, context, Some(settings)));
        Ok(Self { address, shutdown, server, db, http: reqwest::Client::new() })
    }

    async fn add_nodes(&self, names: &[&str]) {
        let observed: Vec<ObservedComputeHost> =
            names.iter().map(|name| ObservedComputeHost::up_and_enabled(*name, None)).collect();
        aos_db::sync_nodes(&self.db, None, "test", &observed).await.expect("nodes");
    }

    /// `(status, request id header, body)`.
    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String, Value) {
        let url = format!("http://{}{}", self.address, path);
        let mut request = self.http.request(method.parse().expect("method"), url);
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-openstack-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, request_id, body)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await??;
        Ok(())
    }
}

fn message(body: &Value) -> String {
    body.as_object()
        .and_then(|object| object.values().next())
        .and_then(|fault| fault["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn without_a_valid_token_401_a_reader_reads_but_cannot_act_an_admin_acts_and_is_audited() -> anyhow::Result<()> {
    let identity = admin_identity().await;
    let reader = create_reader(&identity, "aos-api-reader").await;
    let reader_token = reader_token(&identity, &reader).await;
    assert!(reader_token.info.roles.contains(&"reader".to_string()), "{:?}", reader_token.info.roles);
    assert!(!reader_token.info.roles.contains(&"admin".to_string()));
    let admin_token = identity.issue_token(&admin_settings()).await?;
    let database = TestDatabase::sqlite().await?;
    let api = Api::start(&database, "audit_enabled = true").await?;
    api.add_nodes(&["api-node-1", "api-node-2"]).await;
    let reader_token = reader_token.token.expose().as_str();
    let admin_token = admin_token.token.expose().as_str();

    // No token, a garbage token: 401 in OpenStack's shape, with a request id.
    let (status, request_id, body) = api.send("GET", "/v1/nodes", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(request_id.starts_with("req-"), "{request_id:?}");
    assert_eq!(body["unauthorized"]["code"], 401);
    let (status, _, body) = api.send("GET", "/v1/nodes", Some("gAAAAAnot-a-token"), None).await;
    assert_eq!(status, 401, "{body}");

    // Version discovery needs no token.
    let (status, request_id, _) = api.send("GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(request_id.starts_with("req-"));
    let (status, _, document) = api.send("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(document["paths"]["/v1/nodes/{name}/action"]["post"].is_object(), "{document}");

    // The reader reads...
    let (status, _, body) = api.send("GET", "/v1/nodes", Some(reader_token), None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> =
        body["nodes"].as_array().unwrap().iter().map(|node| node["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api-node-1", "api-node-2"]);
    let (status, _, body) = api.send("GET", "/v1/nodes/api-node-1", Some(reader_token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["state"], "up");
    for path in ["/v1/tasks", "/v1/alarms", "/v1/events", "/v1/power-devices", "/v1/storages", "/v1/reserve-bindings"] {
        let (status, _, body) = api.send("GET", path, Some(reader_token), None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // ... but may not act.
    let maintenance_on = r#"{"maintenance": {"enabled": true}}"#;
    let (status, denied_request_id, body) =
        api.send("POST", "/v1/nodes/api-node-1/action", Some(reader_token), Some(maintenance_on)).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("cloud_manager:node:maintenance"), "{body}");

    // The admin acts.
    let (status, admin_request_id, body) =
        api.send("POST", "/v1/nodes/api-node-1/action", Some(admin_token), Some(maintenance_on)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["state"], "maintenance");
    assert_eq!(body["node"]["maintenance"], true);
    let (status, _, body) = api
        .send("POST", "/v1/nodes/api-node-2/action", Some(admin_token), Some(r#"{"evacuation": {"allowed": false}}"#))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["evacuation_allowed"], false);
    // A real evacuation is recorded as a task (no worker runs here) and answered 202.
    let (status, evacuate_request_id, body) = api
        .send("POST", "/v1/nodes/api-node-1/action", Some(admin_token), Some(r#"{"evacuate": {"skip_fence": true}}"#))
        .await;
    assert_eq!(status, 202, "{body}");
    let task_href = body["task"]["href"].as_str().expect("the task's link").to_string();
    let (status, _, task) = api.send("GET", &task_href, Some(reader_token), None).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["task"]["kind"], "recover_node", "{task}");
    assert!(task["task"]["steps"].is_array(), "{task}");
    let (status, _, body) = api
        .send("POST", "/v1/nodes/api-node-1/action", Some(admin_token), Some(r#"{"evacuate": {"skip_fence": true}}"#))
        .await;
    assert_eq!(status, 409, "a second recovery while one is pending: {body}");
    let (status, _, body) = api.send("GET", "/v1/nodes/api-node-1/history", Some(reader_token), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"].as_array().unwrap().iter().any(|event| event["to_state"] == "maintenance"), "{body}");

    // One audit record per mutating request, with who, what, on what, how and the request id.
    let records = aos_db::entity::audit_log::Entity::find().all(&api.db).await?;
    assert_eq!(records.len(), 5, "{records:#?}");
    let evacuation = records.iter().find(|record| record.request_id == evacuate_request_id).expect("the evacuation");
    assert_eq!((evacuation.action.as_str(), evacuation.outcome.as_str()), ("cloud_manager:node:evacuate", "accepted"));
    assert_eq!(records.iter().filter(|record| record.outcome == "failed").count(), 1, "the refused second evacuation");
    let denied = records.iter().find(|record| record.request_id == denied_request_id).expect("the denied request");
    assert_eq!((denied.action.as_str(), denied.outcome.as_str()), ("cloud_manager:node:maintenance", "denied"));
    assert_eq!(denied.user_id, reader.user_id);
    let done = records.iter().find(|record| record.request_id == admin_request_id).expect("the admin's request");
    assert_eq!(done.outcome, "succeeded");
    assert_eq!(done.target.as_deref(), Some("api-node-1"));
    assert_eq!(done.details, Some(json!({ "maintenance": { "enabled": true } })));
    assert!(!done.project_id.is_empty());
    assert!(records.iter().any(|record| record.action == "cloud_manager:node:evacuation_policy"
        && record.target.as_deref() == Some("api-node-2")));
    api.stop().await
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_the_cache_window_has_passed() -> anyhow::Result<()> {
    let identity = admin_identity().await;
    let reader = create_reader(&identity, "aos-api-reader").await;
    let token = reader_token(&identity, &reader).await;
    let database = TestDatabase::sqlite().await?;
    let api = Api::start(&database, "token_cache_time = 1").await?;
    let token = token.token.expose().clone();
    let (status, _, body) = api.send("GET", "/v1/nodes", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    identity.revoke_token(&token).await?;
    eventually("the revoked token refused", Duration::from_secs(30), Duration::from_millis(250), || async {
        let (status, _, _) = api.send("GET", "/v1/nodes", Some(&token), None).await;
        Ok((status == 401).then_some(())).map_err(|_: ()| String::new())
    })
    .await;
    // And it stays refused (the refusal is cached too).
    let (status, _, _) = api.send("GET", "/v1/nodes", Some(&token), None).await;
    assert_eq!(status, 401);
    api.stop().await
}

#[tokio::test]
async fn bad_requests_name_the_field_and_missing_or_conflicting_things_are_404_and_409() -> anyhow::Result<()> {
    let identity = admin_identity().await;
    let admin_token = identity.issue_token(&admin_settings()).await?;
    let token = admin_token.token.expose().as_str();
    let database = TestDatabase::sqlite().await?;
    let api = Api::start(&database, "max_limit = 3").await?;
    api.add_nodes(&["n-a", "n-b", "n-c", "n-d", "n-e"]).await;

    let cases: &[(&str, &str)] = &[
        (r#"{"maintenance": {"enabled": "yes"}}"#, "`maintenance.enabled`"),
        (r#"{"maintenance": {"enabled": tru"#, "malformed JSON"),
        (r#"{"reboot": {}}"#, "unknown variant `reboot`"),
        (r#"{"evacuate": {"dry_run": true, "force": true}}"#, "force"),
        (r#"{"power": {"action": "explode"}}"#, "`power.action`"),
        ("", "empty"),
    ];
    for (body, expected) in cases {
        let (status, _, answer) = api.send("POST", "/v1/nodes/n-a/action", Some(token), Some(body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message(&answer).contains(expected), "{body}: {answer}");
    }
    let (status, _, answer) = api.send("GET", "/v1/nodes?limit=many", Some(token), None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("`limit`"), "{answer}");
    let (status, _, answer) = api.send("GET", "/v1/nodes?state=sleeping", Some(token), None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("`state`"), "{answer}");
    let (status, _, answer) = api.send("GET", "/v1/nodes?marker=nowhere", Some(token), None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("`marker`"), "{answer}");

    let (status, _, answer) = api.send("GET", "/v1/nodes/nowhere", Some(token), None).await;
    assert_eq!(status, 404, "{answer}");
    assert!(message(&answer).contains("nowhere"), "{answer}");
    assert_eq!(answer["itemNotFound"]["code"], 404);
    let (status, request_id, _) = api.send("GET", "/v1/no-such-collection", Some(token), None).await;
    assert_eq!(status, 404);
    assert!(request_id.starts_with("req-"));
    let (status, _, answer) = api.send("DELETE", "/v1/nodes", Some(token), None).await;
    assert_eq!(status, 405, "{answer}");
    assert_eq!(answer["methodNotAllowed"]["code"], 405, "{answer}");
    let (status, _, answer) =
        api.send("POST", "/v1/nodes/n-a/action", Some(token), Some(r#"{"maintenance": {"enabled": false}}"#)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(message(&answer).contains("n-a is up"), "{answer}");
    let (status, _, answer) =
        api.send("POST", "/v1/nodes/n-a/action", Some(token), Some(r#"{"power": {"action": "status"}}"#)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(message(&answer).contains("no power device"), "{answer}");

    // Pagination: pages of max_limit by name, a next link that keeps the filters.
    let (status, _, page) = api.send("GET", "/v1/nodes?limit=2", Some(token), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    let next = page["nodes_links"][0]["href"].as_str().expect("a next link").to_string();
    assert_eq!(next, "/v1/nodes?limit=2&marker=n-b");
    let (_, _, page) = api.send("GET", &next, Some(token), None).await;
    let names: Vec<&str> =
        page["nodes"].as_array().unwrap().iter().map(|node| node["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n-c", "n-d"]);
    let (_, _, page) = api.send("GET", "/v1/nodes", Some(token), None).await;
    assert_eq!(page["nodes"].as_array().unwrap().len(), 3, "capped at max_limit: {page}");
    // A list answered just before a write (and kept as a snapshot) never hides the write.
    let (_, _, page) = api.send("GET", "/v1/nodes?maintenance=true", Some(token), None).await;
    assert_eq!(page["nodes"], json!([]), "{page}");
    let (status, _, answer) =
        api.send("POST", "/v1/nodes/n-c/action", Some(token), Some(r#"{"maintenance": {"enabled": true}}"#)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, _, page) = api.send("GET", "/v1/nodes?maintenance=true", Some(token), None).await;
    let names: Vec<&str> =
        page["nodes"].as_array().unwrap().iter().map(|node| node["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n-c"]);
    let (_, _, page) = api.send("GET", "/v1/nodes?state=up&limit=1&marker=n-a", Some(token), None).await;
    assert_eq!(page["nodes"][0]["name"], "n-b");
    assert_eq!(page["nodes_links"][0]["href"], "/v1/nodes?state=up&limit=1&marker=n-b");
    api.stop().await
}

#[tokio::test]
async fn settings_show_every_option_with_its_source_to_an_admin_with_secrets_masked() -> anyhow::Result<()> {
    let identity = admin_identity().await;
    let reader = create_reader(&identity, "aos-api-reader").await;
    let reader_token = reader_token(&identity, &reader).await;
    let admin_token = identity.issue_token(&admin_settings()).await?;
    let database = TestDatabase::sqlite().await?;
    let api = Api::start_with(
        &database,
        "max_limit = 77",
        "[DEFAULT]\ntransport_url = rabbit://aos:transport-secret-42@127.0.0.1:5672/aos\n",
    )
    .await?;

    let (status, _, body) = api.send("GET", "/v1/settings", Some(admin_token.token.expose()), None).await;
    assert_eq!(status, 200, "{body}");
    let settings = body["settings"].as_array().expect("a list of settings");
    assert_eq!(settings.len(), aos_config::definitions::OPTIONS.len(), "every known option");
    let find = |section: &str, key: &str| {
        settings
            .iter()
            .find(|setting| setting["section"] == section && setting["key"] == key)
            .unwrap_or_else(|| panic!("[{section}] {key} missing: {body}"))
            .clone()
    };
    let max_limit = find("api", "max_limit");
    assert_eq!((max_limit["value"].as_str(), max_limit["source"].as_str()), (Some("77"), Some("file")), "{max_limit}");
    assert_eq!(max_limit["file"], "test.conf", "{max_limit}");
    let port = find("api", "port");
    assert_eq!((port["value"].as_str(), port["source"].as_str()), (Some("9362"), Some("default")), "{port}");
    assert!(port["file"].is_null(), "{port}");
    let password = find("keystone_authtoken", "password");
    assert_eq!((password["value"].as_str(), password["secret"].as_bool()), (Some("***"), Some(true)), "{password}");
    let transport = find("DEFAULT", "transport_url");
    let shown = transport["value"].as_str().unwrap_or_default();
    assert!(shown.contains("***") && shown.contains("127.0.0.1:5672"), "{transport}");
    let text = body.to_string();
    assert!(!text.contains("transport-secret-42"), "the transport password leaked: {text}");
    assert_eq!(body["files_read"], serde_json::json!(["test.conf"]), "{body}");

    let (status, _, body) = api.send("GET", "/v1/settings", Some(reader_token.token.expose()), None).await;
    assert_eq!(status, 403, "a reader may not see the configuration: {body}");
    assert!(message(&body).contains("cloud_manager:settings:show"), "{body}");
    api.stop().await
}
