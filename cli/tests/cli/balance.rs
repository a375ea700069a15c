//! `balance preview` and `balance run` end to end on the real test cloud
//! (../shared/openstack-env: Keystone, Nova with fake computes that live-migrate, Placement)
//! and MariaDB + RabbitMQ for the task.
//!
//! Three nova-compute hosts of the test's own (`aos-bal-e2e-N`, 2 GiB each, 1.5 GiB after
//! Nova's reserve) in an aggregate of the test's own; nine m1.nano servers booted on the first
//! one (one of them with `aos:balancing=deny`), the other two empty: the first host is loaded
//! (576/1536 = 0.375 against an aggregate load of 0.125 + approx 0.1). `preview` must show a
//! plan that brings every host inside the band without moving the denied server; `run` must
//! execute exactly that plan (same servers, same targets) with live migrations, which Nova's
//! migration records then show, once per server, completed; afterwards no host is loaded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aos_db::testing::TestDatabase;
use aos_openstack::testing::{
    Cleanup, admin_client, eventually, install_crypto_provider, tiny_image_and_nano_flavor, unique_name,
    wait_for_status,
};
use aos_openstack::{MigrationFilter, MigrationType, NewServer, OpenStackClient};
use serde_json::Value;

use crate::support::run_cli;

const HOSTS: [&str; 3] = ["aos-bal-e2e-1", "aos-bal-e2e-2", "aos-bal-e2e-3"];
const HOST_RAM_MB: u32 = 2048;
const SERVERS: usize = 9;

fn compute(verb: &str, host: &str) {
    if let Err(error) = aos_openstack::testing::compute_sh_with_ram(verb, host, HOST_RAM_MB) {
        panic!("{error}");
    }
}

/// (server id, source, target) of each planned migration, in order.
fn moves(plan: &Value) -> Vec<(String, String, String)> {
    plan["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
            (text("server_id"), text("source"), text("target"))
        })
        .collect()
}

async fn ram_used(client: &OpenStackClient, host: &str) -> u64 {
    let providers = client.resource_providers().await.expect("providers");
    let provider = providers.iter().find(|p| p.name == host).expect("provider of our host");
    client.usages(&provider.uuid).await.expect("usages").get("MEMORY_MB").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbalanced_aggregate_is_balanced_by_the_live_migrations_preview_showed() {
    install_crypto_provider();
    let client = admin_client().await;
    let aggregate_name = unique_name("aos-bal-e2e");
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

    // --- the aggregate: three hosts of our own -------------------------------------------
    for host in HOSTS {
        compute("start", host);
    }
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let aggregate = client.create_aggregate(&aggregate_name, None).await.expect("create aggregate");
    for host in HOSTS {
        client.aggregate_add_host(aggregate.id, host).await.expect("add host to aggregate");
    }

    // --- unbalanced on purpose: every server on the first host ---------------------------
    let (image, flavor) = tiny_image_and_nano_flavor(&client).await;
    let denied_name = format!("{aggregate_name}-denied");
    for index in 0..SERVERS {
        let name = if index == 0 { denied_name.clone() } else { format!("{aggregate_name}-{index}") };
        let metadata = if index == 0 {
            [(aos_balance::BALANCING_METADATA_KEY.to_owned(), aos_balance::BALANCING_DENY.to_owned())].into()
        } else {
            Default::default()
        };
        let id = aos_openstack::testing::boot_on(
            &client,
            NewServer {
                name,
                image_id: image.clone(),
                flavor_id: flavor.clone(),
                host: Some(HOSTS[0].to_owned()),
                server_group: None,
                metadata,
            },
        )
        .await;
        server_ids.lock().unwrap().push(id);
    }
    let ids = server_ids.lock().unwrap().clone();
    for id in &ids {
        let server = wait_for_status(&client, id, "ACTIVE").await;
        assert_eq!(server.host.as_deref(), Some(HOSTS[0]));
    }
    let denied_id = ids[0].clone();
    eventually("Placement counts the servers", Duration::from_secs(60), Duration::from_secs(1), || async {
        let used = ram_used(&client, HOSTS[0]).await;
        Ok((used >= 64 * SERVERS as u64).then_some(()).ok_or(format!("{used} MB used")).ok())
    })
    .await;

    // --- the CLI, with a database and the broker for the task ----------------------------
    let database = TestDatabase::mysql().await.expect("test database");
    let db = database.connect_migrated().await.expect("migrated database");
    db.close().await.expect("close");
    let config = aos_testkit::test_config(
        &database,
        &format!(
            "[keystone_authtoken]\nauth_url = {}\nusername = admin\npassword = admin\nproject_name = admin\n\
             interface = public\n\n[balancing]\napprox = 0.1\nmigration_retries = 2\n",
            aos_openstack::testing::auth_url()
        ),
    )
    .expect("config");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let config_file = scratch.path().join("cloud_manager.conf");
    std::fs::write(&config_file, config).expect("write config");

    // --- preview ----------------------------------------------------------------------------
    let preview = run_cli(&config_file, &["balance", "preview", "--aggregate", &aggregate_name, "--json"]);
    assert!(preview.succeeded(), "{}", preview.report());
    let previewed: Value = serde_json::from_str(&preview.stdout).expect("preview JSON");
    let previewed_plan = &previewed[0]["plan"];
    let loaded_before: Vec<&str> = previewed_plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["loaded_before"] == true)
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded_before, [HOSTS[0]], "{}", preview.stdout);
    let planned = moves(previewed_plan);
    assert!(!planned.is_empty(), "{}", preview.stdout);
    assert!(planned.iter().all(|(_, source, _)| source == HOSTS[0]));
    assert!(planned.iter().all(|(server, _, _)| *server != denied_id), "the denied server is planned");
    assert!(
        previewed_plan["hosts"].as_array().unwrap().iter().all(|h| h["loaded_after"] == false),
        "the preview leaves a host loaded: {}",
        preview.stdout
    );
    // The table form names the same moves.
    let table = run_cli(&config_file, &["balance", "preview", "--aggregate", &aggregate_name]);
    assert!(table.succeeded(), "{}", table.report());
    for (server, source, target) in &planned {
        assert!(
            table.table_rows().iter().any(|row| row.get(2) == Some(server) && row[3] == *source && row[4] == *target),
            "{server} {source} → {target} not in:\n{}",
            table.stdout
        );
    }
    println!("preview:\n{}", table.stdout);

    // --- run ----------------------------------------------------------------------------------
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(30);
    let run = run_cli(&config_file, &["balance", "run", "--aggregate", &aggregate_name, "--json"]);
    assert!(run.succeeded(), "{}", run.report());
    let ran: Value = serde_json::from_str(&run.stdout).expect("run JSON");
    let executed_plan = &ran["runs"][0]["plan"];
    assert_eq!(moves(executed_plan), planned, "run executed another plan than preview showed");
    let task = &ran["runs"][0]["task"];
    assert_eq!(task["outcome"], "Succeeded", "{}", run.stdout);
    let steps = task["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), planned.len());
    assert!(steps.iter().all(|step| step["state"] == "succeeded"), "{}", run.stdout);

    // --- what Nova says -------------------------------------------------------------------
    let planned_servers: BTreeSet<&str> = planned.iter().map(|(server, _, _)| server.as_str()).collect();
    for (server, source, target) in &planned {
        let now = client.server(server).await.expect("server");
        assert_eq!(now.host.as_deref(), Some(target.as_str()), "{server}");
        assert_eq!(now.status, "ACTIVE");
        let records: Vec<_> = client
            .migrations(&MigrationFilter {
                instance_uuid: Some(server.clone()),
                migration_type: Some(MigrationType::LiveMigration),
                changes_since: Some(since),
                ..MigrationFilter::default()
            })
            .await
            .expect("migration records")
            .into_iter()
            .filter(|record| record.status != "error" && record.status != "failed")
            .collect();
        assert_eq!(records.len(), 1, "{server}: {records:?}");
        assert_eq!(records[0].status, "completed");
        assert_eq!(records[0].source_compute.as_deref(), Some(source.as_str()));
        assert_eq!(records[0].dest_compute.as_deref(), Some(target.as_str()));
    }
    for id in ids.iter().filter(|id| !planned_servers.contains(id.as_str())) {
        let now = client.server(id).await.expect("server");
        assert_eq!(now.host.as_deref(), Some(HOSTS[0]), "{id} was not planned but moved");
    }
    let after = &ran["after"][0]["plan"];
    assert!(
        after["hosts"].as_array().unwrap().iter().all(|h| h["loaded_before"] == false),
        "a host is still loaded after the run: {}",
        run.stdout
    );
    let second_preview = run_cli(&config_file, &["balance", "preview", "--aggregate", &aggregate_name, "--json"]);
    let second: Value = serde_json::from_str(&second_preview.stdout).expect("preview JSON");
    assert!(moves(&second[0]["plan"]).is_empty(), "a balanced aggregate needs no move: {}", second_preview.stdout);

    // An unknown aggregate is the operator's error, named.
    let unknown = run_cli(&config_file, &["balance", "preview", "--aggregate", "no-such-aggregate-here"]);
    assert!(!unknown.succeeded());
    assert!(unknown.stderr.contains("no-such-aggregate-here"), "{}", unknown.report());
    database.cleanup().await;
}
