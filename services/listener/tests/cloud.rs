//! End to end on the real test cloud (`../shared/openstack-env`, started by
//! `scripts/ensure-openstack.sh`) and the broker Nova really publishes to (exchange `nova` of
//! vhost `osenv`): the listener daemon, on a queue of this test's own, records what Nova
//! sends about a nova-compute of this test's own — `service.update` when it is disabled (and
//! the node's Nova status changes in our database), `instance.*` when a server is booted on
//! it and deleted. The shared `fake-N` hosts are never touched; the compute, the server and
//! the queue are removed even when the test fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aos_db::entity::NotificationStatus;
use aos_db::{DatabaseConnection, ObservedComputeHost};
use aos_openstack::testing::{
    Cleanup, admin_client, delete_servers, eventually, nova_transport_url, remove_own_compute, start_own_compute,
    tiny_image_and_nano_flavor, unique_name, wait_for_status,
};
use aos_openstack::{NewServer, OpenStackClient, OpenStackError, ServiceState, ServiceStatus};
use aos_testkit::testing::TestDatabase;
use aos_testkit::{DaemonProcess, Scratch, test_config, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-listener");

/// The AMQP URI of the test cloud's broker.
fn nova_amqp_uri() -> String {
    nova_transport_url().replacen("rabbit://", "amqp://", 1)
}

/// Deletes the test's queue on Nova's broker when dropped (also when the test panics): it is
/// durable and bound to `nova`, and would otherwise collect Nova's notifications forever.
struct QueueCleanup(String);

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let queue = self.0.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let connection = aos_bus::connect(&nova_amqp_uri(), "aos-listener cloud test cleanup").await?;
                let channel = connection.create_channel().await?;
                channel.queue_delete(queue.as_str().into(), Default::default()).await?;
                aos_bus::close(&connection).await;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the test queue {}: {deleted:?}", self.0);
        }
    }
}

/// What `aos-cloud-manager node sync` does (aos_beat::node_sync; services do not depend on
/// each other): Nova's compute services and hypervisors, mirrored into `nodes`.
async fn node_sync(db: &DatabaseConnection, client: &OpenStackClient) -> anyhow::Result<aos_db::NodeSyncReport> {
    let hypervisors = client.hypervisors().await?;
    let observed: Vec<ObservedComputeHost> = client
        .compute_services()
        .await?
        .into_iter()
        .filter(|service| service.binary == "nova-compute")
        .map(|service| ObservedComputeHost {
            hypervisor_id: hypervisors
                .iter()
                .find(|hypervisor| hypervisor.service_host == service.host)
                .map(|hypervisor| hypervisor.id.clone()),
            status: if service.status == ServiceStatus::Disabled { "disabled" } else { "enabled" }.to_owned(),
            state: if service.state == ServiceState::Up { "up" } else { "down" }.to_owned(),
            forced_down: service.forced_down,
            service_id: Some(service.id),
            host: service.host,
        })
        .collect();
    Ok(aos_db::sync_nodes(db, None, "test node sync", &observed).await?)
}

/// The recorded notifications about `host` of `event_type`.
async fn recorded(
    db: &DatabaseConnection,
    host: &str,
    event_type: &str,
) -> anyhow::Result<Vec<aos_db::entity::notification::Model>> {
    Ok(aos_db::list_notifications(db, Some(host), 1_000)
        .await?
        .into_iter()
        .filter(|row| row.event_type == event_type && row.status == NotificationStatus::Recorded)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn novas_own_notifications_about_a_compute_of_ours_are_recorded_and_mirrored() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = end_to_end(&database).await;
    database.cleanup().await;
    outcome
}

async fn end_to_end(database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let client = admin_client().await;
    let host = unique_name("aos-listener-e2e");
    let server_ids = Arc::new(Mutex::new(Vec::<String>::new()));
    let (cleanup_host, cleanup_servers) = (host.clone(), server_ids.clone());
    let _compute_cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_servers.lock().map(|ids| ids.clone()).unwrap_or_default();
        delete_servers(&client, &ids).await;
        remove_own_compute(&client, &cleanup_host).await;
    });

    // The listener first, on a queue of its own bound to Nova's exchange.
    let queue = unique_name("aos-test-listener-e2e");
    let _queue_cleanup = QueueCleanup(queue.clone());
    let scratch = Scratch::new()?;
    let base = scratch.write_config(&test_config(database, "")?)?;
    let listener_conf = scratch.path().join("listener.conf");
    std::fs::write(
        &listener_conf,
        format!(
            "[listener]\nnova_transport_url = {}\nnotification_exchange = nova\nqueue_name = {queue}\ndurability = True\n",
            nova_transport_url()
        ),
    )?;
    let mut listener =
        DaemonProcess::spawn_with_configs(BINARY, &[&base, &listener_conf], scratch.path().join("listener.log"))?;
    wait_until(Duration::from_secs(60), "the listener to consume from Nova's exchange", || async {
        Ok(listener.log().contains("consuming Nova's notifications").then_some(()))
    })
    .await
    .with_context(|| listener.log())?;
    // Nova's exchange (non-durable on the test cloud) is used as it is: no warning.
    assert!(!listener.log().contains("WARN"), "{}", listener.log());

    // A nova-compute of our own, then node sync: it is a node, with Nova's state.
    let service = start_own_compute(&client, &host).await;
    let report = node_sync(&db, &client).await?;
    assert!(report.added.contains(&host), "{report:?}");
    let node = aos_db::find_node(&db, &host).await?.context("node added by node sync")?;
    assert_eq!(node.nova_status.as_deref(), Some("enabled"));
    assert_eq!(node.nova_service_id.as_deref(), Some(service.id.as_str()));

    // Disabled through Nova's API: Nova's service.update reaches our database.
    client.disable_service(&service.id, "aos listener end-to-end test").await?;
    let node = wait_until(Duration::from_secs(60), "the node to be disabled from Nova's notification", || async {
        Ok(aos_db::find_node(&db, &host).await?.filter(|node| node.nova_status.as_deref() == Some("disabled")))
    })
    .await
    .with_context(|| listener.log())?;
    let updates = recorded(&db, &host, "service.update").await?;
    assert!(
        updates
            .iter()
            .any(|row| row.payload.contains("\"disabled\": true") || row.payload.contains("\"disabled\":true")),
        "a recorded service.update says disabled: {updates:?}"
    );
    let history = aos_db::node_history(&db, node.id, 20).await?;
    assert!(
        history.iter().any(|event| event.kind == aos_db::SERVICE_UPDATE_EVENT && event.actor == "listener"),
        "{history:?}"
    );

    // Enabled again, a server booted on it and deleted: instance.* notifications recorded.
    client.enable_service(&service.id).await?;
    wait_until(Duration::from_secs(60), "the node to be enabled again", || async {
        Ok(aos_db::find_node(&db, &host).await?.filter(|node| node.nova_status.as_deref() == Some("enabled")))
    })
    .await?;
    let (image_id, flavor_id) = tiny_image_and_nano_flavor(&client).await;
    let new_server = NewServer {
        name: unique_name("aos-listener-e2e-vm"),
        image_id,
        flavor_id,
        host: Some(host.clone()),
        ..NewServer::default()
    };
    let server_id =
        eventually("server accepted on our host", Duration::from_secs(60), Duration::from_secs(2), || async {
            match client.create_server(&new_server).await {
                Ok(id) => Ok(Some(id)),
                // Our compute is not schedulable yet (enabled a moment ago).
                Err(error @ OpenStackError::BadRequest { .. }) => Err(error.to_string()),
                Err(error) => panic!("boot on {host}: {error}"),
            }
        })
        .await;
    server_ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(server_id.clone());
    wait_for_status(&client, &server_id, "ACTIVE").await;
    delete_servers(&client, std::slice::from_ref(&server_id)).await;

    for event_type in ["instance.create.start", "instance.create.end", "instance.delete.start", "instance.delete.end"] {
        let rows = wait_until(Duration::from_secs(60), event_type, || async {
            let rows = recorded(&db, &host, event_type).await?;
            Ok(rows.iter().any(|row| row.payload.contains(&server_id)).then_some(rows))
        })
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                let about: Vec<(String, Option<String>, String)> = aos_db::list_notifications(&db, None, 1_000)
                    .await?
                    .into_iter()
                    .filter(|row| row.payload.contains(&server_id))
                    .map(|row| (row.event_type, row.host, format!("{:?}", row.status)))
                    .collect();
                anyhow::bail!(
                    "{error}: no {event_type} about server {server_id} on {host}; about it: {about:?}\n{}",
                    listener.log()
                );
            }
        };
        let publishers: Vec<Option<&str>> = rows.iter().map(|row| row.publisher_id.as_deref()).collect();
        assert!(
            publishers.iter().any(|publisher| *publisher == Some(&format!("nova-compute:{host}"))),
            "{publishers:?}"
        );
    }
    let all = aos_db::list_notifications(&db, Some(&host), 1_000).await?;
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|row| row.event_type.as_str()).collect();
    eprintln!("recorded about {host}: {} notifications, types {kinds:?}", all.len());

    listener.sigterm()?;
    assert!(listener.wait_exit(Duration::from_secs(30)).await?.success(), "{}", listener.log());
    db.close().await?;
    Ok(())
}
