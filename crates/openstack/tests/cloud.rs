//! Against the real test cloud (Keystone, Nova with fake computes, Placement on 127.0.0.1;
//! `scripts/ensure-openstack.sh` starts it). Tests that change a compute service use a
//! nova-compute of their own (`aos-os-test-*`), never the shared `fake-N` hosts; servers and
//! aggregates they create are deleted even when they fail. The helpers are
//! `aos_openstack::testing`'s (feature `testing`), shared with other crates' tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_openstack::testing::*;
use aos_openstack::{
    MigrationFilter, MigrationType, NewServer, OpenStackClient, OpenStackError, ServerFilter, ServiceState,
    ServiceStatus,
};
use chrono::Utc;

#[tokio::test]
async fn connecting_with_the_admin_credentials_authenticates_and_finds_nova_and_placement() {
    let client = admin_client().await;
    let printed = format!("{client:?}");
    assert!(printed.contains("OpenStackClient") && printed.contains("RegionOne"), "{printed}");
}

#[tokio::test]
async fn compute_services_list_the_three_fake_hosts_as_nova_compute_with_uuids() {
    let client = admin_client().await;
    let services = client.compute_services().await.unwrap();
    assert!(services.len() >= 3, "{services:#?}");
    for host in ["fake-1", "fake-2", "fake-3"] {
        let service = services.iter().find(|service| service.host == host).unwrap_or_else(|| panic!("{host} missing"));
        assert_eq!(service.binary, "nova-compute");
        assert_eq!(service.zone, "nova");
        assert_eq!(service.id.len(), 36, "service ids are UUIDs at 2.53: {}", service.id);
        assert!(service.updated_at.is_some());
    }
    assert!(services.iter().all(|service| service.binary == "nova-compute"));
}

#[tokio::test]
async fn hypervisors_are_listed_with_the_service_that_owns_them() {
    let client = admin_client().await;
    let services = client.compute_services().await.unwrap();
    let hypervisors = client.hypervisors().await.unwrap();
    for host in ["fake-1", "fake-2", "fake-3"] {
        let hypervisor = hypervisors
            .iter()
            .find(|hypervisor| hypervisor.hypervisor_hostname == host)
            .unwrap_or_else(|| panic!("no hypervisor {host} in {hypervisors:#?}"));
        let service = services.iter().find(|service| service.host == host).unwrap();
        assert_eq!(hypervisor.service_host, host);
        assert_eq!(hypervisor.service_id, service.id);
        assert_eq!(hypervisor.hypervisor_type.as_deref(), Some("fake"));
        assert_eq!(hypervisor.id.len(), 36);
    }
}

#[tokio::test]
async fn a_compute_of_our_own_can_be_disabled_with_a_reason_forced_down_and_restored() {
    const HOST: &str = "aos-os-test-admin";
    let client = admin_client().await;
    let _cleanup = Cleanup::new(&client, |client| async move { remove_own_compute(&client, HOST).await });
    let service = start_own_compute(&client, HOST).await;

    let disabled = client.disable_service(&service.id, "aos: maintenance window").await.unwrap();
    assert_eq!(disabled.status, ServiceStatus::Disabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("aos: maintenance window"));
    let listed = compute_service(&client, HOST).await.unwrap();
    assert_eq!(listed.disabled_reason.as_deref(), Some("aos: maintenance window"));

    let enabled = client.enable_service(&service.id).await.unwrap();
    assert_eq!(enabled.status, ServiceStatus::Enabled);
    assert_eq!(enabled.disabled_reason, None);

    let forced = client.set_forced_down(&service.id, true).await.unwrap();
    assert!(forced.forced_down);
    assert_eq!(forced.state, ServiceState::Down, "a forced-down service reads down at once");

    // No servers, no evacuations: Nova lets us clear it, and the live compute is up again.
    let cleared = client.set_forced_down(&service.id, false).await.unwrap();
    assert!(!cleared.forced_down);
    let listed = compute_service(&client, HOST).await.unwrap();
    assert_eq!(listed.state, ServiceState::Up);
    assert!(!listed.forced_down);
}

#[tokio::test]
async fn servers_of_another_project_are_listed_by_host_and_a_live_migration_is_recorded() {
    let admin = admin_client().await;
    let owner = connect(other_project_settings()).await;
    let (source, destination) = two_usable_fake_hosts(&admin).await;
    let (image_id, flavor_id) = tiny_image_and_nano_flavor(&admin).await;
    let started_at = Utc::now() - chrono::TimeDelta::seconds(5);

    let group = owner.create_server_group(&unique_name("aos-os-test-group"), "soft-anti-affinity").await.unwrap();
    let server_id = owner
        .create_server(&NewServer {
            name: unique_name("aos-os-test-vm"),
            image_id,
            flavor_id,
            host: Some(source.clone()),
            server_group: Some(group.id.clone()),
            metadata: BTreeMap::from([("recovery_priority".to_string(), "7".to_string())]),
        })
        .await;
    let server_id = server_id.unwrap();
    let cleanup_ids = (server_id.clone(), group.id.clone());
    let _cleanup = Cleanup::new(&owner, move |owner| async move {
        delete_servers(&owner, std::slice::from_ref(&cleanup_ids.0)).await;
        let _ = owner.delete_server_group(&cleanup_ids.1).await;
    });
    let booted = wait_for_status(&admin, &server_id, "ACTIVE").await;
    assert_eq!(booted.host.as_deref(), Some(source.as_str()));

    let on_source = admin
        .servers(&ServerFilter { host: Some(source.clone()), all_tenants: true, ..ServerFilter::default() })
        .await
        .unwrap();
    let listed = on_source.iter().find(|server| server.id == server_id).expect("listed on its host");
    assert_eq!(listed.vm_state.as_deref(), Some("active"));
    assert_eq!(listed.power_state, aos_openstack::PowerState::Running);
    assert_eq!(listed.flavor.as_ref().map(|flavor| (flavor.ram_mb, flavor.vcpus)), Some((64, 1)));
    assert_eq!(listed.metadata.get("recovery_priority").map(String::as_str), Some("7"));
    assert_ne!(listed.tenant_id, None);
    let own_project_only = admin
        .servers(&ServerFilter { host: Some(source.clone()), all_tenants: false, ..ServerFilter::default() })
        .await
        .unwrap();
    assert!(
        !own_project_only.iter().any(|server| server.id == server_id),
        "another project's server needs all_tenants"
    );
    let elsewhere = admin
        .servers(&ServerFilter { host: Some(destination.clone()), all_tenants: true, ..ServerFilter::default() })
        .await
        .unwrap();
    assert!(!elsewhere.iter().any(|server| server.id == server_id));
    let changed_since =
        |since| ServerFilter { all_tenants: true, changes_since: Some(since), ..ServerFilter::default() };
    let changed = admin.servers(&changed_since(started_at)).await.unwrap();
    assert!(changed.iter().any(|server| server.id == server_id), "changed since the test started");
    let later = admin.servers(&changed_since(Utc::now() + chrono::TimeDelta::hours(1))).await.unwrap();
    assert!(!later.iter().any(|server| server.id == server_id), "not changed since a time to come");

    assert_eq!(admin.server(&server_id).await.unwrap().server_groups, Some(vec![group.id.clone()]));
    let groups = admin.server_groups().await.unwrap();
    let listed_group = groups.iter().find(|listed| listed.id == group.id).expect("group listed across projects");
    assert_eq!(listed_group.members, vec![server_id.clone()]);
    assert_eq!(listed_group.policy, "soft-anti-affinity");

    admin.live_migrate(&server_id, Some(&destination)).await.unwrap();
    eventually("server live-migrated", Duration::from_secs(90), Duration::from_secs(1), || async {
        let server = admin.server(&server_id).await.map_err(|error| error.to_string())?;
        if server.host.as_deref() == Some(destination.as_str())
            && server.status == "ACTIVE"
            && server.task_state.is_none()
        {
            Ok(Some(()))
        } else {
            Err(format!("{} on {:?} task {:?}", server.status, server.host, server.task_state))
        }
    })
    .await;
    let migrations = admin
        .migrations(&MigrationFilter { instance_uuid: Some(server_id.clone()), ..MigrationFilter::default() })
        .await
        .unwrap();
    let migration = migrations.first().expect("a migration record");
    assert_eq!(migration.migration_type, MigrationType::LiveMigration);
    assert_eq!(migration.source_compute.as_deref(), Some(source.as_str()));
    assert_eq!(migration.dest_compute.as_deref(), Some(destination.as_str()));
    assert_eq!(migration.status, "completed");
    let recent_live_migrations_on_destination = admin
        .migrations(&MigrationFilter {
            host: Some(destination.clone()),
            migration_type: Some(MigrationType::LiveMigration),
            changes_since: Some(started_at),
            ..MigrationFilter::default()
        })
        .await
        .unwrap();
    assert!(recent_live_migrations_on_destination.iter().any(|found| found.instance_uuid == server_id));
}

#[tokio::test]
async fn evacuation_at_2_94_keeps_an_active_server_active_and_a_stopped_one_stopped() {
    const HOST: &str = "aos-os-test-evacuate";
    let client = admin_client().await;
    let (image_id, flavor_id) = tiny_image_and_nano_flavor(&client).await;
    let server_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let cleanup_ids = Arc::clone(&server_ids);
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().unwrap().clone();
        delete_servers(&client, &ids).await;
        // The killed compute must run again for its evacuation records to complete.
        compute_sh("start", HOST);
        if let Some(service) = compute_service(&client, HOST).await {
            let _ = eventually("evacuations completed", Duration::from_secs(60), Duration::from_secs(1), || async {
                match client.set_forced_down(&service.id, false).await {
                    Ok(_) => Ok(Some(())),
                    Err(error) => Err(error.to_string()),
                }
            })
            .await;
        }
        remove_own_compute(&client, HOST).await;
    });
    let service = start_own_compute(&client, HOST).await;
    // Booting on a named host needs its host mapping (the scheduler discovers hosts every 5 s).
    let mut booted = Vec::new();
    for state in ["active", "stopped"] {
        let name = unique_name(&format!("aos-os-test-evacuate-{state}"));
        let new_server = NewServer {
            name,
            image_id: image_id.clone(),
            flavor_id: flavor_id.clone(),
            host: Some(HOST.to_string()),
            ..NewServer::default()
        };
        let id = eventually("server accepted on our host", Duration::from_secs(60), Duration::from_secs(2), || async {
            match client.create_server(&new_server).await {
                Ok(id) => Ok(Some(id)),
                Err(error @ OpenStackError::BadRequest { .. }) => Err(error.to_string()),
                Err(error) => panic!("boot on {HOST}: {error}"),
            }
        })
        .await;
        server_ids.lock().unwrap().push(id.clone());
        booted.push(id);
    }
    let (active_id, stopped_id) = (booted[0].clone(), booted[1].clone());
    wait_for_status(&client, &active_id, "ACTIVE").await;
    wait_for_status(&client, &stopped_id, "ACTIVE").await;
    // Nothing else should land on a host we are about to kill.
    client.disable_service(&service.id, "aos-openstack tests: about to be killed").await.unwrap();
    client.stop_server(&stopped_id).await.unwrap();
    wait_for_status(&client, &stopped_id, "SHUTOFF").await;

    // While its compute is alive, Nova refuses to evacuate from the host.
    let refused = client.evacuate(&active_id, None).await.unwrap_err();
    assert!(matches!(refused, OpenStackError::ServiceInUse { .. }), "{refused:?}");

    compute_sh("kill", HOST);
    eventually("killed compute seen down", Duration::from_secs(60), Duration::from_secs(1), || async {
        match compute_service(&client, HOST).await {
            Some(service) if service.state == ServiceState::Down => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    client.set_forced_down(&service.id, true).await.unwrap();
    for id in [&active_id, &stopped_id] {
        client.evacuate(id, None).await.unwrap();
    }
    let active = wait_for_server(&client, &active_id, "ACTIVE", Some(HOST)).await;
    let stopped = wait_for_server(&client, &stopped_id, "SHUTOFF", Some(HOST)).await;
    assert_eq!(active.vm_state.as_deref(), Some("active"));
    assert_eq!(stopped.vm_state.as_deref(), Some("stopped"));
    let evacuations = client
        .migrations(&MigrationFilter {
            host: Some(HOST.to_string()),
            migration_type: Some(MigrationType::Evacuation),
            ..MigrationFilter::default()
        })
        .await
        .unwrap();
    for id in [&active_id, &stopped_id] {
        assert!(evacuations.iter().any(|migration| &migration.instance_uuid == id), "{evacuations:#?}");
    }

    // The evacuations stay `done` until the compute runs again: Nova will not un-force it.
    let refused = client.set_forced_down(&service.id, false).await.unwrap_err();
    assert!(matches!(refused, OpenStackError::ServiceInUse { status: 400, .. }), "{refused:?}");
}

#[tokio::test]
async fn aggregates_can_be_created_given_a_host_emptied_and_deleted() {
    let client = admin_client().await;
    let name = unique_name("aos-os-test-aggregate");
    let aggregate = client.create_aggregate(&name, None).await.unwrap();
    let aggregate_id = aggregate.id;
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let _ = client.aggregate_remove_host(aggregate_id, "fake-1").await;
        let _ = client.delete_aggregate(aggregate_id).await;
    });
    assert_eq!(aggregate.name, name);
    assert!(aggregate.hosts.is_empty());

    let with_host = client.aggregate_add_host(aggregate.id, "fake-1").await.unwrap();
    assert_eq!(with_host.hosts, vec!["fake-1".to_string()]);
    let listed = client.aggregates().await.unwrap();
    assert_eq!(listed.iter().find(|found| found.id == aggregate.id).unwrap().hosts, vec!["fake-1".to_string()]);
    let twice = client.aggregate_add_host(aggregate.id, "fake-1").await.unwrap_err();
    assert!(matches!(twice, OpenStackError::Conflict { .. }), "{twice:?}");
    let unknown_host = client.aggregate_add_host(aggregate.id, "no-such-host").await.unwrap_err();
    assert!(matches!(unknown_host, OpenStackError::NotFound { .. }), "{unknown_host:?}");

    let emptied = client.aggregate_remove_host(aggregate.id, "fake-1").await.unwrap();
    assert!(emptied.hosts.is_empty());
    client.delete_aggregate(aggregate.id).await.unwrap();
    assert!(!client.aggregates().await.unwrap().iter().any(|found| found.id == aggregate.id));
}

#[tokio::test]
async fn placement_reports_inventories_usages_and_capacity_of_every_fake_host() {
    let client = admin_client().await;
    let providers = client.resource_providers().await.unwrap();
    let hypervisors = client.hypervisors().await.unwrap();
    let capacities = client.capacities().await.unwrap();
    for host in ["fake-1", "fake-2", "fake-3"] {
        let provider = providers.iter().find(|provider| provider.name == host).expect("provider per host");
        let hypervisor = hypervisors.iter().find(|hypervisor| hypervisor.hypervisor_hostname == host).unwrap();
        assert_eq!(provider.uuid, hypervisor.id, "provider uuid = hypervisor id");
        let inventories = client.inventories(&provider.uuid).await.unwrap();
        for class in ["VCPU", "MEMORY_MB", "DISK_GB"] {
            assert!(inventories[class].total > 0, "{class} of {host}: {inventories:?}");
        }
        let usages = client.usages(&provider.uuid).await.unwrap();
        assert!(usages.contains_key("MEMORY_MB"), "{usages:?}");
        let capacity = capacities.iter().find(|capacity| capacity.uuid == provider.uuid).expect("capacity per host");
        assert_eq!(capacity.name, host);
        for (class, inventory) in &inventories {
            assert_eq!(capacity.resources[class].capacity, inventory.capacity(), "{class} of {host}");
        }
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_as_unauthorized_without_echoing_it() {
    install_crypto_provider();
    let mut settings = admin_settings();
    settings.password = aos_openstack::Secret::new("wrong-password-7f3a".into());
    let error = OpenStackClient::connect_with(settings, options()).await.unwrap_err();
    assert!(matches!(error, OpenStackError::Unauthorized { .. }), "{error:?}");
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains("wrong-password-7f3a"), "{printed}");
}

#[tokio::test]
async fn a_server_that_does_not_exist_is_not_found() {
    let client = admin_client().await;
    let error = client.server("00000000-0000-0000-0000-000000000000").await.unwrap_err();
    assert!(
        matches!(&error, OpenStackError::NotFound { message, .. } if message.contains("could not be found")),
        "{error:?}"
    );
    let error = client.inventories("00000000-0000-0000-0000-000000000000").await.unwrap_err();
    assert!(matches!(error, OpenStackError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_authenticating_once_more() {
    let client = admin_client().await;
    client.revoke_token_keep_cached().await.unwrap();
    let services = client.compute_services().await.expect("re-authenticated after the 401");
    assert!(services.len() >= 3);
}

#[tokio::test]
async fn calls_are_logged_with_method_path_status_and_latency_but_no_token() {
    let client = admin_client().await;
    let token = client.token_for_tests().await.unwrap();
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = CapturedLog(Arc::clone(&captured));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        client.compute_services().await.unwrap();
        client.revoke_token_keep_cached().await.unwrap();
        client.resource_providers().await.unwrap();
        let _ = client.server("00000000-0000-0000-0000-000000000000").await;
    }
    let log = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(log.contains("method=GET") && log.contains("path=/os-services?binary=nova-compute"), "{log}");
    assert!(log.contains("status=200") && log.contains("latency_ms="), "{log}");
    assert!(log.contains("status=401") && log.contains("status=201"), "the re-authentication is logged: {log}");
    assert!(log.contains("status=404"), "{log}");
    assert!(!log.contains(token.expose().as_str()), "the token leaked into the log");
    assert!(!log.contains("\"password\""), "a request body leaked into the log");
}

#[derive(Clone)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
