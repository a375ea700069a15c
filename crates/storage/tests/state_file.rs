//! Writing and reading state files on a real file system: atomic replacement under
//! concurrent readers, the "no file" and "no storage" cases, and a storage that hangs (a
//! FIFO stands in for a hung NFS mount: opening it blocks in the kernel).

use std::path::Path;
use std::time::Duration;

use aos_storage::{
    InstanceEntry, InstanceState, STATE_DIRECTORY, StateFile, StateFileError, check_reachable, read_state_file,
    read_state_file_within, write_state_file,
};

fn instances(count: usize) -> Vec<InstanceEntry> {
    (0..count).map(|index| InstanceEntry { id: format!("server-{index}"), state: InstanceState::Running }).collect()
}

#[tokio::test]
async fn a_written_state_file_reads_back_and_leaves_no_temporary_file() -> anyhow::Result<()> {
    let storage = tempfile::tempdir()?;
    let file = StateFile::new("compute-1", instances(3));
    write_state_file(storage.path(), &file).await?;
    let read = read_state_file(storage.path(), "compute-1").await?;
    assert_eq!(read.as_ref(), Some(&file));
    let names: Vec<String> = std::fs::read_dir(storage.path().join(STATE_DIRECTORY))?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, ["compute-1.json"]);
    assert_eq!(read_state_file(storage.path(), "compute-2").await?, None, "no file of that node");
    Ok(())
}

#[tokio::test]
async fn a_missing_storage_is_an_error_not_an_absent_file() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let not_mounted = scratch.path().join("not-mounted");
    let read = read_state_file(&not_mounted, "compute-1").await;
    assert!(matches!(read, Err(StateFileError::StorageMissing { .. })), "{read:?}");
    let written = write_state_file(&not_mounted, &StateFile::new("compute-1", Vec::new())).await;
    assert!(matches!(written, Err(StateFileError::StorageMissing { .. })), "{written:?}");
    assert!(!not_mounted.exists(), "a writer never creates the storage's mount point");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_partly_written_file() -> anyhow::Result<()> {
    let storage = tempfile::tempdir()?;
    write_state_file(storage.path(), &StateFile::new("compute-1", instances(1))).await?;
    let path = storage.path().to_owned();
    let writer = tokio::spawn(async move {
        // Files of very different sizes, so a torn read could not parse.
        for round in 0..200 {
            write_state_file(&path, &StateFile::new("compute-1", instances(1 + (round % 7) * 300))).await?;
        }
        anyhow::Ok(())
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let file = read_state_file(storage.path(), "compute-1").await?.expect("always a whole file");
        assert!(!file.instances.is_empty());
        reads += 1;
    }
    writer.await??;
    assert!(reads > 0);
    Ok(())
}

fn make_fifo(path: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("mkfifo").arg(path).status()?;
    anyhow::ensure!(status.success(), "mkfifo {} failed", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_storage_times_out_and_is_not_touched_again_until_the_stuck_call_returns() -> anyhow::Result<()> {
    let storage = tempfile::tempdir()?;
    std::fs::create_dir(storage.path().join(STATE_DIRECTORY))?;
    let fifo = storage.path().join(STATE_DIRECTORY).join("compute-1.json");
    make_fifo(&fifo)?;

    let read = read_state_file_within(storage.path(), "compute-1", Duration::from_millis(300)).await;
    assert!(matches!(read, Err(StateFileError::Timeout { .. })), "{read:?}");
    // The first call's thread is still blocked: further calls on this storage fail at once
    // instead of stranding more threads.
    let again = read_state_file_within(storage.path(), "compute-2", Duration::from_secs(30)).await;
    assert!(matches!(again, Err(StateFileError::Hung { .. })), "{again:?}");
    let check = check_reachable(storage.path(), Duration::from_secs(30)).await;
    assert!(matches!(check, Err(StateFileError::Hung { .. })), "{check:?}");

    // The storage answers again: the stuck open returns, and the storage is usable.
    let opener = fifo.clone();
    std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(opener).map(drop)).join().ok();
    let mut outcome = Err(StateFileError::Hung { path: storage.path().to_owned() });
    for _ in 0..300 {
        outcome = read_state_file_within(storage.path(), "compute-2", Duration::from_secs(30)).await;
        if !matches!(outcome, Err(StateFileError::Hung { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(outcome, Ok(None)), "{outcome:?}");
    check_reachable(storage.path(), Duration::from_secs(30)).await?;
    Ok(())
}
