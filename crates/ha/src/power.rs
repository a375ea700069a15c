//! [`Fencer`] over the power layer (aos-power: IPMI, Redfish, SSH drivers): what the workers
//! use. Every operation is recorded by aos-power in `power_operations` (before acting) and as
//! a `power.fence` node event.

use async_trait::async_trait;

use crate::fence::{FenceError, FenceReport, FenceTarget, Fencer};

pub struct PowerFencer {
    db: aos_db::DatabaseConnection,
    /// The key that opens the devices' credentials; an error when it could not be read (every
    /// fence then fails, saying why: better than evacuating a node we could not power off).
    keyring: Result<aos_power::Keyring, String>,
    settings: aos_power::PowerSettings,
    /// `[pxe] conf_dir`: where reserve hosts' PXELINUX files are written.
    pxe_conf_dir: std::path::PathBuf,
}

impl PowerFencer {
    pub fn from_config(db: aos_db::DatabaseConnection, config: &aos_config::Config) -> Self {
        let keyring = aos_power::Keyring::from_config(&config.power).map_err(|error| error.to_string());
        PowerFencer {
            db,
            keyring,
            settings: aos_power::PowerSettings::from(&config.power),
            pxe_conf_dir: config.pxe.conf_dir.clone(),
        }
    }
}

impl PowerFencer {
    fn keyring(&self, target: &FenceTarget) -> Result<&aos_power::Keyring, FenceError> {
        self.keyring.as_ref().map_err(|error| FenceError::Failed {
            node: target.node.clone(),
            reason: format!("the power credentials cannot be opened: {error}"),
        })
    }

    async fn operate(
        &self,
        target: &FenceTarget,
        action: aos_power::PowerAction,
        actor: &str,
        task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        let keyring = self.keyring(target)?;
        let outcome = match action {
            // Fencing verifies the power is off (polling to the deadline), whatever the driver.
            aos_power::PowerAction::Off => {
                aos_power::fence_node(&self.db, keyring, target.node_id, actor, task_id, &self.settings).await
            }
            action => {
                aos_power::run_node_operation(&self.db, keyring, target.node_id, action, actor, task_id, &self.settings)
                    .await
            }
        };
        match outcome {
            Ok(report) => Ok(FenceReport {
                device: if report.outlet.is_empty() {
                    report.device
                } else {
                    format!("{} outlet {}", report.device, report.outlet)
                },
                was_already_off: !report.command_sent,
                took_ms: report.elapsed_ms,
            }),
            Err(aos_power::NodeOperationError::NoPowerDevice { node, .. }) => Err(FenceError::NoPowerDevice(node)),
            Err(error) => Err(FenceError::Failed { node: target.node.clone(), reason: error.to_string() }),
        }
    }
}

#[async_trait]
impl Fencer for PowerFencer {
    async fn has_power_device(&self, target: &FenceTarget) -> Result<bool, String> {
        aos_power::has_power_device(&self.db, target.node_id).await.map_err(|error| error.to_string())
    }

    async fn fence(&self, target: &FenceTarget, actor: &str, task_id: Option<&str>) -> Result<FenceReport, FenceError> {
        self.operate(target, aos_power::PowerAction::Off, actor, task_id).await
    }

    async fn power_on(
        &self,
        target: &FenceTarget,
        actor: &str,
        task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        self.operate(target, aos_power::PowerAction::On, actor, task_id).await
    }

    async fn soft_power_off(&self, target: &FenceTarget, actor: &str, task_id: Option<&str>) -> Result<(), FenceError> {
        self.operate(target, aos_power::PowerAction::SoftOff, actor, task_id).await.map(|_| ())
    }

    async fn prepare_network_boot(
        &self,
        target: &FenceTarget,
        boot_mac: &str,
        actor: &str,
        task_id: Option<&str>,
    ) -> Result<(), FenceError> {
        let failed = |reason: String| FenceError::Failed { node: target.node.clone(), reason };
        let mac: aos_power::MacAddress =
            boot_mac.parse().map_err(|error| failed(format!("boot MAC {boot_mac:?}: {error}")))?;
        let contents = aos_power::pxe::render_pxe_config(aos_power::pxe::DEFAULT_TEMPLATE, &target.node, mac)
            .map_err(|error| failed(error.to_string()))?;
        aos_power::pxe::write_pxe_config(&self.pxe_conf_dir, mac, &contents)
            .map_err(|error| failed(error.to_string()))?;
        self.operate(target, aos_power::PowerAction::BootdevPxe, actor, task_id).await.map(|_| ())
    }

    async fn finish_network_boot(&self, target: &FenceTarget, boot_mac: &str) -> Result<(), FenceError> {
        let failed = |reason: String| FenceError::Failed { node: target.node.clone(), reason };
        let mac: aos_power::MacAddress =
            boot_mac.parse().map_err(|error| failed(format!("boot MAC {boot_mac:?}: {error}")))?;
        aos_power::pxe::remove_pxe_config(&self.pxe_conf_dir, mac).map_err(|error| failed(error.to_string()))?;
        Ok(())
    }
}
