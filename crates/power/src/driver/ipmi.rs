//! IPMI v2.0 (RMCP+) through `ipmitool -I lanplus`, as OpenStack Ironic does it.
//!
//! - The password goes through the `IPMI_PASSWORD` environment variable (`-E`), never argv
//!   (argv is readable by every local user in `ps`).
//! - `-N`/`-R` bound ipmitool's own retransmissions; the whole run is bounded by the command
//!   timeout and killed after it. Retransmissions are kept few on purpose: some BMCs execute a
//!   retransmitted request again (a reset twice).
//! - ipmitool runs with `-v` so that its stderr says *where* a session failed: no answer to
//!   "Get Channel Authentication Capabilities" (unreachable) versus a bad RAKP 2 HMAC (wrong
//!   password). Without `-v` both print only "Unable to establish IPMI v2 / RMCP+ session".
//! - `chassis bootdev` exits 0 even when the BMC refuses it: its stderr is checked for
//!   "failed", and the operation layer reads the boot flags back (`chassis bootparam get 5`).

use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use super::process::{RunError, run_with_timeout};
use super::{BootDevice, DeviceSpec, PowerDriver, PowerSettings, PowerState};
use crate::error::{PowerError, tail_of};

/// `options` of an `ipmi` device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpmiOptions {
    /// `-C`: the RMCP+ cipher suite; unset lets ipmitool ask the BMC (which some BMCs, e.g.
    /// OpenIPMI's simulator, cannot answer: then every call waits ~10 s before falling back).
    pub cipher_suite: Option<u8>,
    /// `-L`: ADMINISTRATOR (ipmitool's default), OPERATOR or USER.
    pub privilege_level: Option<String>,
    /// Overrides `[power] command_timeout` for this device, in seconds.
    pub timeout: Option<u64>,
    /// Overrides `[power] ipmi_retries`.
    pub retries: Option<u32>,
    /// Overrides `[power] ipmi_retry_timeout`, in seconds.
    pub retry_timeout: Option<u64>,
}

impl IpmiOptions {
    pub(crate) fn parse(options: &serde_json::Value) -> Result<Self, String> {
        let parsed: IpmiOptions = super::parse_options(options)?;
        if let Some(level) = &parsed.privilege_level
            && !["ADMINISTRATOR", "OPERATOR", "USER"].contains(&level.to_ascii_uppercase().as_str())
        {
            return Err(format!("privilege_level {level:?}: expected ADMINISTRATOR, OPERATOR or USER"));
        }
        if parsed.cipher_suite.is_some_and(|suite| suite > 17) {
            return Err("cipher_suite: IPMI cipher suites are 0..=17".into());
        }
        if parsed.timeout == Some(0) || parsed.retry_timeout == Some(0) {
            return Err("timeout and retry_timeout are whole seconds >= 1".into());
        }
        Ok(parsed)
    }
}

pub(crate) struct IpmiDriver {
    describe: String,
    address: String,
    port: u16,
    username: String,
    password: String,
    options: IpmiOptions,
    timeout: Duration,
    retries: u32,
    retry_timeout: Duration,
}

impl IpmiDriver {
    pub(crate) fn new(spec: &DeviceSpec, describe: String, options: IpmiOptions, settings: &PowerSettings) -> Self {
        IpmiDriver {
            describe,
            address: spec.address.clone(),
            port: spec.port_or_default(),
            username: spec.username.clone().unwrap_or_default(),
            password: spec.password.as_ref().map(|secret| secret.expose().clone()).unwrap_or_default(),
            timeout: options.timeout.map(Duration::from_secs).unwrap_or(settings.command_timeout),
            retries: options.retries.unwrap_or(settings.ipmi_retries),
            retry_timeout: options.retry_timeout.map(Duration::from_secs).unwrap_or(settings.ipmi_retry_timeout),
            options,
        }
    }

    /// The ipmitool command line, without the password (it is in the environment).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ipmitool");
        command
            .arg("-v")
            .args(["-I", "lanplus", "-H", &self.address, "-p", &self.port.to_string(), "-U", &self.username, "-E"])
            .args(["-N", &self.retry_timeout.as_secs().max(1).to_string(), "-R", &self.retries.to_string()]);
        if let Some(suite) = self.options.cipher_suite {
            command.args(["-C", &suite.to_string()]);
        }
        if let Some(level) = &self.options.privilege_level {
            command.args(["-L", &level.to_ascii_uppercase()]);
        }
        command.args(args).env("IPMI_PASSWORD", &self.password).env("LC_ALL", "C");
        command
    }

    /// Runs one ipmitool command; Ok(stdout) only when it succeeded by its exit code *and*
    /// its messages (see the module docs).
    async fn run(&self, operation: &str, args: &[&str]) -> Result<String, PowerError> {
        tracing::debug!(device = %self.describe, operation, "ipmitool {}", args.join(" "));
        let finished = match run_with_timeout(self.command(args), self.timeout).await {
            Ok(finished) => finished,
            Err(RunError::TimedOut { after }) => {
                return Err(PowerError::TimedOut {
                    device: self.describe.clone(),
                    operation: operation.into(),
                    after,
                    detail: "ipmitool did not finish and was killed".into(),
                });
            }
            Err(RunError::Spawn(error)) => {
                let detail = if error.kind() == std::io::ErrorKind::NotFound {
                    "ipmitool is not installed (apt-get install ipmitool)".to_owned()
                } else {
                    format!("cannot run ipmitool: {error}")
                };
                return Err(PowerError::Protocol { device: self.describe.clone(), detail });
            }
        };
        let refused = refusal_line(&finished.stderr);
        if finished.success && refused.is_none() {
            return Ok(finished.stdout);
        }
        Err(classify_failure(&self.describe, operation, &finished.stderr, refused))
    }

    async fn chassis_power(&self, operation: &str, verb: &str) -> Result<(), PowerError> {
        self.run(operation, &["chassis", "power", verb]).await.map(|_| ())
    }
}

/// A line of ipmitool's stderr saying the BMC refused a request ("Set Chassis Power Control
/// to Down/Off failed: Unspecified error"), which `chassis bootdev` prints with exit code 0.
fn refusal_line(stderr: &str) -> Option<&str> {
    stderr.lines().map(str::trim).find(|line| line.contains(" failed:") || line.ends_with(" failed"))
}

/// Maps ipmitool's messages to the error kinds. Order matters: an authentication failure
/// also ends with "Unable to establish IPMI v2 / RMCP+ session".
fn classify_failure(device: &str, operation: &str, stderr: &str, refused: Option<&str>) -> PowerError {
    let text = stderr.to_ascii_lowercase();
    let device = device.to_owned();
    let detail = tail_of(&meaningful_lines(stderr), 300);
    if text.contains("rakp 2 hmac is invalid")
        || text.contains("unauthorized name")
        || text.contains("invalid user name")
        || text.contains("rakp 2 message indicates an error")
    {
        return PowerError::AuthFailed { device, detail: format!("wrong user name or password ({detail})") };
    }
    if text.contains("no response from rakp 1 message") {
        // The BMC answered the session opening, then went silent when the user was named:
        // what BMCs do for an unknown user.
        return PowerError::AuthFailed {
            device,
            detail: format!("the BMC ignored the login: unknown user name? ({detail})"),
        };
    }
    if text.contains("is not what we requested")
        || text.contains("unsupported cipher")
        || text.contains("cipher suite") && text.contains("not supported")
    {
        return PowerError::Unsupported {
            device,
            operation: "the configured cipher suite".into(),
            detail: format!("set options.cipher_suite to one the BMC offers ({detail})"),
        };
    }
    if text.contains("insufficient privilege")
        || text.contains("privilege level") && text.contains("failed") && refused.is_none()
    {
        return PowerError::AuthFailed { device, detail: format!("insufficient privilege ({detail})") };
    }
    if text.contains("get auth capabilities error")
        || text.contains("error issuing get channel authentication capabilities")
        || text.contains("unable to establish")
        || text.contains("no response")
        || text.contains("connection refused")
        || text.contains("address lookup")
        || text.contains("no route to host")
    {
        return PowerError::Unreachable { device, detail: format!("no IPMI answer ({detail})") };
    }
    if let Some(line) = refused {
        let lower = line.to_ascii_lowercase();
        if lower.contains("invalid command")
            || lower.contains("command not supported") && !lower.contains("present state")
        {
            return PowerError::Unsupported { device, operation: operation.into(), detail: line.to_owned() };
        }
        return PowerError::Rejected { device, operation: operation.into(), detail: line.to_owned() };
    }
    PowerError::Protocol { device, detail: format!("ipmitool failed: {detail}") }
}

/// stderr without `-v`'s chatter, for messages.
fn meaningful_lines(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Loading IANA")
                && !line.starts_with("Using best available cipher")
                && !line.starts_with("Running Get VSO")
                && !line.starts_with("Discovered IPMB")
                && !line.starts_with("Invalid completion code received: Invalid command")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Chassis Power is on|off`.
fn parse_power_status(describe: &str, stdout: &str) -> Result<PowerState, PowerError> {
    let text = stdout.to_ascii_lowercase();
    if text.contains("power is on") {
        Ok(PowerState::On)
    } else if text.contains("power is off") {
        Ok(PowerState::Off)
    } else {
        Err(PowerError::Protocol {
            device: describe.to_owned(),
            detail: format!("unexpected `power status` output: {}", tail_of(stdout, 200)),
        })
    }
}

/// The "Boot Device Selector" of `chassis bootparam get 5`.
fn parse_boot_flags(describe: &str, stdout: &str) -> Result<BootDevice, PowerError> {
    let selector = stdout
        .lines()
        .find_map(|line| line.trim().trim_start_matches("- ").strip_prefix("Boot Device Selector :"))
        .map(str::trim);
    match selector {
        Some(selector) => {
            let lower = selector.to_ascii_lowercase();
            Ok(if lower.contains("pxe") {
                BootDevice::Pxe
            } else if lower.contains("no override") {
                BootDevice::None
            } else if lower.contains("hard-drive") || lower.contains("hard drive") || lower.contains("disk") {
                BootDevice::Disk
            } else {
                BootDevice::Other(selector.to_owned())
            })
        }
        None => Err(PowerError::Protocol {
            device: describe.to_owned(),
            detail: format!("no Boot Device Selector in `chassis bootparam get 5`: {}", tail_of(stdout, 200)),
        }),
    }
}

#[async_trait::async_trait]
impl PowerDriver for IpmiDriver {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let stdout = self.run("status", &["chassis", "power", "status"]).await?;
        parse_power_status(&self.describe, &stdout)
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.chassis_power("on", "on").await
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        self.chassis_power("off", "off").await
    }

    async fn soft_off(&self) -> Result<(), PowerError> {
        self.chassis_power("soft_off", "soft").await
    }

    async fn reset(&self) -> Result<(), PowerError> {
        self.chassis_power("reset", "reset").await
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.chassis_power("cycle", "cycle").await
    }

    async fn set_boot_device(&self, device: BootDevice) -> Result<(), PowerError> {
        let name = match &device {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::None => "none",
            BootDevice::Other(other) => other.as_str(),
        };
        self.run("bootdev_pxe", &["chassis", "bootdev", name]).await.map(|_| ())
    }

    async fn boot_device(&self) -> Result<BootDevice, PowerError> {
        let stdout = self.run("bootdev_get", &["chassis", "bootparam", "get", "5"]).await?;
        parse_boot_flags(&self.describe, &stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PowerErrorKind;

    // stderr texts as ipmitool 1.8.19 -v prints them against bmc-sim (captured by hand).
    const WRONG_PASSWORD: &str = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const UNKNOWN_USER: &str = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\n> Error: no response from RAKP 1 message\nSet Session Privilege Level to ADMINISTRATOR failed\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const NO_ANSWER: &str = "Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const REFUSED: &str = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\nSet Chassis Power Control to Down/Off failed: Unspecified error\n";
    const BOOTDEV_REFUSED: &str = "Set Chassis Boot Parameter 5 failed: Unspecified error\n";
    const CIPHER: &str = "Authentication algorithm 0x01 is not what we requested 0x03\n\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const SUCCESS_CHATTER: &str = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\nRunning Get VSO Capabilities my_addr 0x20, transit 0, target 0x20\nInvalid completion code received: Invalid command\nDiscovered IPMB address 0x0\n";

    fn kind(stderr: &str) -> PowerErrorKind {
        classify_failure("bmc", "off", stderr, refusal_line(stderr)).kind()
    }

    #[test]
    fn ipmitool_messages_map_to_distinct_error_kinds() {
        assert_eq!(kind(WRONG_PASSWORD), PowerErrorKind::AuthFailed);
        assert_eq!(kind(UNKNOWN_USER), PowerErrorKind::AuthFailed);
        assert_eq!(kind(NO_ANSWER), PowerErrorKind::Unreachable);
        assert_eq!(kind(REFUSED), PowerErrorKind::Rejected);
        assert_eq!(kind(BOOTDEV_REFUSED), PowerErrorKind::Rejected);
        assert_eq!(kind(CIPHER), PowerErrorKind::Unsupported);
        let not_in_state = "Set Chassis Power Control to Cycle failed: Command not supported in present state\n";
        assert_eq!(kind(not_in_state), PowerErrorKind::Rejected);
    }

    #[test]
    fn verbose_chatter_of_a_successful_run_is_not_a_refusal() {
        assert_eq!(refusal_line(SUCCESS_CHATTER), None);
        assert_eq!(refusal_line(BOOTDEV_REFUSED), Some("Set Chassis Boot Parameter 5 failed: Unspecified error"));
    }

    #[test]
    fn power_status_and_boot_flags_parse() {
        assert_eq!(parse_power_status("bmc", "Chassis Power is on\n").unwrap(), PowerState::On);
        assert_eq!(parse_power_status("bmc", "Chassis Power is off\n").unwrap(), PowerState::Off);
        assert!(parse_power_status("bmc", "garbage").is_err());
        let pxe = "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\nBoot parameter data: 8004000000\n Boot Flags :\n   - Boot Flag Valid\n   - Options apply to only next boot\n   - Boot Device Selector : Force PXE\n";
        assert_eq!(parse_boot_flags("bmc", pxe).unwrap(), BootDevice::Pxe);
        let none = pxe.replace("Force PXE", "No override");
        assert_eq!(parse_boot_flags("bmc", &none).unwrap(), BootDevice::None);
        let disk = pxe.replace("Force PXE", "Force Boot from default Hard-Drive");
        assert_eq!(parse_boot_flags("bmc", &disk).unwrap(), BootDevice::Disk);
        assert!(parse_boot_flags("bmc", "Boot parameter version: 1\n").is_err());
    }

    #[test]
    fn the_command_line_never_holds_the_password() {
        let spec = DeviceSpec {
            name: "bmc".into(),
            driver: super::super::DriverKind::Ipmi,
            address: "127.0.0.1".into(),
            port: Some(9101),
            username: Some("admin".into()),
            password: Some(aos_config::Secret::new("Pa55-word".into())),
            options: serde_json::json!({"cipher_suite": 3}),
        };
        let options = IpmiOptions::parse(&spec.options).unwrap();
        let driver = IpmiDriver::new(&spec, spec.describe(""), options, &PowerSettings::default());
        let command = driver.command(&["chassis", "power", "status"]);
        let argv: Vec<String> = command.as_std().get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
        assert!(!argv.iter().any(|arg| arg.contains("Pa55-word")), "{argv:?}");
        assert!(argv.windows(2).any(|pair| pair == ["-C", "3"]), "{argv:?}");
        assert!(argv.contains(&"-E".to_owned()));
        let env: Vec<_> = command.as_std().get_envs().collect();
        assert!(env.iter().any(|(key, value)| *key == "IPMI_PASSWORD" && value.is_some_and(|v| v == "Pa55-word")));
    }
}
