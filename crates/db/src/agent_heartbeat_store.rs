//! Node agent heartbeats (`agent_heartbeats`, docs/adr/0012-agent.md): the active controller
//! agent records the last heartbeat of every node agent, and the node tracker reads which
//! agents are alive. Staleness is decided by `expires_at`, which the recording controller set
//! from its own clock, so a hypervisor with a wrong clock cannot look alive or dead.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::entity::agent_heartbeat::{self, Column, Entity};
use crate::{DbError, begin_write, db_time, guard_lease};

/// One heartbeat as the controller received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedHeartbeat {
    pub node: String,
    pub message_id: String,
    pub sequence: i64,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub facts: Option<serde_json::Value>,
}

/// Records `heartbeats` (the newest per node wins), in one transaction guarded by `lease`
/// (`(name, generation)`; `None` only in tools and tests).
pub async fn record_agent_heartbeats(
    db: &sea_orm::DatabaseConnection,
    lease: Option<(&str, i64)>,
    heartbeats: &[ReceivedHeartbeat],
) -> Result<(), DbError> {
    if heartbeats.is_empty() {
        return Ok(());
    }
    let transaction = begin_write(db).await?;
    if let Some((name, generation)) = lease {
        guard_lease(&transaction, name, generation).await?;
    }
    let mut newest: BTreeMap<&str, &ReceivedHeartbeat> = BTreeMap::new();
    for heartbeat in heartbeats {
        newest.insert(heartbeat.node.as_str(), heartbeat);
    }
    for heartbeat in newest.values() {
        upsert(&transaction, heartbeat).await?;
    }
    transaction.commit().await?;
    Ok(())
}

async fn upsert<C: ConnectionTrait>(connection: &C, heartbeat: &ReceivedHeartbeat) -> Result<(), DbError> {
    let row = agent_heartbeat::ActiveModel {
        node: Set(heartbeat.node.clone()),
        message_id: Set(heartbeat.message_id.clone()),
        sequence: Set(heartbeat.sequence),
        sent_at: Set(db_time(heartbeat.sent_at)),
        received_at: Set(db_time(heartbeat.received_at)),
        expires_at: Set(db_time(heartbeat.expires_at)),
        facts: Set(heartbeat.facts.clone()),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Node)
                .update_columns([
                    Column::MessageId,
                    Column::Sequence,
                    Column::SentAt,
                    Column::ReceivedAt,
                    Column::ExpiresAt,
                    Column::Facts,
                ])
                .to_owned(),
        )
        .exec(connection)
        .await?;
    Ok(())
}

/// Whether each node that has an agent is heard from at `now`: `true` while its last heartbeat
/// has not expired. Nodes that never had an agent are absent (the tracker's `None`).
pub async fn agent_liveness<C: ConnectionTrait>(
    connection: &C,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, bool>, DbError> {
    let rows = Entity::find().all(connection).await?;
    Ok(rows.into_iter().map(|row| (row.node, row.expires_at > now)).collect())
}

/// The last heartbeat of `node`, if its agent ever sent one.
pub async fn find_agent_heartbeat<C: ConnectionTrait>(
    connection: &C,
    node: &str,
) -> Result<Option<agent_heartbeat::Model>, DbError> {
    Ok(Entity::find().filter(Column::Node.eq(node)).one(connection).await?)
}

/// Forgets `node`'s agent (decommissioned): the tracker then treats the node as running none.
pub async fn forget_agent(db: &sea_orm::DatabaseConnection, node: &str) -> Result<bool, DbError> {
    let deleted = Entity::delete_many().filter(Column::Node.eq(node)).exec(db).await?;
    Ok(deleted.rows_affected > 0)
}
