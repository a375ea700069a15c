//! The driver interface: what every kind of power device can be asked, and how a device's
//! stored description becomes a driver.
//!
//! A driver is built for one *target*: a device plus an outlet (a BMC has one target, the
//! outlet is empty; a PDU or a Redfish manager of several systems has many). Drivers only
//! issue commands and read state; waiting for a state to show, idempotence and the fallbacks
//! (a power cycle done as off + on) live once, in [`crate::operation`], for every driver.
//!
//! Adding a protocol (SNMP PDU, Modbus relay, Intel AMT) means: a variant of [`DriverKind`],
//! an options struct validated in [`validate_options`], a type implementing [`PowerDriver`]
//! and one arm in [`connect_driver`]. The trait is dyn-compatible (`Box<dyn PowerDriver>`),
//! through `async_trait`, so the operation layer never knows which protocol it drives.

pub(crate) mod ipmi;
pub(crate) mod process;
pub(crate) mod redfish;
pub(crate) mod ssh;

use std::fmt;
use std::time::Duration;

use aos_config::Secret;
use serde::{Deserialize, Serialize};

use crate::error::PowerError;

/// The protocols a power device can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// IPMI v2.0 over LAN (RMCP+), through `ipmitool -I lanplus`.
    Ipmi,
    /// DMTF Redfish over HTTPS (or HTTP for emulators).
    Redfish,
    /// Command templates run by `sh` (usually `ssh ... virsh ...`), for virtual labs.
    Ssh,
}

impl DriverKind {
    pub const ALL: [DriverKind; 3] = [DriverKind::Ipmi, DriverKind::Redfish, DriverKind::Ssh];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Ipmi => "ipmi",
            DriverKind::Redfish => "redfish",
            DriverKind::Ssh => "ssh",
        }
    }

    /// The port used when a device has none.
    pub fn default_port(self) -> u16 {
        match self {
            DriverKind::Ipmi => 623,
            DriverKind::Redfish => 443,
            DriverKind::Ssh => 22,
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for DriverKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "ipmi" => Ok(DriverKind::Ipmi),
            "redfish" => Ok(DriverKind::Redfish),
            "ssh" => Ok(DriverKind::Ssh),
            "snmp" | "modbus" | "amt" => {
                Err(format!("the {text} driver is not implemented yet (implemented: ipmi, redfish, ssh)"))
            }
            _ => Err(format!("unknown power driver {text:?} (implemented: ipmi, redfish, ssh)")),
        }
    }
}

/// The power state a device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
    /// Anything else: a transition in progress (Redfish `PoweringOn`), a state the device
    /// cannot tell. Never mistaken for off.
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The boot device override a device reports (for the next boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// The local disk.
    Disk,
    /// No override: the firmware's own order.
    None,
    /// Something else (CD, BIOS setup, ...), as the device names it.
    Other(String),
}

impl fmt::Display for BootDevice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootDevice::Pxe => formatter.write_str("pxe"),
            BootDevice::Disk => formatter.write_str("disk"),
            BootDevice::None => formatter.write_str("none"),
            BootDevice::Other(name) => formatter.write_str(name),
        }
    }
}

/// One device as a driver needs it: the stored row with its credential decrypted.
/// `Debug` is safe to log: the password is a [`Secret`].
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    pub driver: DriverKind,
    pub address: String,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Driver-specific options, already checked by [`validate_options`] when stored.
    pub options: serde_json::Value,
}

impl DeviceSpec {
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or_else(|| self.driver.default_port())
    }

    /// How errors and logs name the device: `name (driver address:port)`.
    pub fn describe(&self, outlet: &str) -> String {
        let outlet = if outlet.is_empty() { String::new() } else { format!(" outlet {outlet}") };
        format!("{} ({} {}:{}{outlet})", self.name, self.driver, self.address, self.port_or_default())
    }
}

/// Time limits and retries shared by every driver (`[power]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerSettings {
    /// Overall limit of one device call (process killed, request abandoned after it).
    pub command_timeout: Duration,
    /// ipmitool `-R`: retransmissions of an unanswered request.
    pub ipmi_retries: u32,
    /// ipmitool `-N`: seconds before a retransmission.
    pub ipmi_retry_timeout: Duration,
    /// Pause between two state reads while waiting for an action to show.
    pub poll_interval: Duration,
    /// How long to wait for the expected state after an action.
    pub verify_timeout: Duration,
}

impl Default for PowerSettings {
    fn default() -> Self {
        PowerSettings::from(&aos_config::Config::from_defaults().power)
    }
}

impl From<&aos_config::PowerSection> for PowerSettings {
    fn from(section: &aos_config::PowerSection) -> Self {
        PowerSettings {
            command_timeout: section.command_timeout,
            ipmi_retries: section.ipmi_retries,
            ipmi_retry_timeout: section.ipmi_retry_timeout,
            poll_interval: section.poll_interval,
            verify_timeout: section.verify_timeout,
        }
    }
}

/// What every power device can be asked. Methods issue one command (or one read) and return
/// when the device accepted it; they do not wait for the state to change (see
/// [`crate::operation::perform`]). Every call is bounded by the settings' command timeout.
#[async_trait::async_trait]
pub trait PowerDriver: Send + Sync {
    /// The target as errors and logs name it (device name, driver, address, outlet).
    fn describe(&self) -> &str;

    async fn power_state(&self) -> Result<PowerState, PowerError>;

    async fn power_on(&self) -> Result<(), PowerError>;

    /// Hard power off (no operating system shutdown): what fencing needs.
    async fn power_off(&self) -> Result<(), PowerError>;

    /// Ask the operating system to shut down (ACPI power button).
    async fn soft_off(&self) -> Result<(), PowerError>;

    /// Hard reset of a running host.
    async fn reset(&self) -> Result<(), PowerError>;

    /// Power off, then on, in the device itself. Devices without it keep this default, and
    /// the operation layer does off, verify off, on instead.
    async fn power_cycle(&self) -> Result<(), PowerError> {
        Err(PowerError::Unsupported {
            device: self.describe().to_owned(),
            operation: "cycle".into(),
            detail: "no power cycle command".into(),
        })
    }

    /// Set the boot device for the next boot. Callers read it back: some devices (ipmitool's
    /// `chassis bootdev`) report success for a refused request.
    async fn set_boot_device(&self, device: BootDevice) -> Result<(), PowerError>;

    async fn boot_device(&self) -> Result<BootDevice, PowerError>;
}

/// Checks a device's options for its driver (unknown keys, wrong types, bad values), before
/// they are stored; the message names the offending option.
pub fn validate_options(driver: DriverKind, options: &serde_json::Value) -> Result<(), String> {
    match driver {
        DriverKind::Ipmi => ipmi::IpmiOptions::parse(options).map(|_| ()),
        DriverKind::Redfish => redfish::RedfishOptions::parse(options).map(|_| ()),
        DriverKind::Ssh => ssh::SshOptions::parse(options).map(|_| ()),
    }
}

/// Builds the driver for one target of a device. Fails only on options that do not parse
/// (stored options were validated, so that means a row edited by hand) or a client that
/// cannot be built; nothing is sent to the device yet.
pub fn connect_driver(
    spec: &DeviceSpec,
    outlet: &str,
    settings: &PowerSettings,
) -> Result<Box<dyn PowerDriver>, PowerError> {
    let describe = spec.describe(outlet);
    let invalid =
        |reason: String| PowerError::Protocol { device: describe.clone(), detail: format!("bad options: {reason}") };
    Ok(match spec.driver {
        DriverKind::Ipmi => {
            let options = ipmi::IpmiOptions::parse(&spec.options).map_err(invalid)?;
            Box::new(ipmi::IpmiDriver::new(spec, describe.clone(), options, settings))
        }
        DriverKind::Redfish => {
            let options = redfish::RedfishOptions::parse(&spec.options).map_err(invalid)?;
            Box::new(redfish::RedfishDriver::new(spec, outlet, describe.clone(), options, settings)?)
        }
        DriverKind::Ssh => {
            let options = ssh::SshOptions::parse(&spec.options).map_err(invalid)?;
            Box::new(ssh::SshDriver::new(spec, outlet, describe.clone(), options, settings))
        }
    })
}

/// Parses an options object into a driver's options struct, naming the bad key.
pub(crate) fn parse_options<T: serde::de::DeserializeOwned + Default>(
    options: &serde_json::Value,
) -> Result<T, String> {
    match options {
        serde_json::Value::Null => Ok(T::default()),
        serde_json::Value::Object(map) if map.is_empty() => Ok(T::default()),
        serde_json::Value::Object(_) => serde_json::from_value(options.clone()).map_err(|err| err.to_string()),
        _ => Err("options must be a JSON object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_parse_and_future_drivers_are_named_as_not_implemented() {
        assert_eq!("IPMI".parse::<DriverKind>(), Ok(DriverKind::Ipmi));
        assert_eq!("redfish".parse::<DriverKind>(), Ok(DriverKind::Redfish));
        let snmp = "snmp".parse::<DriverKind>().unwrap_err();
        assert!(snmp.contains("not implemented yet"), "{snmp}");
        assert!("telnet".parse::<DriverKind>().unwrap_err().contains("unknown power driver"));
    }

    #[test]
    fn options_are_validated_per_driver_naming_the_bad_key() {
        assert!(validate_options(DriverKind::Ipmi, &serde_json::json!({"cipher_suite": 3})).is_ok());
        let error = validate_options(DriverKind::Ipmi, &serde_json::json!({"cipher": 3})).unwrap_err();
        assert!(error.contains("cipher"), "{error}");
        assert!(validate_options(DriverKind::Redfish, &serde_json::json!({"scheme": "gopher"})).is_err());
        assert!(validate_options(DriverKind::Ssh, &serde_json::json!([1])).is_err());
    }

    #[test]
    fn device_spec_debug_never_shows_the_password() {
        let spec = DeviceSpec {
            name: "bmc".into(),
            driver: DriverKind::Ipmi,
            address: "127.0.0.1".into(),
            port: None,
            username: Some("admin".into()),
            password: Some(Secret::new("Sup3r-Secret".into())),
            options: serde_json::Value::Null,
        };
        assert!(!format!("{spec:?}").contains("Sup3r-Secret"));
        assert_eq!(spec.describe(""), "bmc (ipmi 127.0.0.1:623)");
    }
}
