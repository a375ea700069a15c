//! Process-level life of `aos-cloud-manager-listener`, on MariaDB and SQLite.

use aos_testkit::testing::TestDatabase;

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-listener");

aos_testkit::daemon_lifecycle_tests!(BINARY, "listener");

/// Nova's broker down at start: the listener keeps retrying with backoff, reports the failure
/// in `/readyz` (503, naming the check), never crashes, and still stops cleanly on SIGTERM.
#[tokio::test]
async fn an_unreachable_nova_broker_is_retried_and_reported_not_fatal() -> anyhow::Result<()> {
    use std::time::Duration;

    use aos_testkit::{DaemonProcess, Scratch, free_port, http_get, test_config, wait_until};

    let database = TestDatabase::sqlite().await?;
    database.connect_migrated().await?.close().await?;
    let scratch = Scratch::new()?;
    let base = scratch.write_config(&test_config(&database, "")?)?;
    let (dead_broker_port, status_port) = (free_port()?, free_port()?);
    let override_file = scratch.path().join("override.conf");
    std::fs::write(
        &override_file,
        format!(
            "[listener]\nnova_transport_url = rabbit://guest:guest@127.0.0.1:{dead_broker_port}/\nstatus_port = {status_port}\n"
        ),
    )?;
    let mut listener =
        DaemonProcess::spawn_with_configs(BINARY, &[&base, &override_file], scratch.path().join("l.log"))?;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], status_port));
    let body = wait_until(Duration::from_secs(60), "readyz to report the broker failing", || async {
        Ok(match http_get(address, "/readyz").await {
            Ok((503, body)) if body.contains("nova_broker") && body.contains("failing") => Some(body),
            _ => None,
        })
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", listener.log()))?;
    assert!(!body.contains("guest:guest"), "readiness must not show broker credentials: {body}");
    assert!(!listener.has_exited(), "the listener must keep running while the broker is down");
    listener.sigterm()?;
    assert!(listener.wait_exit(Duration::from_secs(30)).await?.success());
    Ok(())
}
