//! Operator commands on nodes, tasks, alarms and reserves (`node maintenance|evacuation|
//! evacuate|history`, `task list|show`, `alarm list`, `reserve add|list|remove`), on MariaDB
//! and SQLite: what they record, and a clear refusal (exit 2) for what does not apply.

use crate::support::{Backend, Fixture, on_both_backends};

fn queue_prefix() -> String {
    format!("aos-test-cli-{}-{}", std::process::id(), rand_suffix())
}

async fn fixture_with_nodes(backend: Backend) -> Fixture {
    fixture_with_prefix(backend, &queue_prefix()).await
}

/// `[worker] queue_prefix` unique per test: `node evacuate` publishes its task on RabbitMQ with
/// MariaDB.
async fn fixture_with_prefix(backend: Backend, prefix: &str) -> Fixture {
    let fixture = Fixture::new(backend, &format!("[worker]\nqueue_prefix = {prefix}\n")).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());
    let db = fixture.database.connect().await.expect("connect");
    let observed: Vec<aos_db::ObservedComputeHost> = ["cmp-1", "cmp-2", "cmp-3"]
        .iter()
        .map(|host| aos_db::ObservedComputeHost::up_and_enabled(*host, Some(format!("svc-{host}"))))
        .collect();
    aos_db::sync_nodes(&db, None, "test", &observed).await.expect("nodes");
    db.close().await.ok();
    fixture
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0)
}

async fn maintenance_and_the_evacuation_flag_are_recorded_in_the_node_history(backend: Backend) {
    let fixture = fixture_with_nodes(backend).await;
    let on = fixture.run(&["node", "maintenance", "cmp-1", "on"]);
    assert!(on.succeeded() && on.stdout.contains("maintenance"), "{}", on.report());
    let off = fixture.run(&["node", "maintenance", "cmp-1", "off"]);
    assert!(off.succeeded() && off.stdout.contains("recovering"), "{}", off.report());
    let deny = fixture.run(&["node", "evacuation", "cmp-2", "deny"]);
    assert!(deny.succeeded(), "{}", deny.report());
    let list = fixture.run(&["node", "list"]);
    let row = list.table_rows().into_iter().find(|row| row[0] == "cmp-2").expect("cmp-2 listed");
    assert_eq!(row[3], "denied", "{}", list.report());
    let history = fixture.run(&["node", "history", "cmp-1"]);
    assert!(history.succeeded(), "{}", history.report());
    assert!(
        history.stdout.contains("up -> maintenance") && history.stdout.contains("maintenance -> recovering"),
        "{}",
        history.report()
    );
    let unknown = fixture.run(&["node", "maintenance", "no-such-node", "on"]);
    assert_eq!(unknown.code, Some(2), "{}", unknown.report());
    assert!(unknown.stderr.contains("no-such-node"), "{}", unknown.report());
    let bad = fixture.run(&["node", "maintenance", "cmp-1", "maybe"]);
    assert!(!bad.succeeded() && bad.stderr.contains("maybe"), "{}", bad.report());
    fixture.cleanup().await;
}

async fn evacuate_records_a_task_once_and_task_show_lists_it(backend: Backend) {
    let prefix = queue_prefix();
    let fixture = fixture_with_prefix(backend, &prefix).await;
    let evacuate = fixture.run(&["node", "evacuate", "cmp-3", "--skip-fence"]);
    assert!(evacuate.succeeded(), "{}", evacuate.report());
    let task_id = evacuate
        .stdout
        .split_whitespace()
        .skip_while(|word| *word != "task")
        .nth(1)
        .expect("the task id is printed")
        .to_owned();
    let again = fixture.run(&["node", "evacuate", "cmp-3"]);
    assert_eq!(again.code, Some(2), "a second request while one is pending is refused: {}", again.report());
    let shutdown = fixture.run(&["node", "shutdown", "cmp-3"]);
    assert_eq!(shutdown.code, Some(2), "no shutdown while a recovery is pending: {}", shutdown.report());
    let unknown = fixture.run(&["node", "shutdown", "no-such-node"]);
    assert_eq!(unknown.code, Some(2), "{}", unknown.report());
    let tasks = fixture.run(&["task", "list"]);
    assert!(tasks.succeeded(), "{}", tasks.report());
    assert!(
        tasks.table_rows().iter().any(|row| row[0] == task_id && row[1] == "recover_node" && row[2] == "cmp-3"),
        "{}",
        tasks.report()
    );
    let show = fixture.run(&["task", "show", &task_id]);
    assert!(show.succeeded() && show.stdout.contains("skip_fence"), "{}", show.report());
    let missing = fixture.run(&["task", "show", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(missing.code, Some(2), "{}", missing.report());
    let history = fixture.run(&["node", "history", "cmp-3"]);
    assert!(history.stdout.contains("evacuation_requested"), "{}", history.report());
    let alarms = fixture.run(&["alarm", "list", "--all"]);
    assert!(alarms.succeeded(), "{}", alarms.report());
    if backend == Backend::MySql {
        let queue = aos_jobs::JobQueue::connect_amqp(aos_testkit::TEST_AMQP_URI, &prefix).await.expect("broker");
        queue.delete().await.expect("delete the test queues");
        queue.close().await;
    }
    fixture.cleanup().await;
}

async fn reserve_bindings_are_added_listed_and_removed(backend: Backend) {
    let fixture = fixture_with_nodes(backend).await;
    let add = fixture.run(&["reserve", "add", "cmp-3", "--for", "cmp-1", "--priority", "5"]);
    assert!(add.succeeded(), "{}", add.report());
    let list = fixture.run(&["reserve", "list"]);
    assert!(list.table_rows().iter().any(|row| row == &["cmp-3", "cmp-1", "5", "reserve"]), "{}", list.report());
    let nodes = fixture.run(&["node", "list"]);
    let row = nodes.table_rows().into_iter().find(|row| row[0] == "cmp-3").expect("cmp-3");
    assert_eq!((row[1].as_str(), row[4].as_str()), ("reserve", "yes"), "{}", nodes.report());
    let own = fixture.run(&["reserve", "add", "cmp-1", "--for", "cmp-1"]);
    assert_eq!(own.code, Some(2), "{}", own.report());
    let twice = fixture.run(&["reserve", "add", "cmp-3", "--for", "cmp-1"]);
    assert_eq!(twice.code, Some(2), "{}", twice.report());
    let remove = fixture.run(&["reserve", "remove", "cmp-3", "--for", "cmp-1"]);
    assert!(remove.succeeded(), "{}", remove.report());
    let gone = fixture.run(&["reserve", "remove", "cmp-3", "--for", "cmp-1"]);
    assert_eq!(gone.code, Some(2), "{}", gone.report());
    fixture.cleanup().await;
}

on_both_backends!(
    maintenance_and_the_evacuation_flag_are_recorded_in_the_node_history,
    evacuate_records_a_task_once_and_task_show_lists_it,
    reserve_bindings_are_added_listed_and_removed,
);
