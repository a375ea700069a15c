//! `keystone register`: puts the API in the Keystone catalogue — service `cloud-manager` of
//! type `cloud-manager` and its public, internal and admin endpoints — as the reference's
//! manual installation steps do with `openstack service create` / `endpoint create`, but
//! idempotently: a second run creates nothing, and an endpoint whose URL changed is updated
//! in place. It authenticates with `[keystone_authtoken]`, which needs the admin role.

use std::process::ExitCode;

use anyhow::Context as _;
use aos_daemon::CommonArgs;
use aos_openstack::{EndpointInterface, IdentityClient, ServiceRegistration};

/// The catalogue name and type clients (the `openstack aos` plugin) look the API up by.
pub const SERVICE_TYPE: &str = "cloud-manager";
pub const SERVICE_NAME: &str = "cloud-manager";

#[derive(clap::Subcommand)]
pub enum KeystoneCommand {
    /// Create (idempotently) the cloud-manager service and its three endpoints.
    Register(RegisterArgs),
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    /// Region of the endpoints (default: [keystone_authtoken] region_name).
    #[arg(long)]
    region: Option<String>,
    /// Public endpoint URL (default: http://<[api] host or this host's name>:<[api] port>).
    #[arg(long, value_name = "URL")]
    public_url: Option<url::Url>,
    /// Internal endpoint URL (default: the public URL).
    #[arg(long, value_name = "URL")]
    internal_url: Option<url::Url>,
    /// Admin endpoint URL (default: the internal URL).
    #[arg(long, value_name = "URL")]
    admin_url: Option<url::Url>,
}

fn default_url(config: &aos_config::Config) -> anyhow::Result<url::Url> {
    let host = match config.api.host.as_str() {
        "" | "0.0.0.0" | "::" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned()),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_owned(),
    };
    format!("http://{host}:{}", config.api.port)
        .parse()
        .with_context(|| format!("cannot make an endpoint URL from [api] host {host:?}; give --public-url"))
}

pub fn run(common: &CommonArgs, command: KeystoneCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    let KeystoneCommand::Register(args) = command;
    for (option, url) in
        [("--public-url", &args.public_url), ("--internal-url", &args.internal_url), ("--admin-url", &args.admin_url)]
    {
        if let Some(url) = url
            && !matches!(url.scheme(), "http" | "https")
        {
            eprintln!("error: {option} {url}: must be an http:// or https:// URL");
            return Ok(ExitCode::from(2));
        }
    }
    let public = match args.public_url {
        Some(url) => url,
        None => default_url(&config)?,
    };
    let internal = args.internal_url.unwrap_or_else(|| public.clone());
    let admin = args.admin_url.unwrap_or_else(|| internal.clone());
    let registration = ServiceRegistration {
        name: SERVICE_NAME.into(),
        service_type: SERVICE_TYPE.into(),
        description: "aos-cloud-manager: compute HA, balancing and power management".into(),
        region: args.region.unwrap_or_else(|| config.keystone_authtoken.region_name.clone()),
        endpoints: vec![
            (EndpointInterface::Public, public),
            (EndpointInterface::Internal, internal),
            (EndpointInterface::Admin, admin),
        ],
    };
    let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
    let auth_url = settings.auth_url.clone();
    super::runtime()?.block_on(async move {
        let identity = IdentityClient::connect(settings, aos_openstack::ClientOptions::default())
            .await
            .with_context(|| format!("cannot authenticate with Keystone at {auth_url} ([keystone_authtoken])"))?;
        let report = identity.register_service(&registration).await.context("cannot register the service")?;
        out!(
            "service {SERVICE_NAME} (type {SERVICE_TYPE}): {} ({})",
            if report.service_created { "created" } else { "exists" },
            report.service_id
        );
        for (interface, url) in &report.endpoints_created {
            out!("endpoint {interface}: created {url}");
        }
        for (interface, old, new) in &report.endpoints_updated {
            out!("endpoint {interface}: updated {old} -> {new}");
        }
        for interface in &report.endpoints_unchanged {
            out!("endpoint {interface}: unchanged");
        }
        Ok(ExitCode::SUCCESS)
    })
}
