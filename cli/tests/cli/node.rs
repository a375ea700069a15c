//! `node sync`, `node list`, `node show` against the real test cloud (../shared/openstack-env,
//! started by scripts/ensure-openstack.sh): Nova's compute hosts appear as nodes with Nova's
//! state, and each addition is in the node's history.

use crate::support::{Backend, Fixture, on_both_backends};

fn keystone_section() -> String {
    let auth_url = std::env::var("AOS_TEST_OS_AUTH_URL").unwrap_or_else(|_| "http://127.0.0.1:5000/v3".into());
    let username = std::env::var("AOS_TEST_OS_USERNAME").unwrap_or_else(|_| "admin".into());
    let password = std::env::var("AOS_TEST_OS_PASSWORD").unwrap_or_else(|_| "admin".into());
    let project = std::env::var("AOS_TEST_OS_PROJECT").unwrap_or_else(|_| "admin".into());
    format!(
        "[keystone_authtoken]\nauth_url = {auth_url}\nusername = {username}\npassword = {password}\nproject_name = {project}\ninterface = public\n"
    )
}

async fn node_sync_mirrors_every_compute_host_of_the_real_cloud(backend: Backend) {
    let fixture = Fixture::new(backend, &keystone_section()).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());

    let sync = fixture.run(&["node", "sync"]);
    assert!(sync.succeeded(), "node sync failed (is the cloud up? scripts/ensure-openstack.sh)\n{}", sync.report());
    assert!(sync.stdout.contains("added"), "{}", sync.report());

    let list = fixture.run(&["node", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    let rows = list.table_rows();
    for host in ["fake-1", "fake-2", "fake-3"] {
        let row = rows.iter().find(|row| row.first().map(String::as_str) == Some(host));
        let row = row.unwrap_or_else(|| panic!("{host} missing from node list:\n{}", list.report()));
        assert_eq!(row[1], "up", "{row:?}");
        assert!(row[2].starts_with("enabled/"), "Nova's status is shown: {row:?}");
    }

    // Other tests start computes of their own meanwhile; the hosts already mirrored are not
    // added again.
    let again = fixture.run(&["node", "sync"]);
    assert!(again.succeeded(), "{}", again.report());
    let added_again = again.stdout.lines().find(|line| line.trim_start().starts_with("added:")).unwrap_or("");
    for host in ["fake-1", "fake-2", "fake-3"] {
        assert!(!added_again.split([' ', ',']).any(|word| word == host), "{host} added twice: {}", again.report());
    }

    let show = fixture.run(&["node", "show", "fake-1"]);
    assert!(show.succeeded(), "{}", show.report());
    assert!(show.stdout.contains("nova.sync.added"), "{}", show.report());
    let missing = fixture.run(&["node", "show", "no-such-host"]);
    assert_eq!(missing.code, Some(2), "{}", missing.report());
    fixture.cleanup().await;
}

async fn node_sync_with_a_wrong_password_fails_naming_keystone_without_the_password(backend: Backend) {
    let section = keystone_section().replace("password = ", "password = Wrong-").replace("Wrong-admin", "WrongPass-42");
    let fixture = Fixture::new(backend, &section).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());
    let sync = fixture.run(&["node", "sync"]);
    assert!(!sync.succeeded(), "{}", sync.report());
    assert!(sync.stderr.contains("keystone_authtoken"), "{}", sync.report());
    assert!(!sync.report().contains("WrongPass-42"), "the password must never be printed: {}", sync.report());
    fixture.cleanup().await;
}

on_both_backends!(
    node_sync_mirrors_every_compute_host_of_the_real_cloud,
    node_sync_with_a_wrong_password_fails_naming_keystone_without_the_password,
);
