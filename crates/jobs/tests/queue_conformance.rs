//! The jobs layer's contract, checked identically on RabbitMQ (with MariaDB) and on the
//! embedded SQLite queue: each test below runs once per backend (see `support`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use aos_db::entity::{TaskState, TaskStepState, task};
use aos_jobs::{
    DeadLetter, JobMessage, JobQueue, LeaseFence, NewTask, RunnerSettings, TaskContext, TaskError, cancel_task,
    enqueue, insert_task, requeue_orphans,
};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::sync::Notify;

use support::{CallCounter, Env, Running, test_settings, wait_until, within_patience};

/// A handler that counts its runs and echoes `payload.n`, inside one step.
fn counting_echo(
    calls: CallCounter,
) -> impl Fn(TaskContext) -> futures::future::BoxFuture<'static, Result<Value, TaskError>> {
    use futures::FutureExt;
    move |context: TaskContext| {
        let calls = calls.clone();
        async move {
            calls.hit();
            let n: i64 =
                context.step("echo", "", || async { Ok(context.payload()["n"].as_i64().unwrap_or(-1)) }).await?;
            Ok(json!({ "echo": n }))
        }
        .boxed()
    }
}

/// The runner's counters once it has counted `processed` messages: it counts each after
/// recording its outcome, so they may lag behind the rows a test has just seen finished.
async fn counted(running: &Running, processed: u64) -> anyhow::Result<aos_jobs::JobCounters> {
    wait_until(&format!("the runner to count {processed} messages"), || async {
        let counters = running.runner.counters();
        Ok((counters.processed >= processed).then_some(counters))
    })
    .await
}

async fn an_enqueued_task_runs_once_and_ends_succeeded(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));

    let task_id = enqueue(&env.db, &env.queue, NewTask::new("echo", json!({ "n": 7 }))).await?;
    let row = env.wait_for_state(task_id, TaskState::Succeeded).await?;

    ensure!(row.result == Some(json!({ "echo": 7 })), "result {:?}", row.result);
    ensure!(row.attempts == 1 && calls.get() == 1, "attempts {} calls {}", row.attempts, calls.get());
    ensure!(row.claimed_by.as_deref() == Some("worker-a") && row.error.is_none() && row.finished_at.is_some());
    let steps = env.steps(task_id).await?;
    ensure!(steps.len() == 1 && steps[0].state == TaskStepState::Succeeded, "{steps:?}");
    ensure!(steps[0].details == Some(json!(7)), "{:?}", steps[0].details);
    let counters = counted(&running, 1).await?;
    ensure!(counters.succeeded == 1 && counters.failed == 0, "{counters:?}");
    running.stop().await?;
    // Acknowledged, not handed back when the worker's connection closed.
    ensure!(env.queue.depth().await? == 0, "messages left in the queue");
    Ok(())
}

async fn a_duplicate_message_for_a_finished_task_does_nothing(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("echo", json!({ "n": 1 }))).await?;
    let finished = env.wait_for_state(task_id, TaskState::Succeeded).await?;

    env.queue.publish(task_id).await?;
    env.queue.publish(task_id).await?;
    wait_until("both duplicates to be consumed", || async {
        Ok((running.runner.counters().skipped >= 2).then_some(()))
    })
    .await?;

    ensure!(calls.get() == 1, "the handler ran {} times", calls.get());
    ensure!(env.task(task_id).await? == finished, "a duplicate changed the finished task");
    running.stop().await?;
    ensure!(env.queue.depth().await? == 0, "messages left in the queue");
    Ok(())
}

async fn a_task_abandoned_by_a_stopped_worker_is_resumed_elsewhere_without_repeating_finished_steps(
    env: Env,
) -> anyhow::Result<()> {
    let first_step = CallCounter::default();
    let second_step = CallCounter::default();
    let second_step_started = Arc::new(Notify::new());
    // The same code on two machines: the second step hangs the first time it runs.
    let handler = {
        let (first_step, second_step, second_step_started) =
            (first_step.clone(), second_step.clone(), second_step_started.clone());
        move |context: TaskContext| {
            let (first_step, second_step, second_step_started) =
                (first_step.clone(), second_step.clone(), second_step_started.clone());
            async move {
                context.step("fence", "", || async { Ok(first_step.hit()) }).await?;
                context
                    .step("evacuate", "server-1", || async {
                        if second_step.hit() == 1 {
                            second_step_started.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok("evacuated".to_owned())
                    })
                    .await?;
                Ok(json!("done"))
            }
        }
    };
    // Worker A abandons its in-flight task at once when stopped, as if it had died.
    let worker_a = Running::start(
        env.runner(&env.queue, "worker-a")
            .with_settings(RunnerSettings { shutdown_grace: Duration::ZERO, ..test_settings() })
            .register("evacuate_host", handler.clone()),
    );
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("evacuate_host", json!({}))).await?;
    within_patience("the second step to start on worker A", second_step_started.notified()).await?;
    worker_a.stop().await?;
    let abandoned = env.task(task_id).await?;
    ensure!(abandoned.state == TaskState::Running && abandoned.claimed_by.as_deref() == Some("worker-a"));

    let queue_b = env.another_queue().await?;
    let worker_b = Running::start(env.runner(&queue_b, "worker-b").register("evacuate_host", handler));
    // The beat's sweep republishes the task once A's heartbeat is stale; B resumes it.
    let generation = env.beat_lease().await?;
    wait_until("worker B to finish the task", || async {
        let lease = LeaseFence { name: "beat", generation };
        requeue_orphans(&env.db, &env.queue, lease, Utc::now(), Duration::ZERO, test_settings().stale_after).await?;
        Ok((env.task(task_id).await?.state == TaskState::Succeeded).then_some(()))
    })
    .await?;

    let row = env.task(task_id).await?;
    ensure!(row.claimed_by.as_deref() == Some("worker-b") && row.attempts == 2, "{row:?}");
    ensure!(first_step.get() == 1, "the finished first step ran {} times", first_step.get());
    ensure!(second_step.get() == 2, "the unfinished second step ran {} times", second_step.get());
    let steps: Vec<(String, TaskStepState, i32)> =
        env.steps(task_id).await?.into_iter().map(|step| (step.name, step.state, step.attempts)).collect();
    ensure!(
        steps
            == [
                ("fence".to_owned(), TaskStepState::Succeeded, 1),
                ("evacuate".to_owned(), TaskStepState::Succeeded, 2)
            ],
        "{steps:?}"
    );
    worker_b.stop().await?;
    queue_b.close().await;
    Ok(())
}

async fn an_idempotency_key_returns_the_first_task_and_publishes_once(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let submit = || NewTask::new("echo", json!({ "n": 3 })).idempotency_key("evacuate:compute-1:1");
    let first = enqueue(&env.db, &env.queue, submit()).await?;
    let second = enqueue(&env.db, &env.queue, submit()).await?;
    ensure!(first == second, "{first} != {second}");
    let rows =
        task::Entity::find().filter(task::Column::IdempotencyKey.eq("evacuate:compute-1:1")).count(&env.db).await?;
    ensure!(rows == 1, "{rows} rows");
    // Queued behind the keyed task: once it has run, any duplicate message would have
    // been consumed before it (one consumer, first in first out).
    let sentinel = enqueue(&env.db, &env.queue, NewTask::new("echo", json!({ "n": 4 }))).await?;
    let depth = env.queue.depth().await?;
    ensure!(depth == 2, "{depth} messages queued for two tasks");

    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));
    env.wait_for_state(first, TaskState::Succeeded).await?;
    env.wait_for_state(sentinel, TaskState::Succeeded).await?;
    let counters = counted(&running, 2).await?;
    ensure!(calls.get() == 2 && counters.processed == 2 && counters.skipped == 0, "calls {} {counters:?}", calls.get());
    running.stop().await
}

async fn a_task_of_an_unknown_kind_fails_without_retries_and_is_dead_lettered(env: Env) -> anyhow::Result<()> {
    let running =
        Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(CallCounter::default())));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("no_such_kind", json!({}))).await?;
    let row = env.wait_for_state(task_id, TaskState::Failed).await?;
    ensure!(row.attempts == 1, "attempts {}", row.attempts);
    ensure!(row.error.as_deref().is_some_and(|error| error.contains("no handler") && error.contains("no_such_kind")));
    let dead = wait_until("the dead letter", || async { Ok(env.queue.pop_dead_letter().await?) }).await?;
    ensure!(dead == DeadLetter::Job(JobMessage::new(task_id)), "{dead:?}");
    running.stop().await
}

async fn a_task_that_keeps_failing_with_a_retryable_error_fails_after_its_attempts_and_is_dead_lettered(
    env: Env,
) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let handler = {
        let calls = calls.clone();
        move |_context: TaskContext| {
            let calls = calls.clone();
            async move {
                calls.hit();
                Err::<Value, _>(TaskError::retryable("nova answered 503"))
            }
        }
    };
    let running = Running::start(env.runner(&env.queue, "worker-a").register("flaky", handler));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("flaky", json!({}))).await?;
    let row = env.wait_for_state(task_id, TaskState::Failed).await?;

    let budget = test_settings().max_attempts as usize;
    ensure!(
        calls.get() == budget && row.attempts as usize == budget,
        "calls {} attempts {}",
        calls.get(),
        row.attempts
    );
    let error = row.error.context("no error recorded")?;
    ensure!(error.contains("gave up after 3 attempts") && error.contains("nova answered 503"), "{error}");
    let dead = wait_until("the dead letter", || async { Ok(env.queue.pop_dead_letter().await?) }).await?;
    ensure!(dead == DeadLetter::Job(JobMessage::new(task_id)), "{dead:?}");
    let counters = running.runner.counters();
    ensure!(counters.retried == 2 && counters.failed == 1, "{counters:?}");
    running.stop().await
}

async fn a_fatal_error_in_a_step_fails_the_task_at_once_and_records_the_step(env: Env) -> anyhow::Result<()> {
    let handler = |context: TaskContext| async move {
        context.step("fence", "bmc-1", || async { Err::<(), _>(TaskError::fatal("no power device bound")) }).await?;
        Ok(Value::Null)
    };
    let running = Running::start(env.runner(&env.queue, "worker-a").register("fence_node", handler));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("fence_node", json!({}))).await?;
    let row = env.wait_for_state(task_id, TaskState::Failed).await?;
    ensure!(row.attempts == 1 && row.error.as_deref() == Some("no power device bound"), "{row:?}");
    let steps = env.steps(task_id).await?;
    ensure!(steps.len() == 1 && steps[0].state == TaskStepState::Failed, "{steps:?}");
    ensure!(steps[0].target == "bmc-1" && steps[0].error.as_deref() == Some("no power device bound"));
    running.stop().await
}

async fn a_lost_publish_is_recovered_by_the_sweep(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));
    // Recorded, never published: what a crash between commit and publish leaves.
    let recorded = insert_task(&env.db, &NewTask::new("echo", json!({ "n": 5 }))).await?;
    ensure!(recorded.created);

    let generation = env.beat_lease().await?;
    let lease = LeaseFence { name: "beat", generation };
    let stale_after = test_settings().stale_after;
    // Younger than the threshold: left alone.
    let published =
        requeue_orphans(&env.db, &env.queue, lease, Utc::now(), Duration::from_secs(600), stale_after).await?;
    ensure!(published == 0, "republished a fresh task");
    let published = requeue_orphans(&env.db, &env.queue, lease, Utc::now(), Duration::ZERO, stale_after).await?;
    ensure!(published == 1, "republished {published}");

    let row = env.wait_for_state(recorded.task_id, TaskState::Succeeded).await?;
    ensure!(row.result == Some(json!({ "echo": 5 })) && calls.get() == 1);
    running.stop().await
}

async fn the_sweep_does_nothing_under_a_lost_lease(env: Env) -> anyhow::Result<()> {
    insert_task(&env.db, &NewTask::new("echo", json!({}))).await?;
    let generation = env.beat_lease().await?;
    let stale = LeaseFence { name: "beat", generation: generation + 1 };
    let result = requeue_orphans(&env.db, &env.queue, stale, Utc::now(), Duration::ZERO, Duration::ZERO).await;
    ensure!(result.as_ref().is_err_and(|error| error.is_lease_lost()), "{result:?}");
    Ok(())
}

async fn cancelling_the_runner_lets_an_in_flight_task_finish(env: Env) -> anyhow::Result<()> {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handler = {
        let (started, release) = (started.clone(), release.clone());
        move |_context: TaskContext| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok(json!("finished during shutdown"))
            }
        }
    };
    let running = Running::start(env.runner(&env.queue, "worker-a").register("slow", handler));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("slow", json!({}))).await?;
    within_patience("the task to start", started.notified()).await?;

    // Stop while the task runs, then let it finish: the runner waits for it.
    let stopping = tokio::spawn(running.stop());
    release.notify_one();
    within_patience("the runner to stop", stopping).await???;
    let row = env.task(task_id).await?;
    ensure!(row.state == TaskState::Succeeded, "{row:?}");
    Ok(())
}

async fn a_malformed_message_is_dead_lettered_and_the_worker_carries_on(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));
    env.publish_raw(b"this is not json").await?;
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("echo", json!({ "n": 2 }))).await?;
    env.wait_for_state(task_id, TaskState::Succeeded).await?;
    let dead = wait_until("the dead letter", || async { Ok(env.queue.pop_dead_letter().await?) }).await?;
    ensure!(dead == DeadLetter::Malformed(b"this is not json".to_vec()), "{dead:?}");
    running.stop().await
}

async fn process_one_skips_a_task_that_a_live_worker_holds(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let blocked = Arc::new(Notify::new());
    let handler = {
        let (calls, blocked) = (calls.clone(), blocked.clone());
        move |_context: TaskContext| {
            let (calls, blocked) = (calls.clone(), blocked.clone());
            async move {
                calls.hit();
                blocked.notify_one();
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        }
    };
    let holder = env.runner(&env.queue, "worker-a").register("hold", handler.clone());
    let other = env.runner(&env.queue, "worker-b").register("hold", handler);
    let recorded = insert_task(&env.db, &NewTask::new("hold", json!({}))).await?;
    let holding = tokio::spawn({
        let holder = holder.clone();
        async move { holder.process_one(recorded.task_id).await }
    });
    within_patience("the holder to start", blocked.notified()).await?;
    let outcome = other.process_one(recorded.task_id).await?;
    ensure!(outcome == aos_jobs::ProcessOutcome::Skipped, "{outcome:?}");
    ensure!(calls.get() == 1);
    holding.abort();
    Ok(())
}

async fn a_task_cancelled_while_running_is_abandoned_at_the_next_heartbeat(env: Env) -> anyhow::Result<()> {
    let started = Arc::new(Notify::new());
    let handler = {
        let started = started.clone();
        move |_context: TaskContext| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        }
    };
    let running = Running::start(env.runner(&env.queue, "worker-a").register("hang", handler));
    let task_id = enqueue(&env.db, &env.queue, NewTask::new("hang", json!({}))).await?;
    within_patience("the task to start", started.notified()).await?;

    ensure!(cancel_task(&env.db, task_id).await?, "a running task could not be cancelled");
    wait_until("the worker to let go of the task", || async {
        Ok((running.runner.counters().skipped == 1).then_some(()))
    })
    .await?;
    let row = env.task(task_id).await?;
    ensure!(row.state == TaskState::Cancelled && row.finished_at.is_some(), "{row:?}");
    ensure!(!cancel_task(&env.db, task_id).await?, "a finished task was cancelled again");
    running.stop().await?;
    ensure!(env.queue.depth().await? == 0, "messages left in the queue");
    Ok(())
}

job_queue_test_suite!(
    an_enqueued_task_runs_once_and_ends_succeeded,
    a_duplicate_message_for_a_finished_task_does_nothing,
    a_task_abandoned_by_a_stopped_worker_is_resumed_elsewhere_without_repeating_finished_steps,
    an_idempotency_key_returns_the_first_task_and_publishes_once,
    a_task_of_an_unknown_kind_fails_without_retries_and_is_dead_lettered,
    a_task_that_keeps_failing_with_a_retryable_error_fails_after_its_attempts_and_is_dead_lettered,
    a_fatal_error_in_a_step_fails_the_task_at_once_and_records_the_step,
    a_lost_publish_is_recovered_by_the_sweep,
    the_sweep_does_nothing_under_a_lost_lease,
    cancelling_the_runner_lets_an_in_flight_task_finish,
    a_malformed_message_is_dead_lettered_and_the_worker_carries_on,
    process_one_skips_a_task_that_a_live_worker_holds,
    a_task_cancelled_while_running_is_abandoned_at_the_next_heartbeat,
);

/// SQLite only: apalis-sqlite's setup must not leave `synchronous = OFF` on the pool the
/// tasks are written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_sqlite_queue_keeps_every_pooled_connection_fully_synchronous() -> anyhow::Result<()> {
    let database = aos_db::testing::TestDatabase::sqlite().await?;
    let db = database.connect_migrated().await?;
    let queue = JobQueue::sqlite(&db).await?;
    let pool = db.get_sqlite_connection_pool();
    // Hold every connection the pool may hand out at once, so each is checked.
    let mut connections = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        connections.push(pool.acquire().await?);
    }
    for connection in &mut connections {
        let (synchronous,): (i64,) = sea_orm::sqlx::query_as("PRAGMA synchronous").fetch_one(&mut **connection).await?;
        ensure!(synchronous == 2, "a pooled connection runs with synchronous = {synchronous} (2 is FULL)");
    }
    drop(connections);
    queue.close().await;
    db.close().await?;
    database.cleanup().await;
    Ok(())
}

/// RabbitMQ only (the SQLite queue is a table that cannot vanish under a worker): the
/// broker cancels the consumer when its queue is deleted; the runner restarts it, and the
/// publisher declares the queue again instead of failing every publish.
async fn a_queue_deleted_under_a_running_worker_is_declared_again_and_work_continues(env: Env) -> anyhow::Result<()> {
    let calls = CallCounter::default();
    let running = Running::start(env.runner(&env.queue, "worker-a").register("echo", counting_echo(calls.clone())));
    let first = enqueue(&env.db, &env.queue, NewTask::new("echo", json!({ "n": 1 }))).await?;
    env.wait_for_state(first, TaskState::Succeeded).await?;

    env.queue.delete().await?;
    let second = insert_task(&env.db, &NewTask::new("echo", json!({ "n": 2 }))).await?;
    env.queue.publish(second.task_id).await?;
    env.wait_for_state(second.task_id, TaskState::Succeeded).await?;
    ensure!(calls.get() == 2);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_queue_deleted_under_a_running_worker_is_declared_again_and_work_continues() {
    support::run_conformance_test(
        support::Backend::RabbitMq,
        a_queue_deleted_under_a_running_worker_is_declared_again_and_work_continues,
    )
    .await;
}
