//! `drs audit create|list|show`, `drs plan show|apply|cancel` on MariaDB and SQLite, with the
//! real test cloud for the planner source (an aggregate of the test's own without hosts: the
//! audit succeeds with nothing to do and supersedes the recommended plan of its scope). The
//! plans that are shown, cancelled and refused are recorded through `aos_db` directly; applying
//! a plan by live migrations is tested end to end in aos-beat (planner) and aos-balance
//! (the real Watcher).

use aos_db::{NewDrsAction, NewDrsAudit, NewDrsPlan};
use aos_openstack::testing::{admin_client, install_crypto_provider, unique_name};
use serde_json::Value;

use crate::support::{Backend, Fixture, on_both_backends};

fn keystone_section() -> String {
    format!(
        "[keystone_authtoken]\nauth_url = {}\nusername = admin\npassword = admin\nproject_name = admin\ninterface = public\n",
        aos_openstack::testing::auth_url()
    )
}

async fn recorded_plan(fixture: &Fixture, scope: &str) -> String {
    let db = fixture.database.connect().await.expect("connect");
    let audit = NewDrsAudit {
        scope: scope.into(),
        source: "watcher".into(),
        trigger: "operator".into(),
        actor: "test".into(),
        parameters: None,
    };
    let audit_id = aos_db::drs_start_audit(&db, None, &audit, chrono::Utc::now()).await.expect("audit");
    let plan = NewDrsPlan {
        external_id: Some("watcher-plan-1".into()),
        summary: Some(serde_json::json!({ "ignored": [
            { "uuid": "a-3", "action_type": "nop", "reason": "nop actions are not applied by aos-cloud-manager" }
        ]})),
        actions: vec![NewDrsAction {
            kind: "live_migrate".into(),
            server_id: "11111111-2222-3333-4444-555555555555".into(),
            server_name: "web-1".into(),
            source_host: Some("compute-1".into()),
            target_host: Some("compute-2".into()),
            ram_mb: 512,
            vcpus: 1,
            external_id: Some("a-1".into()),
        }],
    };
    let plan_id =
        aos_db::drs_finish_audit(&db, None, &audit_id, Some("watcher-audit-1"), Ok(Some(&plan)), chrono::Utc::now())
            .await
            .expect("plan")
            .expect("plan id");
    db.close().await.expect("close");
    plan_id
}

async fn plans_are_shown_cancelled_superseded_and_refused_with_their_state(backend: Backend) {
    install_crypto_provider();
    let client = admin_client().await;
    let aggregate = unique_name("aos-drs-cli");
    let created = client.create_aggregate(&aggregate, None).await.expect("aggregate");
    let fixture = Fixture::new(backend, &format!("\n{}", keystone_section())).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());

    // A recommended plan: shown with its action and what was ignored.
    let plan_id = recorded_plan(&fixture, &aggregate).await;
    let shown = fixture.run(&["drs", "plan", "show", &plan_id]);
    assert!(shown.succeeded(), "{}", shown.report());
    assert!(
        shown.stdout.contains(&format!("action plan {plan_id} (watcher, {aggregate}): recommended")),
        "{}",
        shown.stdout
    );
    shown.assert_row(&["1", "web-1", "11111111-2222-3333-4444-555555555555", "compute-1", "compute-2", "pending", ""]);
    assert!(shown.stdout.contains("ignored: \"nop\" \"a-3\""), "{}", shown.stdout);

    // Cancel it; then neither apply nor cancel is allowed, and the message names the state.
    let cancel = fixture.run(&["drs", "plan", "cancel", &plan_id]);
    assert!(cancel.succeeded(), "{}", cancel.report());
    assert!(cancel.stdout.contains(&format!("action plan {plan_id} cancelled")), "{}", cancel.stdout);
    let apply = fixture.run(&["drs", "plan", "apply", &plan_id]);
    assert!(!apply.succeeded());
    assert!(apply.stderr.contains("is cancelled: only a recommended plan can be applied"), "{}", apply.report());
    let again = fixture.run(&["drs", "plan", "cancel", &plan_id]);
    assert!(!again.succeeded());
    assert!(
        again.stderr.contains("is cancelled: only a recommended or applying plan can be cancelled"),
        "{}",
        again.report()
    );
    let json = fixture.run(&["drs", "plan", "show", &plan_id, "--json"]);
    let value: Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    assert_eq!(value["plan"]["state"], "cancelled");
    assert_eq!(value["actions"][0]["state"], "cancelled");

    // An audit of the same scope supersedes a recommended plan (the planner on an aggregate
    // without hosts recommends nothing).
    let second = recorded_plan(&fixture, &aggregate).await;
    let audit = fixture.run(&["drs", "audit", "create", "--aggregate", &aggregate, "--source", "planner", "--json"]);
    assert!(audit.succeeded(), "{}", audit.report());
    let audited: Value = serde_json::from_str(&audit.stdout).expect("audit JSON");
    assert_eq!(audited["audit"]["audit"]["state"], "succeeded", "{}", audit.stdout);
    assert_eq!(audited["audit"]["audit"]["source"], "planner");
    assert!(audited["audit"]["plans"].as_array().unwrap().is_empty(), "{}", audit.stdout);
    let audit_id = audited["audit"]["audit"]["id"].as_str().unwrap().to_owned();
    let superseded = fixture.run(&["drs", "plan", "apply", &second]);
    assert!(
        superseded.stderr.contains("is superseded: only a recommended plan can be applied"),
        "{}",
        superseded.report()
    );

    // list and show
    let list = fixture.run(&["drs", "audit", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    let rows = list.table_rows();
    assert_eq!(rows[0][..3], ["Audit", "Created", "Source"]);
    assert_eq!(rows[1][0], audit_id, "newest first:\n{}", list.stdout);
    assert_eq!(
        (rows[1][2].as_str(), rows[1][3].as_str(), rows[1][4].as_str()),
        ("planner", aggregate.as_str(), "succeeded")
    );
    assert!(rows.iter().any(|row| row[5] == second && row[6] == "superseded"), "{}", list.stdout);
    let show = fixture.run(&["drs", "audit", "show", &audit_id]);
    assert!(show.succeeded(), "{}", show.report());
    assert!(show.stdout.contains("no action recommended"), "{}", show.stdout);

    // Unknown ids and a source that is not configured are named.
    let unknown = fixture.run(&["drs", "plan", "show", "no-such-plan"]);
    assert!(!unknown.succeeded() && unknown.stderr.contains("no DRS action plan no-such-plan"), "{}", unknown.report());
    let unknown = fixture.run(&["drs", "plan", "apply", "no-such-plan"]);
    assert!(unknown.stderr.contains("no DRS action plan no-such-plan"), "{}", unknown.report());
    let unknown = fixture.run(&["drs", "audit", "show", "no-such-audit"]);
    assert!(unknown.stderr.contains("no DRS audit no-such-audit"), "{}", unknown.report());
    let watcher = fixture.run(&["drs", "audit", "create", "--source", "watcher"]);
    assert!(watcher.stderr.contains("[drs] host is empty"), "{}", watcher.report());
    let unknown_aggregate =
        fixture.run(&["drs", "audit", "create", "--aggregate", "no-such-aggregate-here", "--source", "planner"]);
    assert!(!unknown_aggregate.succeeded());
    assert!(unknown_aggregate.stdout.contains("no-such-aggregate-here"), "{}", unknown_aggregate.report());

    let _ = client.delete_aggregate(created.id).await;
}

on_both_backends!(plans_are_shown_cancelled_superseded_and_refused_with_their_state);
