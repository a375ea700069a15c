//! What a node agent observes on its hypervisor: processes (nova-compute, libvirt) from
//! `/proc`, instances from libvirt through `virsh` in read-only mode, and its storages. Every
//! external command runs with a hard timeout and a fixed argument list: nothing here takes an
//! argument from the bus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aos_storage::state_file::{InstanceEntry, InstanceState, StateFile};

use crate::protocol::{InstanceSeen, InstancesSeen, NodeFacts, ProcessState, StorageWrite};

/// Bound on one `virsh` call: a wedged libvirtd must not stop heartbeats.
pub const VIRSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The libvirt connection the agent reads (the system instance Nova uses).
pub const LIBVIRT_URI: &str = "qemu:///system";

/// Finds processes whose command line names `program` (its file name, or `python …/program`).
pub fn find_processes(programs: &[&str]) -> ProcessState {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let matches = cmdline.split(|byte| *byte == 0).take(3).any(|argument| {
                let argument = String::from_utf8_lossy(argument);
                let name = Path::new(argument.as_ref()).file_name().and_then(|name| name.to_str()).unwrap_or("");
                programs.contains(&name)
            });
            if matches && pid != std::process::id() {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    ProcessState { running: !pids.is_empty(), pids }
}

pub fn nova_compute() -> ProcessState {
    find_processes(&["nova-compute"])
}

pub fn libvirt() -> ProcessState {
    find_processes(&["libvirtd", "virtqemud"])
}

/// The domains libvirt knows, with their states; `Unavailable` with the reason when `virsh`
/// is missing, fails or hangs.
pub async fn instances() -> InstancesSeen {
    let uuids = match virsh(&["list", "--all", "--uuid"]).await {
        Ok(output) => output,
        Err(reason) => return InstancesSeen::Unavailable { reason },
    };
    let mut instances = Vec::new();
    for uuid in uuids.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let state = match virsh(&["domstate", uuid]).await {
            Ok(state) => libvirt_state_name(state.trim()),
            // The domain vanished between the two calls.
            Err(_) => continue,
        };
        instances.push(InstanceSeen { id: uuid.to_owned(), state });
    }
    InstancesSeen::Libvirt { instances }
}

/// `virsh domstate` prints `shut off`, `in shutdown`, `pmsuspended`, `idle`; the state file
/// uses libvirt's enum names (`shutoff`, `shutdown`, …).
fn libvirt_state_name(printed: &str) -> String {
    match printed {
        "shut off" => "shutoff".to_owned(),
        "in shutdown" => "shutdown".to_owned(),
        "idle" => "blocked".to_owned(),
        "no state" => "nostate".to_owned(),
        other => other.replace(' ', ""),
    }
}

async fn virsh(arguments: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("virsh");
    command.args(["--readonly", "--connect", LIBVIRT_URI, "--quiet"]).args(arguments).kill_on_drop(true);
    let output = match tokio::time::timeout(VIRSH_TIMEOUT, command.output()).await {
        Err(_) => return Err(format!("virsh did not answer within {VIRSH_TIMEOUT:?}")),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err("virsh is not installed: libvirt cannot be read".to_owned());
        }
        Ok(Err(error)) => return Err(format!("cannot run virsh: {error}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("virsh failed ({}): {}", output.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The state file of `node` for what libvirt shows (an empty list when libvirt cannot be
/// read: the file then still proves the node alive, and the isolation check, finding none of
/// the expected instances running, does not count it as "alive with its instances").
pub fn state_file(node: &str, instances: &InstancesSeen) -> StateFile {
    let entries = match instances {
        InstancesSeen::Libvirt { instances } => instances
            .iter()
            .map(|seen| InstanceEntry { id: seen.id.clone(), state: InstanceState::from(seen.state.as_str()) })
            .collect(),
        InstancesSeen::Unavailable { .. } => Vec::new(),
    };
    StateFile::new(node, entries)
}

/// Writes `file` to every storage, concurrently, each bounded by the storage crate's timeout.
pub async fn write_state_files(storage_paths: &[PathBuf], file: &StateFile) -> Vec<StorageWrite> {
    let writes = storage_paths.iter().map(|path| async move {
        let result = aos_storage::state_file::write_state_file(path, file).await;
        StorageWrite {
            path: path.display().to_string(),
            ok: result.is_ok(),
            error: result.err().map(|error| error.to_string()),
        }
    });
    futures::future::join_all(writes).await
}

/// Every fact at once.
pub async fn facts(host: &str, storages: Vec<StorageWrite>) -> NodeFacts {
    NodeFacts {
        host: host.to_owned(),
        time: chrono::Utc::now(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        nova_compute: nova_compute(),
        libvirt: libvirt(),
        instances: instances().await,
        storages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virsh_state_names_become_libvirt_enum_names() {
        assert_eq!(libvirt_state_name("running"), "running");
        assert_eq!(libvirt_state_name("shut off"), "shutoff");
        assert_eq!(libvirt_state_name("in shutdown"), "shutdown");
        assert_eq!(libvirt_state_name("idle"), "blocked");
    }

    #[test]
    fn a_running_program_is_found_by_its_name() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Between fork and exec the child still shows our command line: look again briefly.
        let mut found = find_processes(&["sleep"]);
        for _ in 0..50 {
            if found.pids.contains(&child.id()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            found = find_processes(&["sleep"]);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.running && found.pids.contains(&child.id()), "{found:?}");
        assert!(!find_processes(&["no-such-program-aos"]).running);
    }
}
