//! The listener daemon killed (SIGKILL) while notifications stream in, then restarted:
//! every published message ends up recorded exactly once (ack after commit + unique
//! message ids).

mod support;

use std::time::Duration;

use aos_listener::samples::Generator;
use aos_testkit::testing::TestDatabase;
use aos_testkit::{DaemonProcess, Scratch, wait_until};
use support::{TestBroker, total_rows, wait_for_rows, write_configs};

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-listener");
const MESSAGES: usize = 5_000;

async fn killed_mid_stream_and_restarted(database: TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let broker = TestBroker::new().await?;
    let scratch = Scratch::new()?;
    let configs = write_configs(&scratch, &database, &broker)?;
    let configs: Vec<&std::path::Path> = configs.iter().map(|path| path.as_path()).collect();

    let generator = Generator::versioned_mix().map_err(anyhow::Error::msg)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let messages: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|index| {
            let (routing_key, body) = generator.message(index, &format!("crash-{}-{index}", &run[..8]));
            (routing_key.to_owned(), body)
        })
        .collect();

    let mut first = DaemonProcess::spawn_with_configs(BINARY, &configs, scratch.path().join("first.log"))?;
    // Publish in chunks while the listener consumes; kill it as soon as it has recorded some.
    let mut published = 0;
    let mut killed_at = None;
    for chunk in messages.chunks(250) {
        broker.publish_routed(chunk.iter().map(|(routing_key, body)| (routing_key.as_str(), body.as_slice()))).await?;
        published += chunk.len();
        if killed_at.is_none() && total_rows(&db).await? > 0 {
            first.sigkill()?;
            first.wait_exit(Duration::from_secs(30)).await?;
            killed_at = Some(total_rows(&db).await?);
        }
    }
    let killed_at = match killed_at {
        Some(count) => count,
        None => {
            wait_for_rows(&db, 1).await.map_err(|error| anyhow::anyhow!("{error}\n{}", first.log()))?;
            first.sigkill()?;
            first.wait_exit(Duration::from_secs(30)).await?;
            total_rows(&db).await?
        }
    };
    assert_eq!(published, MESSAGES);
    assert!(killed_at > 0, "the listener was killed after recording some messages");

    let mut second = DaemonProcess::spawn_with_configs(BINARY, &configs, scratch.path().join("second.log"))?;
    wait_for_rows(&db, MESSAGES as u64).await.map_err(|error| anyhow::anyhow!("{error}\n{}", second.log()))?;
    wait_until(Duration::from_secs(30), "the queue to be empty", || {
        let broker = &broker;
        async move { Ok((broker.depth().await? == 0).then_some(())) }
    })
    .await?;
    second.sigterm()?;
    assert!(second.wait_exit(Duration::from_secs(30)).await?.success(), "{}", second.log());
    assert_eq!(total_rows(&db).await?, MESSAGES as u64, "every message exactly once (killed at {killed_at})");
    let summary = second.log().lines().find(|line| line.contains("listener stopped")).map(str::to_owned);
    assert!(summary.is_some(), "{}", second.log());
    eprintln!("killed with {killed_at} of {MESSAGES} recorded; after the restart: {}", summary.unwrap_or_default());

    db.close().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_mid_stream_and_restarted_records_every_message_exactly_once_on_mariadb() -> anyhow::Result<()>
{
    killed_mid_stream_and_restarted(TestDatabase::mysql().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_mid_stream_and_restarted_records_every_message_exactly_once_on_sqlite() -> anyhow::Result<()>
{
    killed_mid_stream_and_restarted(TestDatabase::sqlite().await?).await
}
