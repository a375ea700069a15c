//! The lease keeper's safety rule: a holder that cannot renew keeps acting only until its own
//! deadline (measured before its last successful renewal), then stands by.

use std::time::Duration;

use aos_daemon::{CheckState, LeaseKeeper, Readiness};
use aos_db::testing::TestDatabase;
use tokio::sync::watch;

fn keeper(holder: &str, ttl: Duration) -> LeaseKeeper {
    LeaseKeeper { name: "test".into(), holder: holder.into(), ttl, renew_interval: Duration::from_millis(500) }
}

#[tokio::test]
async fn a_holder_that_cannot_renew_drops_its_grant_at_its_deadline() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    let db = database.connect_migrated().await?;
    let ttl = Duration::from_secs(2);
    let keeper = keeper("a", ttl);
    let readiness = Readiness::new("test");
    let (sender, receiver) = watch::channel(None);

    keeper.step(&db, &readiness, "lease:test", &sender).await;
    let grant = receiver.borrow().expect("the first holder gets the lease");
    assert_eq!(grant.generation, 1);

    // The database goes away: renewal fails, but the grant is still valid for now.
    db.clone().close().await?;
    keeper.step(&db, &readiness, "lease:test", &sender).await;
    assert_eq!(*receiver.borrow(), Some(grant), "a failed renewal keeps a grant that has not expired");
    assert!(matches!(readiness.snapshot().get("lease:test"), Some(CheckState::Failing(_))));

    tokio::time::sleep_until(grant.valid_until).await;
    keeper.step(&db, &readiness, "lease:test", &sender).await;
    assert_eq!(*receiver.borrow(), None, "past its deadline the holder must stop acting");
    Ok(())
}

#[tokio::test]
async fn a_second_keeper_stands_by_while_the_first_renews() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    let db = database.connect_migrated().await?;
    let first = keeper("first", Duration::from_secs(30));
    let second = keeper("second", Duration::from_secs(30));
    let readiness = Readiness::new("test");
    let (first_sender, first_grants) = watch::channel(None);
    let (second_sender, second_grants) = watch::channel(None);
    for _ in 0..3 {
        first.step(&db, &readiness, "lease:test", &first_sender).await;
        second.step(&db, &readiness, "lease:test", &second_sender).await;
        assert!(first_grants.borrow().is_some());
        assert!(second_grants.borrow().is_none(), "two holders at once");
    }
    assert_eq!(first_grants.borrow().map(|grant| grant.generation), Some(1), "renewals keep the generation");
    Ok(())
}
