//! Leases: tenure, expiry, takeover, release, fencing, and races between candidates.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait};

use crate::entity::{NodeState, node};
use crate::{
    DbError, LeaseState, begin_write, guard_lease, lease_acquire_or_renew, lease_current, lease_release, migrate_to,
};

const LEASE: &str = "beat";
const TTL: Duration = Duration::from_secs(30);

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn at(seconds: f64) -> DateTime<Utc> {
    t0() + TimeDelta::microseconds((seconds * 1_000_000.0) as i64)
}

fn held_generation(state: &LeaseState) -> Option<i64> {
    match state {
        LeaseState::Held { generation, .. } => Some(*generation),
        LeaseState::HeldByOther { .. } => None,
    }
}

async fn insert_node(db: &impl sea_orm::ConnectionTrait, name: &str) -> Result<node::Model, sea_orm::DbErr> {
    node::ActiveModel {
        name: Set(name.to_owned()),
        state: Set(NodeState::Up),
        state_changed_at: Set(t0()),
        nova_forced_down: Set(false),
        evacuation_allowed: Set(true),
        is_reserve: Set(false),
        down_observations: Set(0),
        up_observations: Set(0),
        removed_from_nova: Set(false),
        created_at: Set(t0()),
        updated_at: Set(t0()),
        ..Default::default()
    }
    .insert(db)
    .await
}

async fn the_first_holder_gets_generation_one_and_the_second_sees_it(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?,
        LeaseState::Held { generation: 1, expires_at: at(30.0) }
    );
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(1.0)).await?,
        LeaseState::HeldByOther { holder: "ctl1".to_owned(), generation: 1, expires_at: at(30.0) }
    );
    let row = lease_current(db, LEASE).await?.context("no lease row")?;
    assert_eq!((row.holder.as_str(), row.generation), ("ctl1", 1));
    assert_eq!(lease_current(db, "never-requested").await?, None);
    Ok(())
}

async fn renewing_keeps_the_generation_and_extends_the_expiry(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?;
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(10.0)).await?,
        LeaseState::Held { generation: 1, expires_at: at(40.0) }
    );
    // Renewing again at the same instant changes no value; it must still count as held.
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(10.0)).await?,
        LeaseState::Held { generation: 1, expires_at: at(40.0) }
    );
    // Just before the (sub-second) expiry the other candidate still cannot take it.
    assert!(matches!(
        lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(39.999_999)).await?,
        LeaseState::HeldByOther { generation: 1, .. }
    ));
    Ok(())
}

async fn after_expiry_another_holder_takes_over_with_a_new_generation(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?;
    // Expiry is inclusive: at exactly expires_at the lease is free.
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(30.0)).await?,
        LeaseState::Held { generation: 2, expires_at: at(60.0) }
    );
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(31.0)).await?,
        LeaseState::HeldByOther { holder: "ctl2".to_owned(), generation: 2, expires_at: at(60.0) }
    );
    Ok(())
}

async fn a_holder_whose_lease_expired_gets_a_new_generation_even_if_nobody_took_it(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?;
    assert_eq!(held_generation(&lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(45.5)).await?), Some(2));
    // Work started under generation 1 is fenced off.
    let txn = begin_write(db).await?;
    assert!(matches!(guard_lease(&txn, LEASE, 1).await, Err(DbError::LeaseLost { generation: 1, .. })));
    txn.rollback().await?;
    Ok(())
}

async fn a_stale_generation_cannot_commit_its_write(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?;
    lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(31.0)).await?;

    // ctl1 still believes in generation 1 and tries to write under it.
    let stale = begin_write(db).await?;
    insert_node(&stale, "written-by-stale-holder").await?;
    let err = guard_lease(&stale, LEASE, 1).await.err().context("a superseded generation passed the guard")?;
    assert!(matches!(&err, DbError::LeaseLost { name, generation: 1 } if name == LEASE), "{err:?}");
    assert!(err.to_string().contains("beat"), "{err}");
    drop(stale); // abandoned: rolled back

    // The current holder's write goes through.
    let current = begin_write(db).await?;
    guard_lease(&current, LEASE, 2).await?;
    insert_node(&current, "written-by-current-holder").await?;
    current.commit().await?;

    let names: Vec<String> = node::Entity::find().all(db).await?.into_iter().map(|node| node.name).collect();
    assert_eq!(names, ["written-by-current-holder"]);

    // A lease nobody ever held fences everything.
    let txn = begin_write(db).await?;
    assert!(guard_lease(&txn, "never-requested", 0).await.is_err());
    assert!(guard_lease(&txn, "never-requested", 1).await.is_err());
    txn.rollback().await?;
    Ok(())
}

async fn releasing_lets_another_holder_take_over_at_once(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    lease_acquire_or_renew(db, LEASE, "ctl1", TTL, at(0.0)).await?;
    // Only the current holder with the current generation can release.
    assert!(!lease_release(db, LEASE, "ctl2", 1).await?);
    assert!(!lease_release(db, LEASE, "ctl1", 7).await?);
    assert!(matches!(lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(1.0)).await?, LeaseState::HeldByOther { .. }));

    assert!(lease_release(db, LEASE, "ctl1", 1).await?);
    assert_eq!(
        lease_acquire_or_renew(db, LEASE, "ctl2", TTL, at(2.0)).await?,
        LeaseState::Held { generation: 2, expires_at: at(32.0) }
    );
    // The released holder's generation is dead for good.
    let txn = begin_write(db).await?;
    assert!(guard_lease(&txn, LEASE, 1).await.is_err());
    txn.rollback().await?;
    Ok(())
}

async fn concurrent_candidates_never_hold_the_same_generation(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let other = db.clone();
    let mut last_generation = 0;
    for round in 0..40 {
        // Each round starts after the previous lease expired, so both candidates race for
        // a free lease; the first round also races to create the row.
        let now = at(f64::from(round) * 100.0);
        let (first, second) = tokio::join!(
            lease_acquire_or_renew(db, LEASE, "ctl1", TTL, now),
            lease_acquire_or_renew(&other, LEASE, "ctl2", TTL, now),
        );
        let (first, second) = (first?, second?);
        let winners: Vec<i64> = [&first, &second].into_iter().filter_map(held_generation).collect();
        assert_eq!(winners.len(), 1, "round {round}: {first:?} / {second:?}");
        assert_eq!(winners[0], last_generation + 1, "round {round}");
        last_generation = winners[0];
        let loser = if held_generation(&first).is_some() { &second } else { &first };
        assert!(
            matches!(loser, LeaseState::HeldByOther { generation, .. } if *generation == last_generation),
            "round {round}: {loser:?}"
        );
    }
    Ok(())
}

crate::db_test_suite!(
    the_first_holder_gets_generation_one_and_the_second_sees_it,
    renewing_keeps_the_generation_and_extends_the_expiry,
    after_expiry_another_holder_takes_over_with_a_new_generation,
    a_holder_whose_lease_expired_gets_a_new_generation_even_if_nobody_took_it,
    a_stale_generation_cannot_commit_its_write,
    releasing_lets_another_holder_take_over_at_once,
    concurrent_candidates_never_hold_the_same_generation,
);
