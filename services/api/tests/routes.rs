//! The API's version discovery and health routes, served on port 0 against a real database.

use std::sync::Arc;

use aos_testkit::testing::TestDatabase;
use aos_testkit::{config_database_url, http_get};

async fn context(database: &TestDatabase) -> anyhow::Result<aos_daemon::DaemonContext> {
    database.connect_migrated().await?.close().await?;
    let ini = format!("[database]\nurl = {}\n", config_database_url(database));
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
    let (status, body) = http_get(address, "/readyz").await?;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(ready["checks"]["database"]["state"], "ok");

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
