//! Running a helper process (ipmitool, an SSH command template) with a hard time limit.
//!
//! The process gets its own process group, so that on timeout the whole group is killed: a
//! template like `ssh host virsh ...` runs under `sh`, and killing only `sh` would leave the
//! `ssh` child holding our output pipe (and the BMC session) open.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// What a finished process left.
#[derive(Debug)]
pub(crate) struct Finished {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub(crate) enum RunError {
    /// The program could not be started (not installed, not executable).
    Spawn(std::io::Error),
    /// Still running at the limit; its group was killed.
    TimedOut { after: Duration },
}

/// Runs `command` (stdin closed, output captured) and waits at most `limit`.
pub(crate) async fn run_with_timeout(mut command: Command, limit: Duration) -> Result<Finished, RunError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
    let started = Instant::now();
    let child = command.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(Finished {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(error)) => Err(RunError::Spawn(error)),
        Err(_elapsed) => {
            // The child itself was killed when its future was dropped (kill_on_drop); its
            // group may still hold children of a shell.
            if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            Err(RunError::TimedOut { after: started.elapsed() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_and_exit_code_are_captured() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let finished = run_with_timeout(command, Duration::from_secs(10)).await.unwrap();
        assert!(!finished.success);
        assert_eq!(finished.code, Some(3));
        assert_eq!(finished.stdout, "out\n");
        assert_eq!(finished.stderr, "err\n");
    }

    #[tokio::test]
    async fn a_process_past_its_limit_is_killed_with_its_children() {
        let marker = tempfile::tempdir().unwrap();
        let pid_file = marker.path().join("grandchild.pid");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("sleep 60 & echo $! > {}; wait", pid_file.display()));
        let error = run_with_timeout(command, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(error, RunError::TimedOut { .. }), "{error:?}");
        let pid = std::fs::read_to_string(&pid_file).expect("the shell started its child before the limit");
        let status = format!("/proc/{}/status", pid.trim());
        // SIGKILL is delivered at once; the orphan is then reaped by init (bounded wait).
        let alive = || {
            std::fs::read_to_string(&status)
                .map(|text| !text.lines().any(|line| line.starts_with("State:") && line.contains('Z')))
                .unwrap_or(false)
        };
        for _ in 0..100 {
            if !alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the child of the timed-out shell (pid {}) survived the group kill", pid.trim());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let command = Command::new("/nonexistent/ipmitool");
        assert!(matches!(run_with_timeout(command, Duration::from_secs(1)).await, Err(RunError::Spawn(_))));
    }
}
