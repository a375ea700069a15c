//! Two beats on one MariaDB: exactly one is active; SIGKILL the active one and the other takes
//! over once the lease expires, with a higher generation; SIGTERM releases the lease at once.

use std::time::{Duration, Instant};

use aos_testkit::testing::TestDatabase;
use aos_testkit::{DaemonProcess, Scratch, test_config, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-beat");

/// The pid inside a lease holder identity `host:pid:random`.
fn holder_pid(holder: &str) -> Option<u32> {
    holder.rsplit(':').nth(1)?.parse().ok()
}

async fn current_holder(db: &aos_db::DatabaseConnection) -> anyhow::Result<Option<(u32, i64)>> {
    let lease = aos_db::lease_current(db, aos_beat::LEASE_NAME).await?;
    Ok(lease
        .filter(|lease| lease.expires_at > chrono::Utc::now())
        .and_then(|lease| holder_pid(&lease.holder).map(|pid| (pid, lease.generation))))
}

#[tokio::test]
async fn one_of_two_beats_is_active_and_the_other_takes_over_after_sigkill() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = election(&database).await;
    database.cleanup().await;
    outcome
}

async fn election(database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let scratch = Scratch::new()?;
    // lease_ttl = 4 s, lease_renew_interval = 1 s (test_config).
    let config = scratch.write_config(&test_config(database, "")?)?;
    let mut first = DaemonProcess::spawn(BINARY, &config, scratch.path().join("beat-a.log"))?;
    let mut second = DaemonProcess::spawn(BINARY, &config, scratch.path().join("beat-b.log"))?;

    let (active_pid, generation) =
        wait_until(Duration::from_secs(60), "a beat to hold the lease", || current_holder(&db))
            .await
            .map_err(|error| anyhow::anyhow!("{error}\nbeat A:\n{}\nbeat B:\n{}", first.log(), second.log()))?;
    let (active, standby) =
        if active_pid == first.pid() { (&mut first, &mut second) } else { (&mut second, &mut first) };
    assert_eq!(active.pid(), active_pid, "the lease holder is one of our two beats");

    // Several renewal periods: the same holder and generation throughout, the other stands by.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            current_holder(&db).await?,
            Some((active_pid, generation)),
            "the lease changed hands while both ran"
        );
    }
    assert!(!standby.log().contains("beat active"), "the standby beat acted while the other held the lease");

    active.sigkill()?;
    let killed_at = Instant::now();
    let (new_pid, new_generation) = wait_until(Duration::from_secs(60), "the standby to take over", || async {
        Ok(current_holder(&db).await?.filter(|(pid, _)| *pid != active_pid))
    })
    .await?;
    let takeover = killed_at.elapsed();
    println!("takeover after SIGKILL of the active beat: {:.2} s (lease_ttl 4 s, renew 1 s)", takeover.as_secs_f64());
    assert_eq!(new_pid, standby.pid());
    assert!(new_generation > generation, "a takeover must use a new generation (fencing token)");
    wait_until(Duration::from_secs(10), "the standby to log that it is active", || async {
        Ok(standby.log().contains("beat active").then_some(()))
    })
    .await?;

    standby.sigterm()?;
    let status = standby.wait_exit(Duration::from_secs(30)).await?;
    assert!(status.success(), "beat exited with {status} after SIGTERM");
    // Released on SIGTERM: nobody holds it now (no need to wait for the expiry).
    assert_eq!(current_holder(&db).await?, None, "SIGTERM should release the lease");
    db.close().await?;
    Ok(())
}
