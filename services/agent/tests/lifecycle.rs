//! Process-level life of `aos-cloud-manager-agent`, on MariaDB and SQLite.

use aos_testkit::testing::TestDatabase;

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-agent");

#[tokio::test]
async fn sigterm_makes_the_daemon_exit_zero_and_deregister_on_sqlite() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    aos_testkit::sigterm_scenario(BINARY, "agent", &database).await
}

#[tokio::test]
async fn sigterm_makes_the_daemon_exit_zero_and_deregister_on_mariadb() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = aos_testkit::sigterm_scenario(BINARY, "agent", &database).await;
    database.cleanup().await;
    outcome
}

#[tokio::test]
async fn the_daemon_refuses_a_schema_that_is_behind() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    aos_testkit::schema_behind_scenario(BINARY, &database).await
}
