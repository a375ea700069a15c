//! `power-device create|list|show|delete|generate-key`, `power status|on|off|soft-off|reset|
//! cycle|bootdev-pxe NODE` (or `--device D [--outlet O]`) and `node init` (dispatched from
//! `node`): the operator's side of aos-power.
//!
//! A device password is read from `--password-file` or the `AOS_POWER_DEVICE_PASSWORD`
//! environment variable, never from an argument (argv is visible in `ps`), and is never
//! printed: `show` says only whether one is set.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use aos_daemon::CommonArgs;
use aos_power::{DriverKind, Keyring, NewPowerDevice, PowerAction, PowerSettings, Secret};

use super::config::print_table;

/// The environment variable a password may come from when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "AOS_POWER_DEVICE_PASSWORD";

#[derive(clap::Subcommand)]
pub enum PowerDeviceCommand {
    /// Register a power device (BMC, PDU, SSH lab host).
    Create(CreateArgs),
    /// Every power device and the nodes bound to it.
    List,
    /// One power device (whether a password is set, never the password) and its bindings.
    Show { name: String },
    /// Remove a power device; with nodes bound to it only with --force (removes the bindings).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Write a new random credential key to `[power] credential_key_file` (or --file), mode
    /// 0600; never overwrites an existing key.
    GenerateKey {
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    name: String,
    /// ipmi, redfish or ssh.
    #[arg(long)]
    driver: String,
    /// Host name or IP address of the device.
    #[arg(long)]
    address: String,
    /// Default: 623 (ipmi), 443 (redfish), 22 (ssh).
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    username: Option<String>,
    /// A file whose first line is the password (else $AOS_POWER_DEVICE_PASSWORD, else none).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Driver options as a JSON object, e.g. '{"cipher_suite": 3}' (ipmi),
    /// '{"scheme": "http", "system": "/redfish/v1/Systems/1"}' (redfish),
    /// '{"commands": {"status": "ssh {username}@{address} virsh domstate {outlet}"}}' (ssh).
    #[arg(long)]
    options: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum PowerCommand {
    /// Read the power state.
    Status(PowerTarget),
    /// Power on and wait until on.
    On(PowerTarget),
    /// Hard power off and wait until off.
    Off(PowerTarget),
    /// Ask the operating system to shut down and wait until off.
    SoftOff(PowerTarget),
    /// Hard reset (powers on a host that is off).
    Reset(PowerTarget),
    /// Power off then on (powers on a host that is off).
    Cycle(PowerTarget),
    /// Boot from the network next time (read back to verify).
    BootdevPxe(PowerTarget),
}

#[derive(clap::Args)]
pub struct PowerTarget {
    /// The node (through its default power binding).
    #[arg(required_unless_present = "device", conflicts_with = "device")]
    node: Option<String>,
    /// A power device, directly.
    #[arg(long)]
    device: Option<String>,
    /// The device's outlet (a PDU port, a Redfish system); none for a BMC.
    #[arg(long, requires = "device", default_value = "")]
    outlet: String,
}

/// `node init NAME --device D [--outlet O]` or `node init --from-file F`.
#[derive(clap::Args)]
pub struct NodeInitArgs {
    /// The node (Nova's hypervisor host name).
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file", requires = "device")]
    name: Option<String>,
    /// The power device that powers it; the binding becomes the node's default.
    #[arg(long)]
    device: Option<String>,
    #[arg(long, requires = "device", default_value = "")]
    outlet: String,
    /// Bind many nodes: one `NODE DEVICE [OUTLET]` per line, `#` comments; all or nothing.
    #[arg(long)]
    from_file: Option<PathBuf>,
}

fn actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn keyring(config: &aos_config::Config) -> anyhow::Result<Keyring> {
    Ok(Keyring::from_config(&config.power)?)
}

fn read_password(args: &CreateArgs) -> anyhow::Result<Option<Secret<String>>> {
    if let Some(path) = &args.password_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --password-file {}", path.display()))?;
        let password = text.lines().next().unwrap_or("").to_owned();
        anyhow::ensure!(!password.is_empty(), "--password-file {}: the first line is empty", path.display());
        return Ok(Some(Secret::new(password)));
    }
    Ok(std::env::var(PASSWORD_ENV).ok().filter(|password| !password.is_empty()).map(Secret::new))
}

pub fn run_device(common: &CommonArgs, command: PowerDeviceCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    let command = match command {
        PowerDeviceCommand::GenerateKey { file } => {
            let path = file.unwrap_or_else(|| config.power.credential_key_file.clone());
            Keyring::generate_file(&path)?;
            out!("wrote a new credential key to {} (mode 0600)", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        match command {
            PowerDeviceCommand::Create(args) => create(&db, &config, args).await,
            PowerDeviceCommand::List => list(&db).await,
            PowerDeviceCommand::Show { name } => show(&db, &name).await,
            PowerDeviceCommand::Delete { name, force } => {
                aos_power::delete_device(&db, &name, force).await?;
                out!("deleted power device {name}");
                Ok(ExitCode::SUCCESS)
            }
            PowerDeviceCommand::GenerateKey { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

async fn create(
    db: &aos_db::DatabaseConnection,
    config: &aos_config::Config,
    args: CreateArgs,
) -> anyhow::Result<ExitCode> {
    let driver: DriverKind = args.driver.parse().map_err(anyhow::Error::msg).context("--driver")?;
    let options = match &args.options {
        Some(text) => serde_json::from_str(text).context("--options must be a JSON object")?,
        None => serde_json::json!({}),
    };
    let password = read_password(&args)?;
    // Only needed to seal a password; a device without one works without a key file.
    let keyring = match &password {
        Some(_) => keyring(config)?,
        None => Keyring::from_key_bytes([0; 32], "unused"),
    };
    let device = NewPowerDevice {
        name: args.name,
        driver,
        address: args.address,
        port: args.port,
        username: args.username,
        password,
        options,
    };
    let info = aos_power::create_device(db, &keyring, device).await?;
    out!(
        "created power device {} ({} {}, password {})",
        info.name,
        info.driver,
        info.address,
        set_or_not(info.password_set)
    );
    Ok(ExitCode::SUCCESS)
}

fn set_or_not(set: bool) -> &'static str {
    if set { "set" } else { "not set" }
}

fn port_text(port: Option<i32>, driver: &str) -> String {
    match (port, driver.parse::<DriverKind>()) {
        (Some(port), _) => port.to_string(),
        (None, Ok(driver)) => format!("{} (default)", driver.default_port()),
        (None, Err(_)) => "-".into(),
    }
}

async fn list(db: &aos_db::DatabaseConnection) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for device in aos_power::list_devices(db).await? {
        let bindings = aos_power::device_bindings(db, device.id).await?;
        let nodes: Vec<String> = bindings
            .iter()
            .map(|b| if b.outlet.is_empty() { b.node_name.clone() } else { format!("{}:{}", b.node_name, b.outlet) })
            .collect();
        rows.push([
            device.name.clone(),
            device.driver.clone(),
            device.address.clone(),
            port_text(device.port, &device.driver),
            device.username.clone().unwrap_or_else(|| "-".into()),
            set_or_not(device.password_set).to_owned(),
            if nodes.is_empty() { "-".into() } else { nodes.join(", ") },
        ]);
    }
    print_table(&["Name", "Driver", "Address", "Port", "Username", "Password", "Nodes"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn show(db: &aos_db::DatabaseConnection, name: &str) -> anyhow::Result<ExitCode> {
    let Some(device) = aos_power::find_device(db, name).await? else {
        eprintln!("error: no power device named {name:?} (run `aos-cloud-manager power-device list`)");
        return Ok(ExitCode::from(2));
    };
    let fields = [
        ("name", device.name.clone()),
        ("driver", device.driver.clone()),
        ("address", device.address.clone()),
        ("port", port_text(device.port, &device.driver)),
        ("username", device.username.clone().unwrap_or_else(|| "-".into())),
        ("password", set_or_not(device.password_set).to_owned()),
        ("options", device.options.to_string()),
        ("created", device.created_at.to_rfc3339()),
    ];
    let rows: Vec<[String; 2]> = fields.into_iter().map(|(key, value)| [key.to_owned(), value]).collect();
    print_table(&["Field", "Value"], &rows);
    out!("");
    let bindings: Vec<[String; 3]> = aos_power::device_bindings(db, device.id)
        .await?
        .into_iter()
        .map(|b| [b.node_name, if b.outlet.is_empty() { "-".into() } else { b.outlet }, b.is_default.to_string()])
        .collect();
    print_table(&["Node", "Outlet", "Default"], &bindings);
    Ok(ExitCode::SUCCESS)
}

pub fn run_power(common: &CommonArgs, command: PowerCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    let (action, target) = match command {
        PowerCommand::Status(target) => (PowerAction::Status, target),
        PowerCommand::On(target) => (PowerAction::On, target),
        PowerCommand::Off(target) => (PowerAction::Off, target),
        PowerCommand::SoftOff(target) => (PowerAction::SoftOff, target),
        PowerCommand::Reset(target) => (PowerAction::Reset, target),
        PowerCommand::Cycle(target) => (PowerAction::Cycle, target),
        PowerCommand::BootdevPxe(target) => (PowerAction::BootdevPxe, target),
    };
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        let keyring = keyring(&config)?;
        let settings = PowerSettings::from(&config.power);
        let actor = actor();
        let result = match (&target.node, &target.device) {
            (Some(node_name), _) => {
                let Some(node) = aos_db::find_node(&db, node_name).await? else {
                    eprintln!("error: no node named {node_name:?} (run `aos-cloud-manager node list`)");
                    return Ok(ExitCode::from(2));
                };
                aos_power::run_node_operation(&db, &keyring, node.id, action, &actor, None, &settings).await
            }
            (None, Some(device)) => {
                aos_power::run_device_operation(&db, &keyring, device, &target.outlet, action, &actor, None, &settings)
                    .await
            }
            (None, None) => anyhow::bail!("name a node or --device"),
        };
        match result {
            Ok(report) => {
                let boot = report.boot_device.map(|boot| boot.to_string()).unwrap_or_else(|| "-".into());
                print_table(
                    &["Device", "Outlet", "Operation", "Result", "Power", "Boot device", "Operation id"],
                    &[[
                        report.device,
                        if report.outlet.is_empty() { "-".into() } else { report.outlet },
                        report.action.to_string(),
                        if report.command_sent || action == PowerAction::Status {
                            "succeeded".into()
                        } else {
                            "succeeded (already so, nothing sent)".into()
                        },
                        report.state.to_string(),
                        boot,
                        report.operation_id.to_string(),
                    ]],
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("error: {error}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// `node init`: called by `node` with its connection.
pub async fn node_init(db: &aos_db::DatabaseConnection, args: NodeInitArgs) -> anyhow::Result<ExitCode> {
    let bindings = match (&args.from_file, &args.name, &args.device) {
        (Some(path), _, _) => aos_power::init_nodes_from_file(db, path).await?,
        (None, Some(name), Some(device)) => vec![aos_power::init_node(db, name, device, &args.outlet).await?],
        _ => anyhow::bail!("give NAME --device D [--outlet O], or --from-file F"),
    };
    let rows: Vec<[String; 3]> = bindings
        .into_iter()
        .map(|b| [b.node_name, b.device_name, if b.outlet.is_empty() { "-".into() } else { b.outlet }])
        .collect();
    print_table(&["Node", "Default power device", "Outlet"], &rows);
    Ok(ExitCode::SUCCESS)
}
