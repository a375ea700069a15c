//! The API's version discovery and health routes, served on port 0 against a real database.

use std::sync::Arc;

use aos_testkit::testing::TestDatabase;
use aos_testkit::{config_database_url, http_get};

/// A context on `database` whose `[keystone_authtoken]` is the test cloud's admin (the API
/// reports Keystone in `/readyz`).
async fn context(database: &TestDatabase) -> anyhow::Result<aos_daemon::DaemonContext> {
    database.connect_migrated().await?.close().await?;
    let admin = aos_openstack::testing::admin_settings();
    let ini = format!(
        "[database]\nurl = {}\n[keystone_authtoken]\nauth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\n",
        config_database_url(database),
        admin.auth_url,
        admin.username,
        admin.password.expose(),
        admin.project_name
    );
    let loaded = aos_config::load_from_str(&[("test.conf", &ini)]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let shutdown = aos_daemon::ShutdownToken::new();
    aos_daemon::DaemonContext::connect(aos_api::ROLE, Arc::new(loaded.config), shutdown).await
}

#[tokio::test]
async fn version_discovery_health_and_readiness_answer_in_openstack_shape() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    let context = context(&database).await?;
    let shutdown = context.shutdown.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(aos_api::serve(listener, context));

    let (status, body) = http_get(address, "/").await?;
    assert_eq!(status, 200);
    let versions: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(versions["versions"][0]["id"], "v1");
    assert_eq!(versions["versions"][0]["status"], "CURRENT");

    let (status, body) = http_get(address, "/v1").await?;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body)?["version"]["id"], "v1");

    let (status, _) = http_get(address, "/healthz").await?;
    assert_eq!(status, 200);
    // Ready once our service credentials worked at Keystone (checked in the background).
    let body = aos_testkit::wait_until(std::time::Duration::from_secs(60), "the API ready", || async move {
        let (status, body) = http_get(address, "/readyz").await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    let ready: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(ready["checks"]["database"]["state"], "ok");
    assert_eq!(ready["checks"]["keystone"]["state"], "ok");

    shutdown.cancel();
    server.await??;
    Ok(())
}

#[tokio::test]
async fn readiness_is_503_while_a_dependency_fails() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    let context = context(&database).await?;
    context.readiness.set("broker", aos_daemon::CheckState::Failing("connection refused".into()));
    let shutdown = context.shutdown.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(aos_api::serve(listener, context));
    let (status, body) = http_get(address, "/readyz").await?;
    assert_eq!(status, 503);
    assert!(body.contains("connection refused"), "{body}");
    shutdown.cancel();
    server.await??;
    Ok(())
}
