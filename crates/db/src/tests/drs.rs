//! DRS audits, action plans and actions: the state machine is enforced by conditional updates.

use chrono::Utc;
use sea_orm::DatabaseConnection;

use crate::entity::{DrsActionState, DrsAuditState, DrsPlanState};
use crate::{
    NewDrsAction, NewDrsAudit, NewDrsPlan, PlanTransition, active_tasks_of_kinds, drs_cancel_plan, drs_find_audit,
    drs_find_plan, drs_finish_audit, drs_finish_plan, drs_list_audits, drs_mark_applying, drs_set_action_state,
    drs_start_audit, migrate_to,
};

fn audit(scope: &str) -> NewDrsAudit {
    NewDrsAudit {
        scope: scope.into(),
        source: "planner".into(),
        trigger: "operator".into(),
        actor: "test".into(),
        parameters: None,
    }
}

fn plan(servers: &[&str]) -> NewDrsPlan {
    NewDrsPlan {
        external_id: None,
        summary: Some(serde_json::json!({ "aggregates": [] })),
        actions: servers
            .iter()
            .map(|server| NewDrsAction {
                kind: "live_migrate".into(),
                server_id: (*server).into(),
                server_name: format!("vm-{server}"),
                source_host: Some("h1".into()),
                target_host: Some("h2".into()),
                ram_mb: 512,
                vcpus: 1,
                external_id: None,
            })
            .collect(),
    }
}

async fn a_plan_goes_from_recommended_to_applying_to_succeeded_and_newer_plans_supersede(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let first_audit = drs_start_audit(db, None, &audit("agg"), Utc::now()).await?;
    assert_eq!(drs_find_audit(db, &first_audit).await?.unwrap().0.state, DrsAuditState::Ongoing);
    let first = drs_finish_audit(db, None, &first_audit, None, Ok(Some(&plan(&["s1", "s2"]))), Utc::now())
        .await?
        .expect("a plan");
    let (recorded, actions) = drs_find_plan(db, &first).await?.unwrap();
    assert_eq!(recorded.state, DrsPlanState::Recommended);
    let positions: Vec<(i32, &str, DrsActionState)> =
        actions.iter().map(|a| (a.position, a.server_id.as_str(), a.state)).collect();
    assert_eq!(positions, [(1, "s1", DrsActionState::Pending), (2, "s2", DrsActionState::Pending)]);

    // A newer plan of the same scope supersedes the recommended one; other scopes stay.
    let other_audit = drs_start_audit(db, None, &audit(""), Utc::now()).await?;
    let other = drs_finish_audit(db, None, &other_audit, None, Ok(Some(&plan(&["s9"]))), Utc::now()).await?.unwrap();
    let second_audit = drs_start_audit(db, None, &audit("agg"), Utc::now()).await?;
    let second =
        drs_finish_audit(db, None, &second_audit, Some("ext-1"), Ok(Some(&plan(&["s3"]))), Utc::now()).await?.unwrap();
    assert_eq!(drs_find_plan(db, &first).await?.unwrap().0.state, DrsPlanState::Superseded);
    assert_eq!(drs_find_plan(db, &other).await?.unwrap().0.state, DrsPlanState::Recommended);
    assert_eq!(drs_find_audit(db, &second_audit).await?.unwrap().0.external_id.as_deref(), Some("ext-1"));
    assert_eq!(
        drs_mark_applying(db, &first, "t0", Utc::now()).await?,
        PlanTransition::WrongState(DrsPlanState::Superseded)
    );
    assert_eq!(drs_mark_applying(db, "no-such-plan", "t0", Utc::now()).await?, PlanTransition::NotFound);

    // Applying: once only; actions get their own states; then the plan finishes.
    assert_eq!(drs_mark_applying(db, &second, "task-1", Utc::now()).await?, PlanTransition::Done);
    assert_eq!(
        drs_mark_applying(db, &second, "task-2", Utc::now()).await?,
        PlanTransition::WrongState(DrsPlanState::Applying)
    );
    let details = serde_json::json!({ "attempts": 1 });
    assert!(drs_set_action_state(db, &second, 1, DrsActionState::Succeeded, Some(details), None, Utc::now()).await?);
    assert_eq!(drs_finish_plan(db, &second, DrsPlanState::Succeeded, None, Utc::now()).await?, PlanTransition::Done);
    let (done, actions) = drs_find_plan(db, &second).await?.unwrap();
    assert_eq!((done.state, done.task_id.as_deref()), (DrsPlanState::Succeeded, Some("task-1")));
    assert!(done.finished_at.is_some());
    assert_eq!(actions[0].state, DrsActionState::Succeeded);
    assert_eq!(actions[0].details.as_ref().unwrap()["attempts"], 1);
    // A finished plan takes no more action states, and cannot be cancelled.
    assert!(!drs_set_action_state(db, &second, 1, DrsActionState::Failed, None, None, Utc::now()).await?);
    assert_eq!(drs_cancel_plan(db, &second, Utc::now()).await?, PlanTransition::WrongState(DrsPlanState::Succeeded));

    // Cancelling a recommended plan cancels its pending actions.
    assert_eq!(drs_cancel_plan(db, &other, Utc::now()).await?, PlanTransition::Done);
    let (cancelled, actions) = drs_find_plan(db, &other).await?.unwrap();
    assert_eq!(cancelled.state, DrsPlanState::Cancelled);
    assert!(actions.iter().all(|a| a.state == DrsActionState::Cancelled));

    // A failed audit records the error and supersedes nothing.
    let failed_audit = drs_start_audit(db, None, &audit("agg"), Utc::now()).await?;
    assert_eq!(drs_finish_audit(db, None, &failed_audit, None, Err("Watcher said no"), Utc::now()).await?, None);
    let (failed, plans) = drs_find_audit(db, &failed_audit).await?.unwrap();
    assert_eq!((failed.state, failed.error.as_deref()), (DrsAuditState::Failed, Some("Watcher said no")));
    assert!(plans.is_empty());
    assert_eq!(drs_list_audits(db, 10).await?.len(), 4);
    assert_eq!(drs_list_audits(db, 2).await?.len(), 2);
    assert!(active_tasks_of_kinds(db, &["drs_apply_plan"]).await?.is_empty());
    Ok(())
}

async fn audits_need_the_lease_when_one_is_given(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let refused = drs_start_audit(db, Some(("beat", 5)), &audit("agg"), Utc::now()).await;
    assert!(matches!(refused, Err(crate::DbError::LeaseLost { .. })), "{refused:?}");
    assert!(drs_list_audits(db, 10).await?.is_empty());
    Ok(())
}

crate::db_test_suite!(
    a_plan_goes_from_recommended_to_applying_to_succeeded_and_newer_plans_supersede,
    audits_need_the_lease_when_one_is_given
);
