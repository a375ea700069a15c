//! The balancing and DRS resources (`/v1/balancing/...`, `/v1/drs/...`) against the real
//! Keystone and Nova/Placement of the test cloud (`scripts/ensure-openstack.sh`), over a fresh
//! MariaDB database and the local RabbitMQ (a queue prefix of the test's own): a reader reads
//! and may not act, an admin audits an aggregate of the cloud (one the test creates, empty:
//! nothing to recommend), applies a recommended plan (202, its `drs_apply_plan` task recorded
//! and published, no migration in the API), cancels it, and is refused with the plan's state
//! named; unknown ids are 404s, bad fields 400s that name them; every POST is in the audit
//! log.

use std::sync::Arc;

mod common;
use common::{admin_identity, create_reader, reader_token};

use aos_db::{NewDrsAction, NewDrsAudit, NewDrsPlan};
use aos_openstack::testing::{Cleanup, admin_client, admin_settings, unique_name};
use aos_testkit::testing::TestDatabase;
use aos_testkit::{config_database_url, delete_test_queues, queue_prefix, test_job_queue};
use chrono::Utc;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

/// The API served on port 0 over `database`, `[keystone_authtoken]` = the test cloud's admin,
/// tasks published to the local RabbitMQ under the test's own queue prefix.
struct Api {
    address: std::net::SocketAddr,
    shutdown: aos_daemon::ShutdownToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: aos_db::DatabaseConnection,
    http: reqwest::Client,
}

impl Api {
    async fn start(database: &TestDatabase) -> anyhow::Result<Self> {
        database.connect_migrated().await?.close().await?;
        let admin = admin_settings();
        // `[DEFAULT] transport_url` is left at its default: the local RabbitMQ (TEST_AMQP_URI).
        let ini = format!(
            "[database]\nurl = {}\n[keystone_authtoken]\nauth_url = {}\nusername = {}\n\
             password = {}\nproject_name = {}\ninterface = public\n[api]\naudit_enabled = true\n[worker]\nqueue_prefix = {}\n",
            config_database_url(database),
            admin.auth_url,
            admin.username,
            admin.password.expose(),
            admin.project_name,
            queue_prefix(database),
        );
        let loaded = aos_config::load_from_str(&[("test.conf", &ini)]).map_err(|error| anyhow::anyhow!("{error}"))?;
        let shutdown = aos_daemon::ShutdownToken::new();
        let context =
            aos_daemon::DaemonContext::connect(aos_api::ROLE, Arc::new(loaded.config), shutdown.clone()).await?;
        let db = context.db.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(aos_api::serve(listener, context));
        Ok(Self { address, shutdown, server, db, http: reqwest::Client::new() })
    }

    /// `(status, request id header, body)`.
    async fn send(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String, Value) {
        let url = format!("http://{}{}", self.address, path);
        let mut request = self.http.request(method.parse().expect("method"), url).header("X-Auth-Token", token);
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
        self.db.close().await?;
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

/// A recommended plan of one (made-up) live migration for `scope`, recorded through the
/// store as an audit would record it.
async fn recommended_plan(db: &aos_db::DatabaseConnection, scope: &str) -> (String, String) {
    let audit = NewDrsAudit {
        scope: scope.to_owned(),
        source: "planner".into(),
        trigger: "operator".into(),
        actor: "test".into(),
        parameters: None,
    };
    let audit_id = aos_db::drs_start_audit(db, None, &audit, Utc::now()).await.expect("audit");
    let plan = NewDrsPlan {
        external_id: None,
        summary: Some(json!({ "aggregates": [] })),
        actions: vec![NewDrsAction {
            kind: "live_migrate".into(),
            server_id: "00000000-0000-0000-0000-000000000001".into(),
            server_name: "vm-1".into(),
            source_host: Some("host-a".into()),
            target_host: Some("host-b".into()),
            ram_mb: 512,
            vcpus: 1,
            external_id: None,
        }],
    };
    let plan_id = aos_db::drs_finish_audit(db, None, &audit_id, None, Ok(Some(&plan)), Utc::now())
        .await
        .expect("finish the audit")
        .expect("a plan");
    (audit_id, plan_id)
}

#[tokio::test]
async fn readers_read_admins_audit_apply_and_cancel_with_states_named_and_every_post_audited() -> anyhow::Result<()> {
    let identity = admin_identity().await;
    let reader = create_reader(&identity, "aos-api-drs-reader").await;
    let reader_token = reader_token(&identity, &reader).await;
    let admin_token = identity.issue_token(&admin_settings()).await?;
    let reader = reader_token.token.expose().as_str();
    let admin = admin_token.token.expose().as_str();

    // An aggregate of the test cloud, ours alone and empty: nothing to recommend or move.
    let client = admin_client().await;
    let aggregate_name = unique_name("aos-api-drs");
    let aggregate = client.create_aggregate(&aggregate_name, None).await?;
    let aggregate_id = aggregate.id;
    let _delete_aggregate = Cleanup::new(&client, move |client| async move {
        if let Err(error) = client.delete_aggregate(aggregate_id).await {
            eprintln!("could not delete test aggregate {aggregate_id}: {error}");
        }
    });

    let database = TestDatabase::mysql().await?;
    let api = Api::start(&database).await?;
    let (audit_1, plan_1) = recommended_plan(&api.db, &aggregate_name).await;

    // The resources are in the OpenAPI document.
    let text = reqwest::get(format!("http://{}/v1/openapi.json", api.address)).await?.text().await?;
    let document: Value = serde_json::from_str(&text)?;
    for path in [
        "/v1/balancing/preview",
        "/v1/balancing/runs",
        "/v1/drs/audits",
        "/v1/drs/audits/{id}",
        "/v1/drs/plans/{id}",
        "/v1/drs/plans/{id}/apply",
        "/v1/drs/plans/{id}/cancel",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }

    // ----- a reader reads -----
    let (status, _, body) =
        api.send("GET", &format!("/v1/balancing/preview?aggregate={aggregate_name}"), reader, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plans"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["plans"][0]["plan"]["aggregate"], aggregate_name.as_str(), "{body}");
    assert_eq!(body["plans"][0]["plan"]["migrations"], json!([]), "{body}");
    let (status, _, body) = api.send("GET", "/v1/drs/audits", reader, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["audits"][0]["id"], audit_1.as_str(), "{body}");
    assert_eq!(body["audits"][0]["plan"], json!({ "id": plan_1, "state": "recommended" }), "{body}");
    let (status, _, body) = api.send("GET", &format!("/v1/drs/audits/{audit_1}"), reader, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["audit"]["plans"][0]["actions"][0]["server_name"], "vm-1", "{body}");
    let (status, _, body) = api.send("GET", &format!("/v1/drs/plans/{plan_1}"), reader, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"]["state"], "recommended", "{body}");
    assert_eq!(body["plan"]["actions"][0]["state"], "pending", "{body}");
    assert_eq!(body["plan"]["actions"][0]["target_host"], "host-b", "{body}");

    // ----- ... and may not act -----
    let audit_body = json!({ "aggregate": aggregate_name, "source": "planner" }).to_string();
    let (status, denied_request_id, body) = api.send("POST", "/v1/drs/audits", reader, Some(&audit_body)).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("cloud_manager:drs_audit:create"), "{body}");
    let run_body = json!({ "aggregate": aggregate_name }).to_string();
    let (status, _, body) = api.send("POST", "/v1/balancing/runs", reader, Some(&run_body)).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("cloud_manager:balancing:run"), "{body}");
    for verb in ["apply", "cancel"] {
        let (status, _, body) = api.send("POST", &format!("/v1/drs/plans/{plan_1}/{verb}"), reader, None).await;
        assert_eq!(status, 403, "{verb}: {body}");
        assert!(message(&body).contains(&format!("cloud_manager:drs_plan:{verb}")), "{body}");
    }
    let (_, _, body) = api.send("GET", &format!("/v1/drs/plans/{plan_1}"), reader, None).await;
    assert_eq!(body["plan"]["state"], "recommended", "the reader changed nothing: {body}");

    // ----- an admin applies: 202, the task recorded and published, nothing run here -----
    let queue = test_job_queue(&database, &api.db).await?;
    let (status, apply_request_id, body) =
        api.send("POST", &format!("/v1/drs/plans/{plan_1}/apply"), admin, None).await;
    assert_eq!(status, 202, "{body}");
    let task_id = body["task"]["id"].as_str().expect("the task's id").to_owned();
    assert_eq!(body["plan"]["state"], "applying", "{body}");
    assert_eq!(body["plan"]["task_id"], task_id.as_str(), "{body}");
    let (status, _, task) = api.send("GET", &format!("/v1/tasks/{task_id}"), reader, None).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["task"]["kind"], aos_balance::drs::DRS_APPLY_PLAN, "{task}");
    assert_eq!(task["task"]["state"], "pending", "no worker here, and the API runs nothing: {task}");
    assert_eq!(task["task"]["payload"]["plan_id"], plan_1.as_str(), "{task}");
    assert_eq!(queue.depth().await?, 1, "the task is published for the workers");
    queue.close().await;

    // Applied once only; the state is named.
    let (status, _, body) = api.send("POST", &format!("/v1/drs/plans/{plan_1}/apply"), admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("is applying"), "{body}");
    // An applying plan can be cancelled (its task with it), once.
    let (status, cancel_request_id, body) =
        api.send("POST", &format!("/v1/drs/plans/{plan_1}/cancel"), admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"]["state"], "cancelled", "{body}");
    assert_eq!(body["cancelled_task"], task_id.as_str(), "{body}");
    assert_eq!(body["plan"]["actions"][0]["state"], "cancelled", "{body}");
    let (status, _, body) = api.send("POST", &format!("/v1/drs/plans/{plan_1}/cancel"), admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("is cancelled") && message(&body).contains(&plan_1), "{body}");
    let (status, _, body) = api.send("POST", &format!("/v1/drs/plans/{plan_1}/apply"), admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("is cancelled: only a recommended plan can be applied"), "{body}");

    // ----- an admin audits the (empty) aggregate with the planner, on the real cloud -----
    let (_, plan_2) = recommended_plan(&api.db, &aggregate_name).await;
    let (status, audit_request_id, body) = api.send("POST", "/v1/drs/audits", admin, Some(&audit_body)).await;
    assert_eq!(status, 201, "{body}");
    let audit_3 = body["audit"]["id"].as_str().expect("the audit's id").to_owned();
    assert_eq!(body["audit"]["state"], "succeeded", "{body}");
    assert_eq!(body["audit"]["source"], "planner", "{body}");
    assert_eq!(body["audit"]["scope"], aggregate_name.as_str(), "{body}");
    assert_eq!(body["audit"]["plans"], json!([]), "an empty aggregate: nothing recommended: {body}");
    // ... which supersedes the older recommended plan of the same scope.
    let (_, _, body) = api.send("GET", &format!("/v1/drs/plans/{plan_2}"), reader, None).await;
    assert_eq!(body["plan"]["state"], "superseded", "{body}");
    for verb in ["apply", "cancel"] {
        let (status, _, body) = api.send("POST", &format!("/v1/drs/plans/{plan_2}/{verb}"), admin, None).await;
        assert_eq!(status, 409, "{verb}: {body}");
        assert!(message(&body).contains("is superseded"), "{verb}: {body}");
    }
    let (status, _, body) = api.send("GET", &format!("/v1/drs/audits/{audit_3}"), reader, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["audit"]["actor"], format!("{} (api)", admin_token.info.user_name), "{body}");

    // ----- the list: pages by limit and marker, filters -----
    let mut seen = Vec::new();
    let mut next = Some("/v1/drs/audits?aggregate=".to_owned() + &aggregate_name + "&limit=2");
    while let Some(path) = next.take() {
        let (status, _, page) = api.send("GET", &path, reader, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        let audits = page["audits"].as_array().expect("audits");
        assert!(audits.len() <= 2, "{page}");
        seen.extend(audits.iter().map(|audit| audit["id"].as_str().unwrap().to_owned()));
        next = page["audits_links"][0]["href"].as_str().map(str::to_owned);
        assert!(seen.len() <= 4, "the pages do not end: {seen:?}");
    }
    seen.sort();
    let mut expected = vec![audit_1.clone(), audit_3.clone()];
    expected.push(aos_db::drs_find_plan(&api.db, &plan_2).await?.expect("plan 2").0.audit_id);
    expected.sort();
    assert_eq!(seen, expected, "every audit once");
    let (_, _, page) = api.send("GET", "/v1/drs/audits?source=watcher", reader, None).await;
    assert_eq!(page["audits"], json!([]), "{page}");
    let (_, _, page) = api.send("GET", "/v1/drs/audits?state=failed", reader, None).await;
    assert_eq!(page["audits"], json!([]), "{page}");

    // ----- balancing runs: nothing to move here; never two of one aggregate at once -----
    let (status, _, body) = api.send("POST", "/v1/balancing/runs", admin, Some(&run_body)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"], Value::Null, "{body}");
    assert_eq!(body["plan"]["aggregate"], aggregate_name.as_str(), "{body}");
    let busy = aos_jobs::NewTask::new(
        aos_balance::BALANCE_AGGREGATE,
        json!({ "aggregate": aggregate_name, "migrations": [], "actor": "test" }),
    );
    let busy = aos_jobs::insert_task(&api.db, &busy).await?.task_id.to_string();
    let (status, _, body) = api.send("POST", "/v1/balancing/runs", admin, Some(&run_body)).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains(&busy) && message(&body).contains("pending"), "{body}");

    // ----- unknown ids: 404; bad fields: 400 naming them -----
    for (method, path) in [
        ("GET", "/v1/drs/audits/no-such-audit"),
        ("GET", "/v1/drs/plans/no-such-plan"),
        ("POST", "/v1/drs/plans/no-such-plan/apply"),
        ("POST", "/v1/drs/plans/no-such-plan/cancel"),
    ] {
        let (status, _, body) = api.send(method, path, admin, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(message(&body).contains("no-such-"), "{body}");
    }
    let bad_bodies: &[(&str, &str, &str)] = &[
        ("/v1/drs/audits", r#"{"source": "oracle"}"#, "`source`"),
        ("/v1/drs/audits", r#"{"aggregate": 5}"#, "`aggregate`"),
        ("/v1/drs/audits", r#"{"source": "planner", "goal": "x"}"#, "`goal`"),
        ("/v1/drs/audits", r#"{"source": "watcher"}"#, "[drs] host"),
        ("/v1/drs/audits", r#"{"scope": "x"}"#, "scope"),
        ("/v1/balancing/runs", "{}", "aggregate"),
        ("/v1/balancing/runs", r#"{"aggregate": "aos-api-drs-no-such-aggregate"}"#, "`aggregate`"),
        ("/v1/balancing/runs", r#"{"aggregate": "agg", "concurrency": 2}"#, "concurrency"),
    ];
    for (path, body, expected) in bad_bodies {
        let (status, _, answer) = api.send("POST", path, admin, Some(body)).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(message(&answer).contains(expected), "{path} {body}: {answer}");
    }
    for (path, expected) in [
        ("/v1/drs/audits?marker=nowhere", "`marker`"),
        ("/v1/drs/audits?state=sleeping", "`state`"),
        ("/v1/drs/audits?limit=0", "`limit`"),
        ("/v1/balancing/preview?aggregate=aos-api-drs-no-such-aggregate", "`aggregate`"),
    ] {
        let (status, _, answer) = api.send("GET", path, reader, None).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(message(&answer).contains(expected), "{path}: {answer}");
    }

    // ----- every POST past authentication is in the audit log -----
    let records = aos_db::entity::audit_log::Entity::find().all(&api.db).await?;
    let record = |request_id: &str| {
        records
            .iter()
            .find(|record| record.request_id == request_id)
            .unwrap_or_else(|| panic!("no audit record of {request_id}: {records:#?}"))
    };
    let denied = record(&denied_request_id);
    assert_eq!((denied.action.as_str(), denied.outcome.as_str()), ("cloud_manager:drs_audit:create", "denied"));
    let applied = record(&apply_request_id);
    assert_eq!((applied.action.as_str(), applied.outcome.as_str()), ("cloud_manager:drs_plan:apply", "accepted"));
    assert_eq!(applied.target.as_deref(), Some(plan_1.as_str()));
    let cancelled = record(&cancel_request_id);
    assert_eq!((cancelled.action.as_str(), cancelled.outcome.as_str()), ("cloud_manager:drs_plan:cancel", "succeeded"));
    let audited = record(&audit_request_id);
    assert_eq!((audited.action.as_str(), audited.outcome.as_str()), ("cloud_manager:drs_audit:create", "succeeded"));
    assert_eq!(audited.target.as_deref(), Some(audit_3.as_str()));
    assert_eq!(audited.details.as_ref().map(|details| details["source"].clone()), Some(json!("planner")));
    assert!(
        records.iter().any(|record| record.action == "cloud_manager:balancing:run" && record.outcome == "failed"),
        "the refused run: {records:#?}"
    );
    assert!(
        records
            .iter()
            .filter(|record| record.action == "cloud_manager:drs_plan:apply" && record.outcome == "failed")
            .count()
            >= 3,
        "the refused applies: {records:#?}"
    );

    api.stop().await?;
    delete_test_queues(&database).await;
    database.cleanup().await;
    Ok(())
}

const HOSTS: [&str; 2] = ["aos-api-bal-1", "aos-api-bal-2"];
const SERVERS: usize = 4;

/// An aggregate of two hosts of our own, its servers all on the first: the preview shows the
/// planner's moves, a run records exactly those as a `balance_aggregate` task for the workers
/// (202; nothing migrates in the API), and a planner audit recommends them as a plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancing_run_records_the_previewed_moves_for_the_workers() -> anyhow::Result<()> {
    use std::time::Duration;

    use aos_openstack::testing::{eventually, tiny_image_and_nano_flavor, wait_for_status};

    let identity = admin_identity().await;
    let admin_token = identity.issue_token(&admin_settings()).await?;
    let admin = admin_token.token.expose().as_str();
    let client = admin_client().await;
    let aggregate_name = unique_name("aos-api-bal");
    let server_ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (cleanup_ids, cleanup_aggregate) = (Arc::clone(&server_ids), aggregate_name.clone());
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().unwrap().clone();
        aos_openstack::testing::delete_servers(&client, &ids).await;
        if let Ok(aggregates) = client.aggregates().await {
            for aggregate in aggregates.into_iter().filter(|a| a.name == cleanup_aggregate) {
                for host in &aggregate.hosts {
                    let _ = client.aggregate_remove_host(aggregate.id, host).await;
                }
                let _ = client.delete_aggregate(aggregate.id).await;
            }
        }
        for host in HOSTS {
            aos_openstack::testing::remove_own_compute(&client, host).await;
        }
    });
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let aggregate = client.create_aggregate(&aggregate_name, None).await?;
    for host in HOSTS {
        client.aggregate_add_host(aggregate.id, host).await?;
    }
    let (image, flavor) = tiny_image_and_nano_flavor(&client).await;
    for index in 0..SERVERS {
        let server = aos_openstack::NewServer {
            name: format!("{aggregate_name}-{index}"),
            image_id: image.clone(),
            flavor_id: flavor.clone(),
            host: Some(HOSTS[0].to_owned()),
            server_group: None,
            metadata: Default::default(),
        };
        let id = aos_openstack::testing::boot_on(&client, server).await;
        server_ids.lock().unwrap().push(id);
    }
    let ids = server_ids.lock().unwrap().clone();
    for id in &ids {
        wait_for_status(&client, id, "ACTIVE").await;
    }

    let database = TestDatabase::mysql().await?;
    let api = Api::start(&database).await?;
    // The preview, once Placement counts every server on the first host.
    let preview =
        eventually("a preview with the first host loaded", Duration::from_secs(60), Duration::from_secs(1), || async {
            let (status, _, body) =
                api.send("GET", &format!("/v1/balancing/preview?aggregate={aggregate_name}"), admin, None).await;
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
            let plan = body["plans"][0]["plan"].clone();
            let loaded = plan["hosts"].as_array().is_some_and(|hosts| {
                hosts.iter().any(|host| host["name"] == HOSTS[0] && host["loaded_before"] == true)
            });
            let all_counted = plan["hosts"].as_array().is_some_and(|hosts| {
                hosts.iter().any(|host| {
                    host["name"] == HOSTS[0] && host["ram_mb"]["used"].as_u64() >= Some(64 * SERVERS as u64)
                })
            });
            Ok((loaded && all_counted).then_some(plan)).map_err(|_: ()| body.to_string())
        })
        .await;
    let previewed = preview["migrations"].as_array().cloned().unwrap_or_default();
    assert!(!previewed.is_empty(), "{preview}");
    assert!(previewed.iter().all(|m| m["source"] == HOSTS[0] && m["target"] == HOSTS[1]), "{preview}");

    let queue = test_job_queue(&database, &api.db).await?;
    let run_body = json!({ "aggregate": aggregate_name }).to_string();
    let (status, _, body) = api.send("POST", "/v1/balancing/runs", admin, Some(&run_body)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["plan"]["migrations"], json!(previewed), "the run records what the preview showed: {body}");
    let task_id = body["task"]["id"].as_str().expect("the task's id").to_owned();
    let (status, _, task) = api.send("GET", &format!("/v1/tasks/{task_id}"), admin, None).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["task"]["kind"], aos_balance::BALANCE_AGGREGATE, "{task}");
    assert_eq!(task["task"]["state"], "pending", "{task}");
    let payload: aos_balance::BalanceTask = serde_json::from_value(task["task"]["payload"].clone())?;
    assert_eq!(payload.aggregate, aggregate_name);
    assert_eq!(serde_json::to_value(&payload.migrations)?, json!(previewed));
    assert_eq!(payload.actor, format!("{} (api)", admin_token.info.user_name));
    assert_eq!(queue.depth().await?, 1, "published for the workers");
    queue.close().await;
    // The API migrated nothing: every server is still on the first host.
    for id in &ids {
        assert_eq!(client.server(id).await?.host.as_deref(), Some(HOSTS[0]));
    }
    // A second run while the first task is pending is refused, naming it.
    let (status, _, body) = api.send("POST", "/v1/balancing/runs", admin, Some(&run_body)).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains(&task_id), "{body}");

    // A planner audit of the aggregate recommends the same moves as a plan.
    let audit_body = json!({ "aggregate": aggregate_name, "source": "planner" }).to_string();
    let (status, _, body) = api.send("POST", "/v1/drs/audits", admin, Some(&audit_body)).await;
    assert_eq!(status, 201, "{body}");
    let plan = &body["audit"]["plans"][0];
    assert_eq!(plan["state"], "recommended", "{body}");
    let recommended: Vec<(Value, Value, Value)> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|action| (action["server_id"].clone(), action["source_host"].clone(), action["target_host"].clone()))
        .collect();
    let planned: Vec<(Value, Value, Value)> =
        previewed.iter().map(|m| (m["server_id"].clone(), m["source"].clone(), m["target"].clone())).collect();
    assert_eq!(recommended, planned, "{body}");

    api.stop().await?;
    delete_test_queues(&database).await;
    database.cleanup().await;
    Ok(())
}
