//! The node state file: what a node writes to each of its availability storages to prove it
//! is alive, and what the HA core reads before evacuating it (docs/adr/0009-node-state-file.md).
//!
//! # Format 1
//!
//! Location: `<storage path>/aos-node-state/<node name>.json` ([`state_file_path`]), where the
//! node name is Nova's hypervisor host name. Content, UTF-8 JSON:
//!
//! ```json
//! {"format": 1, "node": "compute-1", "written_at": "2026-11-23T15:04:05.123456Z",
//!  "instances": [{"id": "6f1c…", "state": "running"}, {"id": "0b2e…", "state": "paused"}]}
//! ```
//!
//! - `format`: `1`. A reader refuses any other number ([`StateFileError::UnsupportedFormat`]);
//!   a change that older readers would misread gets a new number. Fields may be added within
//!   format 1: readers ignore fields they do not know.
//! - `node`: the writer's node name; it must equal the file name's (a file copied or renamed
//!   by hand is refused, [`StateFileError::NodeMismatch`]).
//! - `written_at`: when the writer wrote it, RFC 3339 in UTC, by the writer's clock. Freshness
//!   is judged against this value, not the file's mtime: NFS servers and clients disagree on
//!   mtimes, and a copied file keeps a misleading one.
//! - `instances`: every instance (libvirt domain) on the node, by Nova server UUID, with its
//!   hypervisor state: `running`, `blocked`, `paused`, `shutdown`, `shutoff`, `crashed`,
//!   `pmsuspended`, `nostate` (libvirt's names), or any other string (kept as it is).
//!
//! Writers replace the file atomically: the content goes to a temporary file in the same
//! directory (`.<node>.json.tmp-<pid>-<nanos>`, flushed to disk), which is then renamed over
//! `<node>.json`, so a reader sees the old file or the new one, never a part of one.
//!
//! Every read and write runs on a blocking thread under a timeout: a hung NFS mount blocks
//! the thread inside the kernel, never the caller. While a thread is still stuck on a
//! storage, further calls on that storage fail at once ([`StateFileError::Hung`]) instead of
//! stranding one more thread each.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The directory under a storage's path that holds the state files.
pub const STATE_DIRECTORY: &str = "aos-node-state";
/// The format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// Bound on every state-file read or write (and storage check) unless the caller gives one.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A state file larger than this is refused as malformed rather than read into memory
/// (several thousand instances fit in a few hundred KiB).
pub const MAX_STATE_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One node's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub format: u32,
    pub node: String,
    pub written_at: DateTime<Utc>,
    pub instances: Vec<InstanceEntry>,
}

impl StateFile {
    /// A format-1 state file of `node` written now.
    pub fn new(node: impl Into<String>, instances: Vec<InstanceEntry>) -> Self {
        Self { format: FORMAT, node: node.into(), written_at: Utc::now(), instances }
    }
}

/// One instance on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Nova's server UUID.
    pub id: String,
    pub state: InstanceState,
}

/// An instance's hypervisor state, with libvirt's names; anything else is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstanceState {
    Running,
    /// libvirt `blocked`: the domain runs but waits on a resource (an idle vCPU under Xen).
    Blocked,
    Paused,
    /// Being shut down.
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
    NoState,
    Other(String),
}

impl InstanceState {
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Blocked => "blocked",
            InstanceState::Paused => "paused",
            InstanceState::Shutdown => "shutdown",
            InstanceState::Shutoff => "shutoff",
            InstanceState::Crashed => "crashed",
            InstanceState::PmSuspended => "pmsuspended",
            InstanceState::NoState => "nostate",
            InstanceState::Other(other) => other,
        }
    }

    /// Whether the instance is executing on the node: `running`, or `blocked` (alive, waiting
    /// on a resource). A paused or stopped instance proves nothing about the node's liveness.
    pub fn is_running(&self) -> bool {
        matches!(self, InstanceState::Running | InstanceState::Blocked)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl From<&str> for InstanceState {
    fn from(value: &str) -> Self {
        match value {
            "running" => InstanceState::Running,
            "blocked" => InstanceState::Blocked,
            "paused" => InstanceState::Paused,
            "shutdown" => InstanceState::Shutdown,
            "shutoff" => InstanceState::Shutoff,
            "crashed" => InstanceState::Crashed,
            "pmsuspended" => InstanceState::PmSuspended,
            "nostate" => InstanceState::NoState,
            other => InstanceState::Other(other.to_owned()),
        }
    }
}

impl Serialize for InstanceState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(InstanceState::from(text.as_str()))
    }
}

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The node name cannot be a file name (empty, `.`/`..`, or with `/` or NUL in it).
    #[error("invalid node name {0:?} for a state file")]
    InvalidNodeName(String),
    /// The storage path is not a directory (not mounted, removed, or a file).
    #[error("storage path {path} is not a directory")]
    StorageMissing { path: PathBuf },
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file system did not answer in time (a hung NFS mount, typically).
    #[error("{path} did not answer within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    /// An earlier operation on this storage is still blocked in the kernel.
    #[error("storage {path} is hung: an earlier operation on it has not returned yet")]
    Hung { path: PathBuf },
    #[error("state file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("state file {path} has format {format}; this version reads format {FORMAT}")]
    UnsupportedFormat { path: PathBuf, format: u64 },
    #[error("state file {path} names node {found:?}, not {expected:?}")]
    NodeMismatch { path: PathBuf, expected: String, found: String },
    /// The blocking thread doing the I/O panicked or was cancelled.
    #[error("state file operation on {path} failed: {reason}")]
    Interrupted { path: PathBuf, reason: String },
}

/// `<storage_path>/aos-node-state/<node>.json`.
pub fn state_file_path(storage_path: &Path, node: &str) -> Result<PathBuf, StateFileError> {
    check_node_name(node)?;
    Ok(storage_path.join(STATE_DIRECTORY).join(format!("{node}.json")))
}

fn check_node_name(node: &str) -> Result<(), StateFileError> {
    if node.is_empty() || node == "." || node == ".." || node.contains(['/', '\0']) {
        return Err(StateFileError::InvalidNodeName(node.to_owned()));
    }
    Ok(())
}

/// Writes `file` to `<storage_path>/aos-node-state/<file.node>.json` atomically (temporary
/// file, fsync, rename, fsync of the directory), creating the directory if needed, within
/// [`DEFAULT_IO_TIMEOUT`].
pub async fn write_state_file(storage_path: &Path, file: &StateFile) -> Result<(), StateFileError> {
    write_state_file_within(storage_path, file, DEFAULT_IO_TIMEOUT).await
}

/// [`write_state_file`] with an explicit timeout.
pub async fn write_state_file_within(
    storage_path: &Path,
    file: &StateFile,
    timeout: Duration,
) -> Result<(), StateFileError> {
    let path = state_file_path(storage_path, &file.node)?;
    let body = serde_json::to_vec_pretty(file)
        .map_err(|error| StateFileError::Malformed { path: path.clone(), reason: error.to_string() })?;
    let node = file.node.clone();
    run_blocking(storage_path, timeout, move || write_atomically(&path, &node, &body)).await
}

fn write_atomically(path: &Path, node: &str, body: &[u8]) -> Result<(), StateFileError> {
    let directory = path.parent().unwrap_or(Path::new("."));
    let storage = directory.parent().unwrap_or(Path::new("."));
    if !storage.is_dir() {
        return Err(StateFileError::StorageMissing { path: storage.to_owned() });
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateFileError::Io { path, source }
    };
    std::fs::create_dir_all(directory).map_err(io(directory))?;
    let nanos = Utc::now().timestamp_subsec_nanos();
    let temporary = directory.join(format!(".{node}.json.tmp-{}-{nanos}", std::process::id()));
    let written = (|| {
        let mut output = std::fs::File::create(&temporary)?;
        output.write_all(body)?;
        output.write_all(b"\n")?;
        output.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(StateFileError::Io { path: temporary, source });
    }
    if let Err(source) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(StateFileError::Io { path: path.to_owned(), source });
    }
    // Make the rename itself durable (best effort: not every file system syncs directories).
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Reads `node`'s state file from the storage at `storage_path`, within
/// [`DEFAULT_IO_TIMEOUT`]. `Ok(None)`: the storage is there but the node has no state file.
pub async fn read_state_file(storage_path: &Path, node: &str) -> Result<Option<StateFile>, StateFileError> {
    read_state_file_within(storage_path, node, DEFAULT_IO_TIMEOUT).await
}

/// [`read_state_file`] with an explicit timeout.
pub async fn read_state_file_within(
    storage_path: &Path,
    node: &str,
    timeout: Duration,
) -> Result<Option<StateFile>, StateFileError> {
    let path = state_file_path(storage_path, node)?;
    let storage = storage_path.to_owned();
    let node = node.to_owned();
    run_blocking(storage_path, timeout, move || read_blocking(&storage, &path, &node)).await
}

fn read_blocking(storage: &Path, path: &Path, node: &str) -> Result<Option<StateFile>, StateFileError> {
    let opened = std::fs::File::open(path);
    let file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return if storage.is_dir() {
                Ok(None)
            } else {
                Err(StateFileError::StorageMissing { path: storage.to_owned() })
            };
        }
        Err(source) => return Err(StateFileError::Io { path: path.to_owned(), source }),
    };
    let mut body = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|source| StateFileError::Io { path: path.to_owned(), source })?;
    if body.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(StateFileError::Malformed {
            path: path.to_owned(),
            reason: format!("larger than {MAX_STATE_FILE_BYTES} bytes"),
        });
    }
    parse(path, node, &body).map(Some)
}

/// Parses a state file's content; `path` and `node` (the name the file is read for) are for
/// the checks and the messages.
pub fn parse(path: &Path, node: &str, body: &[u8]) -> Result<StateFile, StateFileError> {
    let malformed = |reason: String| StateFileError::Malformed { path: path.to_owned(), reason };
    // The format number first, so that a future format is reported as such rather than as
    // whatever field it no longer has.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| malformed(error.to_string()))?;
    let format = value
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| malformed("no numeric \"format\" field".to_owned()))?;
    if format != u64::from(FORMAT) {
        return Err(StateFileError::UnsupportedFormat { path: path.to_owned(), format });
    }
    let file: StateFile = serde_json::from_value(value).map_err(|error| malformed(error.to_string()))?;
    if file.node != node {
        return Err(StateFileError::NodeMismatch {
            path: path.to_owned(),
            expected: node.to_owned(),
            found: file.node,
        });
    }
    Ok(file)
}

/// The percentage (0–100) of `instance_ids` — the instances the control plane expects on the
/// node — that `file` reports running ([`InstanceState::is_running`]). An expected instance
/// missing from the file counts as not running; instances in the file but not expected are
/// ignored; repeated ids count once. No expected instance at all gives 100: nothing on the
/// node contradicts the file.
pub fn running_rate<'a>(file: &StateFile, instance_ids: impl IntoIterator<Item = &'a str>) -> f64 {
    let expected: BTreeSet<&str> = instance_ids.into_iter().collect();
    if expected.is_empty() {
        return 100.0;
    }
    let running: BTreeSet<&str> = file
        .instances
        .iter()
        .filter(|instance| instance.state.is_running())
        .map(|instance| instance.id.as_str())
        .collect();
    let matched = expected.iter().filter(|id| running.contains(*id)).count();
    matched as f64 * 100.0 / expected.len() as f64
}

/// Storages with an operation still blocked in the kernel (by storage path).
static HUNG_STORAGES: LazyLock<Mutex<BTreeSet<PathBuf>>> = LazyLock::new(|| Mutex::new(BTreeSet::new()));

/// Runs `operation` on a blocking thread, at most `timeout`. The storage is marked busy while
/// the thread runs; after a timeout it stays marked until the thread returns, and calls on it
/// fail at once with [`StateFileError::Hung`].
pub(crate) async fn run_blocking<T: Send + 'static>(
    storage_path: &Path,
    timeout: Duration,
    operation: impl FnOnce() -> Result<T, StateFileError> + Send + 'static,
) -> Result<T, StateFileError> {
    let storage = storage_path.to_owned();
    let hung = |storage: &Path| HUNG_STORAGES.lock().map(|set| set.contains(storage)).unwrap_or(false);
    if hung(&storage) {
        return Err(StateFileError::Hung { path: storage });
    }
    let progress = std::sync::Arc::new(Mutex::new(Progress::default()));
    let marker = StuckMarker { storage: storage.clone(), progress: progress.clone() };
    let task = tokio::task::spawn_blocking(move || {
        let outcome = operation();
        drop(marker);
        outcome
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => Err(StateFileError::Interrupted { path: storage, reason: error.to_string() }),
        Err(_) => {
            // Mark the storage hung until the stuck thread returns (its marker then clears
            // it) — unless it returned just now.
            if let Ok(mut progress) = progress.lock()
                && !progress.done
            {
                progress.marked_hung = true;
                if let Ok(mut set) = HUNG_STORAGES.lock() {
                    set.insert(storage.clone());
                }
            }
            Err(StateFileError::Timeout { path: storage, after: timeout })
        }
    }
}

/// Shared by a blocking operation and its caller; the lock orders "the thread returned"
/// against "the caller gave up and marked the storage hung".
#[derive(Default)]
struct Progress {
    done: bool,
    marked_hung: bool,
}

/// Clears a storage's hung mark when the blocking operation that timed out finally returns.
struct StuckMarker {
    storage: PathBuf,
    progress: std::sync::Arc<Mutex<Progress>>,
}

impl Drop for StuckMarker {
    fn drop(&mut self) {
        if let Ok(mut progress) = self.progress.lock() {
            progress.done = true;
            if progress.marked_hung
                && let Ok(mut set) = HUNG_STORAGES.lock()
            {
                set.remove(&self.storage);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateFile {
        StateFile {
            format: 1,
            node: "compute-1".into(),
            written_at: DateTime::parse_from_rfc3339("2026-11-23T15:04:05.123456Z").unwrap().with_timezone(&Utc),
            instances: vec![
                InstanceEntry { id: "a".into(), state: InstanceState::Running },
                InstanceEntry { id: "b".into(), state: InstanceState::Paused },
                InstanceEntry { id: "c".into(), state: InstanceState::Blocked },
                InstanceEntry { id: "d".into(), state: InstanceState::Other("migrating".into()) },
            ],
        }
    }

    #[test]
    fn the_documented_format_parses_and_round_trips() {
        let text = r#"{"format": 1, "node": "compute-1", "written_at": "2026-11-23T15:04:05.123456Z",
            "instances": [{"id": "a", "state": "running"}, {"id": "b", "state": "paused"},
                          {"id": "c", "state": "blocked"}, {"id": "d", "state": "migrating"}],
            "agent_version": "a later field that readers ignore"}"#;
        let parsed = parse(Path::new("x.json"), "compute-1", text.as_bytes()).unwrap();
        assert_eq!(parsed, sample());
        let written = serde_json::to_string(&sample()).unwrap();
        assert!(written.contains(r#""written_at":"2026-11-23T15:04:05.123456Z""#), "{written}");
        assert!(written.contains(r#"{"id":"d","state":"migrating"}"#), "{written}");
        assert_eq!(parse(Path::new("x.json"), "compute-1", written.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn an_offset_timestamp_is_read_as_utc() {
        let text = r#"{"format": 1, "node": "n", "written_at": "2026-11-23T18:04:05+03:00", "instances": []}"#;
        let parsed = parse(Path::new("n.json"), "n", text.as_bytes()).unwrap();
        assert_eq!(parsed.written_at.to_rfc3339(), "2026-11-23T15:04:05+00:00");
    }

    #[test]
    fn another_format_a_wrong_node_and_garbage_are_refused() {
        let future = r#"{"format": 2, "node": "n", "whatever": true}"#;
        assert!(matches!(
            parse(Path::new("n.json"), "n", future.as_bytes()),
            Err(StateFileError::UnsupportedFormat { format: 2, .. })
        ));
        let other = r#"{"format": 1, "node": "m", "written_at": "2026-11-23T15:04:05Z", "instances": []}"#;
        assert!(matches!(
            parse(Path::new("n.json"), "n", other.as_bytes()),
            Err(StateFileError::NodeMismatch { found, .. }) if found == "m"
        ));
        for garbage in ["", "{", "[]", r#"{"format": "1"}"#, r#"{"format": 1, "node": "n"}"#] {
            assert!(
                matches!(parse(Path::new("n.json"), "n", garbage.as_bytes()), Err(StateFileError::Malformed { .. })),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn node_names_that_are_not_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "../etc/passwd", "nul\0byte"] {
            assert!(
                matches!(state_file_path(Path::new("/s"), bad), Err(StateFileError::InvalidNodeName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            state_file_path(Path::new("/mnt/ha"), "compute-1.example.org").unwrap(),
            Path::new("/mnt/ha/aos-node-state/compute-1.example.org.json")
        );
    }

    #[test]
    fn running_rate_counts_expected_instances_that_run() {
        let file = sample();
        // a running, c blocked (alive), b paused: 2 of 3.
        assert!((running_rate(&file, ["a", "b", "c"]) - 200.0 / 3.0).abs() < 1e-9);
        // Missing from the file = not running; unexpected ones in the file are ignored.
        assert_eq!(running_rate(&file, ["a", "zzz"]), 50.0);
        assert_eq!(running_rate(&file, ["a", "a", "c"]), 100.0);
        assert_eq!(running_rate(&file, ["b", "d"]), 0.0);
        assert_eq!(running_rate(&file, std::iter::empty()), 100.0);
    }
}
