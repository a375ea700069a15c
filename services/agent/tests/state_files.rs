//! The node agent's state files: written to every storage at each interval even when the
//! broker is unreachable, and never seen half-written by concurrent readers.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aos_agent::node::Answering;
use aos_agent::probe;
use aos_agent::protocol::{InstanceSeen, InstancesSeen};
use aos_storage::state_file::{STATE_DIRECTORY, parse};
use common::RunningNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_files_are_written_without_a_broker_and_never_read_torn() -> anyhow::Result<()> {
    let storages = [tempfile::tempdir()?, tempfile::tempdir()?];
    let paths: Vec<PathBuf> = storages.iter().map(|dir| dir.path().to_owned()).collect();
    let node = "cmp-state-files";
    // A broker that is not there: nothing listens on port 1.
    let mut settings = common_settings(node);
    settings.storage_paths = paths.clone();
    settings.heartbeat_interval = Duration::from_millis(50);
    let agent = RunningNode::start(settings);
    aos_testkit::wait_until(Duration::from_secs(30), "state files on both storages", || async {
        Ok(paths.iter().all(|path| path.join(STATE_DIRECTORY).join(format!("{node}.json")).is_file()).then_some(()))
    })
    .await?;

    // A second writer of large files (the agent's own writer function, 5,000 instances) races
    // the agent's writes while readers read the raw bytes as fast as they can.
    let instances = InstancesSeen::Libvirt {
        instances: (0..5_000)
            .map(|index| InstanceSeen {
                id: format!("{index:08}-0000-4000-8000-000000000000"),
                state: "running".into(),
            })
            .collect(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let file_path = paths[0].join(STATE_DIRECTORY).join(format!("{node}.json"));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            let path = file_path.clone();
            std::thread::spawn(move || -> anyhow::Result<(usize, usize)> {
                let (mut reads, mut large) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let body = std::fs::read(&path)?;
                    let file = parse(&path, "cmp-state-files", &body)
                        .map_err(|error| anyhow::anyhow!("torn or invalid read of {} bytes: {error}", body.len()))?;
                    reads += 1;
                    large += usize::from(file.instances.len() == 5_000);
                }
                Ok((reads, large))
            })
        })
        .collect();
    for _ in 0..30 {
        let file = probe::state_file(node, &instances);
        let writes = probe::write_state_files(&paths, &file).await;
        assert!(writes.iter().all(|write| write.ok), "{writes:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    for reader in readers {
        let (reads, large) = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        total = (total.0 + reads, total.1 + large);
    }
    println!("{} reads, {} of the large file, none torn", total.0, total.1);
    assert!(total.0 > 0 && total.1 > 0, "the readers read nothing: {total:?}");
    assert!(agent.counters.state_file_rounds.load(Ordering::Relaxed) > 1);

    // Once the agent has stopped, no temporary file is left behind.
    agent.stop().await?;
    for path in &paths {
        let leftovers: Vec<_> = std::fs::read_dir(path.join(STATE_DIRECTORY))?
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    Ok(())
}

fn common_settings(node: &str) -> aos_agent::NodeSettings {
    aos_agent::NodeSettings {
        node: node.to_owned(),
        amqp_uri: "amqp://nobody:nothing@127.0.0.1:1/%2F".into(),
        user: "nobody".into(),
        controller_user: "guest".into(),
        heartbeat_interval: Duration::from_secs(1),
        storage_paths: Vec::new(),
        answering: Answering::Normal,
    }
}
