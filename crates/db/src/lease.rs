//! Leases: one holder at a time for a named singleton role (the active beat, the active
//! agent), with a fencing generation so that work started under a lease that has since
//! been lost cannot be committed.
//!
//! Protocol (DESIGN.md §2, "exactly one active"):
//! - A candidate calls [`lease_acquire_or_renew`] every renew interval (well under the
//!   TTL). It is `Held` with a generation, or `HeldByOther`.
//! - Every write made on behalf of the lease happens in a transaction that first calls
//!   [`guard_lease`] with the generation it holds. If the lease changed hands (or expired
//!   and was re-acquired, even by the same holder), the generation differs and the
//!   transaction is abandoned with [`DbError::LeaseLost`].
//! - A holder shutting down calls [`lease_release`] so a standby takes over at once
//!   instead of after the TTL.
//!
//! All statements are conditional single-row `UPDATE`s whose `rows_affected` decides the
//! outcome, so the protocol is atomic on both backends without `SELECT … FOR UPDATE`
//! (which SQLite lacks). On MySQL/MariaDB sqlx sets `CLIENT_FOUND_ROWS`, so
//! `rows_affected` counts matched rows even when an update changes no value. Time is passed
//! in (`now`) rather than read from the database clock, which keeps tests deterministic;
//! controllers are expected to run NTP, and a TTL far above their clock skew is the
//! caller's margin.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::entity::lease::{self, Column};
use crate::{DbError, begin_write, db_time};

/// The longest TTL honoured; longer requests are capped (a lease nobody can take over for
/// more than a day is a configuration mistake, and the cap keeps expiry far from the end
/// of the `DATETIME` range).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The outcome of an acquire-or-renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The caller holds the lease until `expires_at`; `generation` is its fencing token.
    Held { generation: i64, expires_at: DateTime<Utc> },
    /// Someone else holds an unexpired lease.
    HeldByOther { holder: String, generation: i64, expires_at: DateTime<Utc> },
}

/// Renews the lease if `holder` still holds it unexpired (same generation), takes it over
/// with a new generation if it is free or expired (even when the expired holder is
/// `holder` itself: its earlier in-flight work must be fenced off), and otherwise reports
/// the other holder.
pub async fn lease_acquire_or_renew(
    db: &DatabaseConnection,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<LeaseState, DbError> {
    let now = db_time(now);
    let ttl = TimeDelta::from_std(ttl.min(MAX_TTL)).unwrap_or(TimeDelta::zero());
    let expires_at = db_time(now + ttl);

    ensure_lease_row(db, name, now).await?;

    let txn = begin_write(db).await?;
    let renewed = lease::Entity::update_many()
        .col_expr(Column::RenewedAt, Expr::value(now))
        .col_expr(Column::ExpiresAt, Expr::value(expires_at))
        .filter(Column::Name.eq(name))
        .filter(Column::Holder.eq(holder))
        .filter(Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?
        .rows_affected;
    let held = if renewed == 1 {
        true
    } else {
        let taken = lease::Entity::update_many()
            .col_expr(Column::Holder, Expr::value(holder))
            .col_expr(Column::Generation, Expr::col(Column::Generation).add(1))
            .col_expr(Column::AcquiredAt, Expr::value(now))
            .col_expr(Column::RenewedAt, Expr::value(now))
            .col_expr(Column::ExpiresAt, Expr::value(expires_at))
            .filter(Column::Name.eq(name))
            .filter(Column::ExpiresAt.lte(now))
            .exec(&txn)
            .await?
            .rows_affected;
        taken == 1
    };
    // Read inside the transaction: our update still holds the row (MySQL) or the database
    // (SQLite) lock, so what we read is what we wrote.
    let row = lease::Entity::find_by_id(name.to_owned()).one(&txn).await?.ok_or_else(|| missing_row(name))?;
    txn.commit().await?;

    Ok(if held {
        LeaseState::Held { generation: row.generation, expires_at: row.expires_at }
    } else {
        LeaseState::HeldByOther { holder: row.holder, generation: row.generation, expires_at: row.expires_at }
    })
}

/// Gives the lease up (its expiry moves to the past) if `holder` still holds `generation`;
/// returns whether it did. The next acquirer, this holder included, gets a new generation.
pub async fn lease_release(
    db: &DatabaseConnection,
    name: &str,
    holder: &str,
    generation: i64,
) -> Result<bool, DbError> {
    let released = lease::Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(released_expiry()))
        .filter(Column::Name.eq(name))
        .filter(Column::Holder.eq(holder))
        .filter(Column::Generation.eq(generation))
        .exec(db)
        .await?
        .rows_affected;
    Ok(released == 1)
}

/// The lease row as stored, if the lease was ever requested.
pub async fn lease_current(db: &DatabaseConnection, name: &str) -> Result<Option<lease::Model>, DbError> {
    Ok(lease::Entity::find_by_id(name.to_owned()).one(db).await?)
}

/// The fencing check: call first inside the transaction that makes a write on behalf of
/// the lease; it fails with [`DbError::LeaseLost`] unless `generation` is still the
/// lease's current one, and then the caller drops (rolls back) the transaction.
///
/// It is a no-op `UPDATE … SET generation = generation WHERE name = ? AND generation = ?`
/// rather than a read: the update takes the lease row's lock on MySQL/MariaDB (a takeover
/// waits until this transaction ends) and the database write lock on SQLite (nobody else
/// writes until it ends), so the lease cannot change hands between the check and the
/// commit. A lease that expired but was not taken over yet still passes: no newer
/// generation exists that the write could conflict with.
pub async fn guard_lease<C: ConnectionTrait>(txn: &C, name: &str, generation: i64) -> Result<(), DbError> {
    let matched = lease::Entity::update_many()
        .col_expr(Column::Generation, Expr::col(Column::Generation))
        .filter(Column::Name.eq(name))
        .filter(Column::Generation.eq(generation))
        .exec(txn)
        .await?
        .rows_affected;
    if matched == 1 && generation > 0 { Ok(()) } else { Err(DbError::LeaseLost { name: name.to_owned(), generation }) }
}

/// Creates the lease row, already expired and at generation 0, if it does not exist, so
/// that every later step is an `UPDATE` of one known row. Two candidates racing here are
/// fine: the insert ignores a duplicate.
async fn ensure_lease_row(db: &DatabaseConnection, name: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    if lease::Entity::find_by_id(name.to_owned()).one(db).await?.is_some() {
        return Ok(());
    }
    let expired = released_expiry();
    let insert = Query::insert()
        .into_table(lease::Entity)
        .columns([
            Column::Name,
            Column::Holder,
            Column::Generation,
            Column::AcquiredAt,
            Column::RenewedAt,
            Column::ExpiresAt,
        ])
        .values_panic([name.into(), "".into(), 0i64.into(), now.into(), now.into(), expired.into()])
        .on_conflict(OnConflict::column(Column::Name).do_nothing_on([Column::Name]).to_owned())
        .to_owned();
    db.execute(&insert).await?;
    Ok(())
}

/// An expiry certainly in everyone's past.
fn released_expiry() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

fn missing_row(name: &str) -> DbError {
    DbError::Query(sea_orm::DbErr::RecordNotFound(format!("lease {name} vanished while being acquired")))
}
