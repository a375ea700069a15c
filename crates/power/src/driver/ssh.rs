//! Command templates, for virtual labs: each operation is a shell command (typically
//! `ssh -p {port} {username}@{address} virsh destroy {outlet}`), run by `sh -c` with the
//! command timeout; `status` prints the state.
//!
//! Placeholders `{name}` `{address}` `{port}` `{username}` `{outlet}` are replaced by
//! shell-quoted values, so a device or outlet name cannot inject a command. The password is
//! never a placeholder (a command line is visible in `ps`): it is in the environment as
//! `AOS_POWER_PASSWORD` and `SSHPASS` (what `sshpass -e` reads).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use super::process::{RunError, run_with_timeout};
use super::{BootDevice, DeviceSpec, PowerDriver, PowerSettings, PowerState};
use crate::error::{PowerError, tail_of};

/// The operations a template can be given for.
const OPERATIONS: [&str; 8] = ["status", "on", "off", "soft_off", "reset", "cycle", "bootdev_pxe", "bootdev_get"];

/// `options` of an `ssh` device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshOptions {
    /// Operation (`status`, `on`, `off`, `soft_off`, `reset`, `cycle`, `bootdev_pxe`,
    /// `bootdev_get`) → command template. `status` is required.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// Words in `status` output meaning on / off (case-insensitive; defaults: `on`,
    /// `running` / `off`, `shut off`, `stopped`). Off is checked first.
    pub on_words: Option<Vec<String>>,
    pub off_words: Option<Vec<String>>,
    /// Overrides `[power] command_timeout` for this device, in seconds.
    pub timeout: Option<u64>,
}

impl SshOptions {
    pub(crate) fn parse(options: &serde_json::Value) -> Result<Self, String> {
        let parsed: SshOptions = super::parse_options(options)?;
        if let Some(unknown) = parsed.commands.keys().find(|key| !OPERATIONS.contains(&key.as_str())) {
            return Err(format!("commands.{unknown}: unknown operation (known: {})", OPERATIONS.join(", ")));
        }
        if !parsed.commands.contains_key("status") {
            return Err("commands.status is required (a command printing the power state)".into());
        }
        if parsed.timeout == Some(0) {
            return Err("timeout is whole seconds >= 1".into());
        }
        Ok(parsed)
    }
}

pub(crate) struct SshDriver {
    describe: String,
    placeholders: Vec<(&'static str, String)>,
    password: Option<String>,
    options: SshOptions,
    timeout: Duration,
}

impl SshDriver {
    pub(crate) fn new(
        spec: &DeviceSpec,
        outlet: &str,
        describe: String,
        options: SshOptions,
        settings: &PowerSettings,
    ) -> Self {
        let placeholders = vec![
            ("{name}", spec.name.clone()),
            ("{address}", spec.address.clone()),
            ("{port}", spec.port_or_default().to_string()),
            ("{username}", spec.username.clone().unwrap_or_default()),
            ("{outlet}", outlet.to_owned()),
        ];
        SshDriver {
            describe,
            placeholders,
            password: spec.password.as_ref().map(|secret| secret.expose().clone()),
            timeout: options.timeout.map(Duration::from_secs).unwrap_or(settings.command_timeout),
            options,
        }
    }

    fn render(&self, template: &str) -> String {
        let mut command = template.to_owned();
        for (placeholder, value) in &self.placeholders {
            command = command.replace(placeholder, &shell_quote(value));
        }
        command
    }

    async fn run(&self, operation: &str) -> Result<String, PowerError> {
        let Some(template) = self.options.commands.get(operation) else {
            return Err(PowerError::Unsupported {
                device: self.describe.clone(),
                operation: operation.into(),
                detail: format!("no command template for {operation} in options.commands"),
            });
        };
        let rendered = self.render(template);
        tracing::debug!(device = %self.describe, operation, command = %rendered, "power command template");
        let mut command = Command::new("sh");
        command.arg("-c").arg(&rendered).env("LC_ALL", "C");
        if let Some(password) = &self.password {
            command.env("AOS_POWER_PASSWORD", password).env("SSHPASS", password);
        }
        let finished = match run_with_timeout(command, self.timeout).await {
            Ok(finished) => finished,
            Err(RunError::TimedOut { after }) => {
                return Err(PowerError::TimedOut {
                    device: self.describe.clone(),
                    operation: operation.into(),
                    after,
                    detail: "the command did not finish and was killed".into(),
                });
            }
            Err(RunError::Spawn(error)) => {
                return Err(PowerError::Protocol {
                    device: self.describe.clone(),
                    detail: format!("cannot run sh: {error}"),
                });
            }
        };
        if finished.success {
            return Ok(finished.stdout);
        }
        Err(classify_failure(&self.describe, operation, finished.code, &finished.stderr, &finished.stdout))
    }
}

/// Maps a failed template (ssh's messages in particular) to the error kinds.
fn classify_failure(device: &str, operation: &str, code: Option<i32>, stderr: &str, stdout: &str) -> PowerError {
    let text = stderr.to_ascii_lowercase();
    let output = if stderr.trim().is_empty() { stdout } else { stderr };
    let detail = format!("exit code {}: {}", code.map_or("none".into(), |c| c.to_string()), tail_of(output, 300));
    let device = device.to_owned();
    if text.contains("permission denied")
        || text.contains("authentication failed")
        || text.contains("host key verification failed")
    {
        PowerError::AuthFailed { device, detail }
    } else if text.contains("connection refused")
        || text.contains("connection timed out")
        || text.contains("no route to host")
        || text.contains("could not resolve")
        || text.contains("network is unreachable")
        || code == Some(255) && text.contains("ssh:")
    {
        PowerError::Unreachable { device, detail }
    } else if code == Some(127) {
        PowerError::Protocol { device, detail: format!("command not found ({detail})") }
    } else {
        PowerError::Rejected { device, operation: operation.into(), detail }
    }
}

/// `'value'`, with embedded single quotes closed, escaped and reopened.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn words(text: &str) -> Vec<String> {
    text.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `phrase` (one or more words) occurs in `words` as whole words.
fn has_phrase(words: &[String], phrase: &str) -> bool {
    let phrase = self::words(phrase);
    !phrase.is_empty() && words.windows(phrase.len()).any(|window| window == phrase.as_slice())
}

fn parse_status(options: &SshOptions, describe: &str, stdout: &str) -> Result<PowerState, PowerError> {
    let default_off = ["off", "shut off", "stopped"].map(str::to_owned).to_vec();
    let default_on = ["on", "running"].map(str::to_owned).to_vec();
    let output = words(stdout);
    if options.off_words.as_ref().unwrap_or(&default_off).iter().any(|phrase| has_phrase(&output, phrase)) {
        return Ok(PowerState::Off);
    }
    if options.on_words.as_ref().unwrap_or(&default_on).iter().any(|phrase| has_phrase(&output, phrase)) {
        return Ok(PowerState::On);
    }
    Err(PowerError::Protocol {
        device: describe.to_owned(),
        detail: format!("cannot tell the power state from the status output: {}", tail_of(stdout, 200)),
    })
}

#[async_trait::async_trait]
impl PowerDriver for SshDriver {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let stdout = self.run("status").await?;
        parse_status(&self.options, &self.describe, &stdout)
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.run("on").await.map(|_| ())
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        self.run("off").await.map(|_| ())
    }

    async fn soft_off(&self) -> Result<(), PowerError> {
        self.run("soft_off").await.map(|_| ())
    }

    async fn reset(&self) -> Result<(), PowerError> {
        self.run("reset").await.map(|_| ())
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.run("cycle").await.map(|_| ())
    }

    async fn set_boot_device(&self, device: BootDevice) -> Result<(), PowerError> {
        if device != BootDevice::Pxe {
            return Err(PowerError::Unsupported {
                device: self.describe.clone(),
                operation: format!("boot device {device}"),
                detail: "command templates set only pxe".into(),
            });
        }
        self.run("bootdev_pxe").await.map(|_| ())
    }

    async fn boot_device(&self) -> Result<BootDevice, PowerError> {
        let stdout = self.run("bootdev_get").await?;
        let output = words(&stdout);
        Ok(if has_phrase(&output, "pxe") || has_phrase(&output, "network") {
            BootDevice::Pxe
        } else if has_phrase(&output, "hd") || has_phrase(&output, "disk") {
            BootDevice::Disk
        } else {
            BootDevice::Other(tail_of(&stdout, 60))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_shell_quoted() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("x'; rm -rf /; '"), r"'x'\''; rm -rf /; '\'''");
    }

    #[test]
    fn status_output_is_read_as_whole_words_off_first() {
        let options = SshOptions::default();
        let state = |text: &str| parse_status(&options, "lab", text);
        assert_eq!(state("running\n").unwrap(), PowerState::On);
        assert_eq!(state("shut off\n").unwrap(), PowerState::Off);
        assert_eq!(state("Chassis Power is off").unwrap(), PowerState::Off);
        assert_eq!(state("Chassis Power is on").unwrap(), PowerState::On);
        assert!(state("offline-ish? no: 'online'").is_err(), "online/offline are not on/off");
        let custom = SshOptions {
            on_words: Some(vec!["up".into()]),
            off_words: Some(vec!["down".into()]),
            ..SshOptions::default()
        };
        assert_eq!(parse_status(&custom, "lab", "link is up").unwrap(), PowerState::On);
    }

    #[test]
    fn options_need_a_status_template_and_known_operations() {
        assert!(SshOptions::parse(&serde_json::json!({"commands": {"on": "true"}})).is_err());
        assert!(SshOptions::parse(&serde_json::json!({"commands": {"status": "echo on", "boot": "x"}})).is_err());
        assert!(SshOptions::parse(&serde_json::json!({"commands": {"status": "echo on"}})).is_ok());
    }

    #[test]
    fn failures_are_classified_from_ssh_messages() {
        let kind = |code, stderr: &str| classify_failure("lab", "off", Some(code), stderr, "").kind();
        use crate::error::PowerErrorKind as K;
        assert_eq!(kind(255, "admin@10.0.0.1: Permission denied (publickey,password).\n"), K::AuthFailed);
        assert_eq!(kind(255, "ssh: connect to host 127.0.0.1 port 2222: Connection refused\n"), K::Unreachable);
        assert_eq!(kind(1, "error: failed to get domain 'vm9'\n"), K::Rejected);
        assert_eq!(kind(127, "sh: 1: virsh: not found\n"), K::Protocol);
    }
}
