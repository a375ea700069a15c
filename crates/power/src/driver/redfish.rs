//! DMTF Redfish over reqwest: the small surface fencing and PXE need.
//!
//! - The system: the outlet (or `options.system`) names it — a path (`/redfish/v1/Systems/1`),
//!   a member id, a `Name` or a `UUID`; with neither, the Systems collection must have exactly
//!   one member. Resolved once per driver and cached.
//! - `PowerState` from the system; `ComputerSystem.Reset` with `On`, `ForceOff`,
//!   `GracefulShutdown`, `ForceRestart` at the action's advertised target, refused locally
//!   (Unsupported) when the system's `AllowableValues` lack the type.
//! - A reset answers 204 *before* the state changes: the operation layer polls `PowerState`.
//! - Boot override: PATCH `Boot.BootSourceOverrideTarget = Pxe` (`Once`), read back.
//! - Basic authentication; connect and whole-request timeouts (a hung BMC accepts TCP and never
//!   answers). Session authentication is not implemented yet (docs/adr/0008).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{BootDevice, DeviceSpec, PowerDriver, PowerSettings, PowerState};
use crate::error::{PowerError, tail_of};

/// `options` of a `redfish` device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedfishOptions {
    /// `https` (default) or `http` (emulators, labs).
    pub scheme: Option<String>,
    /// The system when the binding's outlet is empty: a path, an id, a name or a UUID.
    pub system: Option<String>,
    /// Check the BMC's TLS certificate (default true; many BMCs ship self-signed ones).
    pub verify_tls: Option<bool>,
    /// Overrides `[power] command_timeout` for this device, in seconds.
    pub timeout: Option<u64>,
}

impl RedfishOptions {
    pub(crate) fn parse(options: &Value) -> Result<Self, String> {
        let parsed: RedfishOptions = super::parse_options(options)?;
        if let Some(scheme) = &parsed.scheme
            && scheme != "https"
            && scheme != "http"
        {
            return Err(format!("scheme {scheme:?}: expected https or http"));
        }
        if parsed.timeout == Some(0) {
            return Err("timeout is whole seconds >= 1".into());
        }
        Ok(parsed)
    }
}

pub(crate) struct RedfishDriver {
    describe: String,
    client: reqwest::Client,
    base: url::Url,
    username: String,
    password: String,
    /// What the operator named the system by; `None`: the only member.
    system_hint: Option<String>,
    system: OnceCell<SystemRef>,
    timeout: Duration,
}

/// A resolved system: its URL path, its reset action and what the action allows.
#[derive(Debug, Clone)]
struct SystemRef {
    path: String,
    reset_target: String,
    allowed_resets: Option<Vec<String>>,
}

impl RedfishDriver {
    pub(crate) fn new(
        spec: &DeviceSpec,
        outlet: &str,
        describe: String,
        options: RedfishOptions,
        settings: &PowerSettings,
    ) -> Result<Self, PowerError> {
        let protocol = |detail: String| PowerError::Protocol { device: describe.clone(), detail };
        let scheme = options.scheme.clone().unwrap_or_else(|| "https".into());
        let host = if spec.address.contains(':') && !spec.address.starts_with('[') {
            format!("[{}]", spec.address)
        } else {
            spec.address.clone()
        };
        let base = url::Url::parse(&format!("{scheme}://{host}:{}/", spec.port_or_default()))
            .map_err(|err| protocol(format!("bad address {:?}: {err}", spec.address)))?;
        let timeout = options.timeout.map(Duration::from_secs).unwrap_or(settings.command_timeout);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(!options.verify_tls.unwrap_or(true))
            .build()
            .map_err(|err| protocol(format!("cannot build the HTTP client: {err}")))?;
        let system_hint = Some(outlet.trim()).filter(|outlet| !outlet.is_empty()).map(str::to_owned).or(options.system);
        Ok(RedfishDriver {
            describe,
            client,
            base,
            username: spec.username.clone().unwrap_or_default(),
            password: spec.password.as_ref().map(|secret| secret.expose().clone()).unwrap_or_default(),
            system_hint,
            system: OnceCell::new(),
            timeout,
        })
    }

    fn url(&self, path: &str) -> Result<url::Url, PowerError> {
        self.base.join(path).map_err(|err| PowerError::Protocol {
            device: self.describe.clone(),
            detail: format!("bad path {path:?}: {err}"),
        })
    }

    /// Sends one request; Ok(body) for 2xx, the error kind from the status otherwise.
    async fn send(
        &self,
        operation: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, PowerError> {
        let url = self.url(path)?;
        tracing::debug!(device = %self.describe, operation, %method, path, "redfish request");
        let mut request = self
            .client
            .request(method, url)
            .basic_auth(&self.username, Some(&self.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|err| self.transport_error(operation, &err))?;
        let status = response.status();
        let text = response.text().await.map_err(|err| self.transport_error(operation, &err))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text).map(Some).map_err(|err| PowerError::Protocol {
                device: self.describe.clone(),
                detail: format!("{operation}: answer is not JSON ({err}): {}", tail_of(&text, 200)),
            });
        }
        let message = redfish_message(&text).unwrap_or_else(|| tail_of(&text, 200));
        let detail = format!("HTTP {} on {path}: {message}", status.as_u16());
        let device = self.describe.clone();
        let operation = operation.to_owned();
        Err(match status.as_u16() {
            401 => PowerError::AuthFailed { device, detail: format!("wrong user name or password ({detail})") },
            403 => PowerError::AuthFailed { device, detail: format!("not allowed ({detail})") },
            404 => PowerError::Protocol { device, detail: format!("{operation}: not found ({detail})") },
            405 | 501 => PowerError::Unsupported { device, operation, detail },
            _ => PowerError::Rejected { device, operation, detail },
        })
    }

    fn transport_error(&self, operation: &str, error: &reqwest::Error) -> PowerError {
        // reqwest's messages name the URL (no credentials in it: they go in a header).
        let detail = error_chain(error);
        if error.is_timeout() {
            PowerError::TimedOut {
                device: self.describe.clone(),
                operation: operation.into(),
                after: self.timeout,
                detail,
            }
        } else if error.is_connect() {
            PowerError::Unreachable { device: self.describe.clone(), detail }
        } else {
            PowerError::Protocol { device: self.describe.clone(), detail }
        }
    }

    async fn get(&self, operation: &str, path: &str) -> Result<Value, PowerError> {
        self.send(operation, reqwest::Method::GET, path, None).await?.ok_or_else(|| PowerError::Protocol {
            device: self.describe.clone(),
            detail: format!("{operation}: empty answer for GET {path}"),
        })
    }

    async fn system(&self) -> Result<&SystemRef, PowerError> {
        self.system.get_or_try_init(|| self.resolve_system()).await
    }

    async fn resolve_system(&self) -> Result<SystemRef, PowerError> {
        let path = match self.system_hint.as_deref() {
            Some(path) if path.starts_with('/') => path.to_owned(),
            hint => self.find_system_path(hint).await?,
        };
        let system = self.get("status", &path).await?;
        Ok(system_ref(&path, &system))
    }

    async fn find_system_path(&self, hint: Option<&str>) -> Result<String, PowerError> {
        let collection = self.get("status", "/redfish/v1/Systems").await?;
        let members: Vec<String> = collection["Members"]
            .as_array()
            .map(|members| members.iter().filter_map(|m| m["@odata.id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let not_found = |detail: String| PowerError::Protocol { device: self.describe.clone(), detail };
        let Some(hint) = hint else {
            return match members.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(not_found("the BMC lists no system".into())),
                _ => Err(not_found(format!(
                    "the BMC has {} systems; name one as the binding's outlet or options.system",
                    members.len()
                ))),
            };
        };
        if let Some(path) = members.iter().find(|path| path.trim_end_matches('/').rsplit('/').next() == Some(hint)) {
            return Ok(path.clone());
        }
        // By Name or UUID: read the members (a BMC has few).
        for path in members.iter().take(64) {
            let system = self.get("status", path).await?;
            if [&system["Name"], &system["UUID"], &system["Id"]].iter().any(|value| value.as_str() == Some(hint)) {
                return Ok(path.clone());
            }
        }
        Err(not_found(format!("no system {hint:?} among the BMC's {} systems", members.len())))
    }

    async fn reset_with(&self, operation: &str, reset_type: &str) -> Result<(), PowerError> {
        let system = self.system().await?;
        if let Some(allowed) = &system.allowed_resets
            && !allowed.iter().any(|value| value == reset_type)
        {
            return Err(PowerError::Unsupported {
                device: self.describe.clone(),
                operation: operation.into(),
                detail: format!("ResetType {reset_type} is not among the allowed {}", allowed.join(", ")),
            });
        }
        self.send(operation, reqwest::Method::POST, &system.reset_target, Some(json!({ "ResetType": reset_type })))
            .await
            .map(|_| ())
    }
}

fn system_ref(path: &str, system: &Value) -> SystemRef {
    let action = &system["Actions"]["#ComputerSystem.Reset"];
    SystemRef {
        path: path.to_owned(),
        reset_target: action["target"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", path.trim_end_matches('/'))),
        allowed_resets: action["ResetType@Redfish.AllowableValues"]
            .as_array()
            .map(|values| values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
    }
}

/// The message of a Redfish error body (`error.message`, or the first extended info).
fn redfish_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = &value["error"];
    let extended = error["@Message.ExtendedInfo"].get(0).and_then(|info| info["Message"].as_str());
    extended.or_else(|| error["message"].as_str()).map(|message| tail_of(message, 300))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    tail_of(&text, 400)
}

fn parse_power_state(value: &Value) -> PowerState {
    match value["PowerState"].as_str() {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

fn parse_boot(value: &Value) -> BootDevice {
    match value["Boot"]["BootSourceOverrideTarget"].as_str() {
        Some("Pxe") => BootDevice::Pxe,
        Some("Hdd") => BootDevice::Disk,
        Some("None") | None => BootDevice::None,
        Some(other) => BootDevice::Other(other.to_owned()),
    }
}

#[async_trait::async_trait]
impl PowerDriver for RedfishDriver {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let system = self.system().await?;
        Ok(parse_power_state(&self.get("status", &system.path).await?))
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.reset_with("on", "On").await
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        self.reset_with("off", "ForceOff").await
    }

    async fn soft_off(&self) -> Result<(), PowerError> {
        self.reset_with("soft_off", "GracefulShutdown").await
    }

    async fn reset(&self) -> Result<(), PowerError> {
        self.reset_with("reset", "ForceRestart").await
    }

    async fn set_boot_device(&self, device: BootDevice) -> Result<(), PowerError> {
        let target = match &device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::None => "None",
            BootDevice::Other(other) => other.as_str(),
        };
        let system = self.system().await?;
        let body = json!({ "Boot": { "BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": "Once" } });
        self.send("bootdev_pxe", reqwest::Method::PATCH, &system.path, Some(body)).await.map(|_| ())
    }

    async fn boot_device(&self) -> Result<BootDevice, PowerError> {
        let system = self.system().await?;
        Ok(parse_boot(&self.get("bootdev_get", &system.path).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_documents_give_state_boot_and_reset_action() {
        let system = json!({
            "PowerState": "On",
            "Boot": {"BootSourceOverrideTarget": "Pxe"},
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
            }}
        });
        assert_eq!(parse_power_state(&system), PowerState::On);
        assert_eq!(parse_power_state(&json!({"PowerState": "PoweringOff"})), PowerState::Unknown);
        assert_eq!(parse_boot(&system), BootDevice::Pxe);
        let reference = system_ref("/redfish/v1/Systems/1", &system);
        assert_eq!(reference.reset_target, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
        assert_eq!(reference.allowed_resets, Some(vec!["On".to_owned(), "ForceOff".to_owned()]));
        let bare = system_ref("/redfish/v1/Systems/2/", &json!({}));
        assert_eq!(bare.reset_target, "/redfish/v1/Systems/2/Actions/ComputerSystem.Reset");
        assert_eq!(bare.allowed_resets, None);
    }

    #[test]
    fn redfish_error_bodies_give_their_message() {
        let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"Fake system nope was not found"}}"#;
        assert_eq!(redfish_message(body).as_deref(), Some("Fake system nope was not found"));
        let extended =
            r#"{"error":{"message":"x","@Message.ExtendedInfo":[{"Message":"The action is not allowed."}]}}"#;
        assert_eq!(redfish_message(extended).as_deref(), Some("The action is not allowed."));
        assert_eq!(redfish_message("<html>"), None);
    }
}
