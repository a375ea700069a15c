//! Power actions with their verification, the same for every driver.
//!
//! A device that accepted a command has not necessarily done it: Redfish answers 204 before
//! the state changes, ipmitool's `chassis bootdev` exits 0 on refusal, a BMC may drop a
//! request. So every action reads the state (or boot device) back and polls until it shows
//! what was asked, up to `verify_timeout`. Actions are idempotent on our side: powering off a
//! host that is off sends nothing and succeeds once "off" has been read.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::driver::{BootDevice, PowerDriver, PowerSettings, PowerState};
use crate::error::{PowerError, PowerErrorKind};

/// What can be asked of a node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Read the power state.
    Status,
    On,
    /// Hard power off.
    Off,
    /// Ask the operating system to shut down; waits until off.
    SoftOff,
    /// Hard reset (powers on a host that is off).
    Reset,
    /// Off, then on (powers on a host that is off).
    Cycle,
    /// Next boot from the network, verified by reading the boot device back.
    BootdevPxe,
}

impl PowerAction {
    pub const ALL: [PowerAction; 7] = [
        PowerAction::Status,
        PowerAction::On,
        PowerAction::Off,
        PowerAction::SoftOff,
        PowerAction::Reset,
        PowerAction::Cycle,
        PowerAction::BootdevPxe,
    ];

    /// The name stored in `power_operations.operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Status => "status",
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft_off",
            PowerAction::Reset => "reset",
            PowerAction::Cycle => "cycle",
            PowerAction::BootdevPxe => "bootdev_pxe",
        }
    }

    /// Whether the action changes anything (a status read does not).
    pub fn changes_state(self) -> bool {
        self != PowerAction::Status
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for PowerAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let normal = text.replace('-', "_").to_ascii_lowercase();
        PowerAction::ALL
            .into_iter()
            .find(|action| action.as_str() == normal)
            .ok_or_else(|| format!("unknown power operation {text:?}"))
    }
}

/// What an action left, as read back from the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// The power state read last.
    pub state: PowerState,
    /// The boot device read back (for `BootdevPxe` only).
    pub boot_device: Option<BootDevice>,
    /// Whether a command was sent (false: the host already was as asked).
    pub command_sent: bool,
}

/// Performs `action` through `driver` and verifies it (see the module docs).
pub async fn perform(
    driver: &dyn PowerDriver,
    action: PowerAction,
    settings: &PowerSettings,
) -> Result<ActionOutcome, PowerError> {
    let outcome = |state, command_sent| ActionOutcome { state, boot_device: None, command_sent };
    match action {
        PowerAction::Status => Ok(outcome(bounded(driver, "status", settings, driver.power_state()).await?, false)),
        PowerAction::On => {
            if bounded(driver, "on", settings, driver.power_state()).await? == PowerState::On {
                return Ok(outcome(PowerState::On, false));
            }
            bounded(driver, "on", settings, driver.power_on()).await?;
            Ok(outcome(wait_for(driver, "on", PowerState::On, settings).await?, true))
        }
        PowerAction::Off | PowerAction::SoftOff => {
            let name = action.as_str();
            if bounded(driver, name, settings, driver.power_state()).await? == PowerState::Off {
                return Ok(outcome(PowerState::Off, false));
            }
            if action == PowerAction::Off {
                bounded(driver, name, settings, driver.power_off()).await?;
            } else {
                bounded(driver, name, settings, driver.soft_off()).await?;
            }
            Ok(outcome(wait_for(driver, name, PowerState::Off, settings).await?, true))
        }
        PowerAction::Reset | PowerAction::Cycle => {
            let name = action.as_str();
            if bounded(driver, name, settings, driver.power_state()).await? == PowerState::Off {
                // Resetting or cycling a host that is off means: make it run.
                bounded(driver, name, settings, driver.power_on()).await?;
                return Ok(outcome(wait_for(driver, name, PowerState::On, settings).await?, true));
            }
            if action == PowerAction::Reset {
                bounded(driver, name, settings, driver.reset()).await?;
            } else {
                match bounded(driver, name, settings, driver.power_cycle()).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == PowerErrorKind::Unsupported => {
                        tracing::debug!(device = driver.describe(), "no power cycle command: off, verify off, on");
                        bounded(driver, name, settings, driver.power_off()).await?;
                        wait_for(driver, name, PowerState::Off, settings).await?;
                        bounded(driver, name, settings, driver.power_on()).await?;
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(outcome(wait_for(driver, name, PowerState::On, settings).await?, true))
        }
        PowerAction::BootdevPxe => {
            let name = action.as_str();
            bounded(driver, name, settings, driver.set_boot_device(BootDevice::Pxe)).await?;
            let boot = bounded(driver, name, settings, driver.boot_device()).await?;
            if boot != BootDevice::Pxe {
                return Err(PowerError::Rejected {
                    device: driver.describe().to_owned(),
                    operation: name.into(),
                    detail: format!("the device accepted the request but reads back boot device {boot}"),
                });
            }
            let state = bounded(driver, name, settings, driver.power_state()).await?;
            Ok(ActionOutcome { state, boot_device: Some(boot), command_sent: true })
        }
    }
}

/// One driver call, bounded by the command timeout (plus a little, so the driver's own
/// limit, with its better message, fires first). Drivers added later cannot hang an action.
async fn bounded<T>(
    driver: &dyn PowerDriver,
    operation: &str,
    settings: &PowerSettings,
    call: impl Future<Output = Result<T, PowerError>>,
) -> Result<T, PowerError> {
    let limit = settings.command_timeout + Duration::from_secs(2);
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(PowerError::TimedOut {
            device: driver.describe().to_owned(),
            operation: operation.into(),
            after: limit,
            detail: "the driver call did not return".into(),
        }),
    }
}

/// Polls the power state until it is `expected`, up to `verify_timeout`. A read that fails
/// meanwhile (a BMC busy with the change) is retried; the last failure is reported if the
/// deadline passes without the state.
async fn wait_for(
    driver: &dyn PowerDriver,
    operation: &str,
    expected: PowerState,
    settings: &PowerSettings,
) -> Result<PowerState, PowerError> {
    let started = Instant::now();
    let deadline = started + settings.verify_timeout;
    let mut last_seen: String;
    loop {
        match bounded(driver, operation, settings, driver.power_state()).await {
            Ok(state) if state == expected => return Ok(state),
            Ok(state) => last_seen = format!("power state still {state}"),
            Err(error) if error.kind() == PowerErrorKind::AuthFailed => return Err(error),
            Err(error) => last_seen = format!("last read failed: {error}"),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(PowerError::TimedOut {
                device: driver.describe().to_owned(),
                operation: operation.into(),
                after: now - started,
                detail: format!("waiting for power {expected}: {last_seen}"),
            });
        }
        tokio::time::sleep(settings.poll_interval.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A device in memory: records the commands, changes state after `lag` reads.
    struct Scripted {
        state: Mutex<(PowerState, Option<(PowerState, u32)>)>,
        commands: Mutex<Vec<&'static str>>,
        cycle_supported: bool,
        boot_sticks: bool,
        boot: Mutex<BootDevice>,
        lag: u32,
    }

    impl Scripted {
        fn new(state: PowerState, lag: u32) -> Self {
            Scripted {
                state: Mutex::new((state, None)),
                commands: Mutex::new(Vec::new()),
                cycle_supported: false,
                boot_sticks: true,
                boot: Mutex::new(BootDevice::None),
                lag,
            }
        }

        fn command(&self, name: &'static str, target: Option<PowerState>) {
            self.commands.lock().unwrap().push(name);
            if let Some(target) = target {
                self.state.lock().unwrap().1 = Some((target, self.lag));
            }
        }

        fn commands(&self) -> Vec<&'static str> {
            self.commands.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl PowerDriver for Scripted {
        fn describe(&self) -> &str {
            "scripted"
        }
        async fn power_state(&self) -> Result<PowerState, PowerError> {
            let mut state = self.state.lock().unwrap();
            if let Some((target, reads_left)) = state.1 {
                if reads_left == 0 {
                    *state = (target, None);
                } else {
                    state.1 = Some((target, reads_left - 1));
                }
            }
            Ok(state.0)
        }
        async fn power_on(&self) -> Result<(), PowerError> {
            self.command("on", Some(PowerState::On));
            Ok(())
        }
        async fn power_off(&self) -> Result<(), PowerError> {
            self.command("off", Some(PowerState::Off));
            Ok(())
        }
        async fn soft_off(&self) -> Result<(), PowerError> {
            self.command("soft", None);
            Ok(())
        }
        async fn reset(&self) -> Result<(), PowerError> {
            self.command("reset", Some(PowerState::On));
            Ok(())
        }
        async fn power_cycle(&self) -> Result<(), PowerError> {
            if self.cycle_supported {
                self.command("cycle", Some(PowerState::On));
                Ok(())
            } else {
                Err(PowerError::Unsupported {
                    device: "scripted".into(),
                    operation: "cycle".into(),
                    detail: "no".into(),
                })
            }
        }
        async fn set_boot_device(&self, device: BootDevice) -> Result<(), PowerError> {
            self.command("bootdev", None);
            if self.boot_sticks {
                *self.boot.lock().unwrap() = device;
            }
            Ok(())
        }
        async fn boot_device(&self) -> Result<BootDevice, PowerError> {
            Ok(self.boot.lock().unwrap().clone())
        }
    }

    fn settings() -> PowerSettings {
        PowerSettings {
            command_timeout: Duration::from_secs(5),
            ipmi_retries: 0,
            ipmi_retry_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
            verify_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn off_waits_until_the_state_shows_off() {
        let device = Scripted::new(PowerState::On, 3);
        let outcome = perform(&device, PowerAction::Off, &settings()).await.unwrap();
        assert_eq!(outcome, ActionOutcome { state: PowerState::Off, boot_device: None, command_sent: true });
        assert_eq!(device.commands(), ["off"]);
    }

    #[tokio::test]
    async fn off_of_a_host_already_off_sends_nothing() {
        let device = Scripted::new(PowerState::Off, 0);
        let outcome = perform(&device, PowerAction::Off, &settings()).await.unwrap();
        assert!(!outcome.command_sent);
        assert!(device.commands().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_soft_off_the_host_ignores_times_out_naming_the_state() {
        let device = Scripted::new(PowerState::On, 0);
        let error = perform(&device, PowerAction::SoftOff, &settings()).await.unwrap_err();
        assert_eq!(error.kind(), PowerErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("power state still on"), "{error}");
    }

    #[tokio::test]
    async fn cycle_without_a_cycle_command_is_off_then_on() {
        let device = Scripted::new(PowerState::On, 1);
        let outcome = perform(&device, PowerAction::Cycle, &settings()).await.unwrap();
        assert_eq!(outcome.state, PowerState::On);
        assert_eq!(device.commands(), ["off", "on"]);
    }

    #[tokio::test]
    async fn reset_or_cycle_of_a_host_that_is_off_powers_it_on() {
        for action in [PowerAction::Reset, PowerAction::Cycle] {
            let device = Scripted::new(PowerState::Off, 0);
            assert_eq!(perform(&device, action, &settings()).await.unwrap().state, PowerState::On);
            assert_eq!(device.commands(), ["on"]);
        }
    }

    #[tokio::test]
    async fn a_boot_device_that_does_not_read_back_is_rejected() {
        let mut device = Scripted::new(PowerState::On, 0);
        device.boot_sticks = false;
        let error = perform(&device, PowerAction::BootdevPxe, &settings()).await.unwrap_err();
        assert_eq!(error.kind(), PowerErrorKind::Rejected, "{error}");
        device.boot_sticks = true;
        let outcome = perform(&device, PowerAction::BootdevPxe, &settings()).await.unwrap();
        assert_eq!(outcome.boot_device, Some(BootDevice::Pxe));
    }

    #[test]
    fn action_names_parse_with_dashes_or_underscores() {
        assert_eq!("soft-off".parse::<PowerAction>(), Ok(PowerAction::SoftOff));
        assert_eq!("bootdev_pxe".parse::<PowerAction>(), Ok(PowerAction::BootdevPxe));
        assert!("explode".parse::<PowerAction>().is_err());
    }
}
