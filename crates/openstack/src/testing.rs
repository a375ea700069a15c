//! Helpers for tests against the real test cloud (`../shared/openstack-env`, started by
//! `scripts/ensure-openstack.sh`), shared by the tests of every crate (feature `testing`; never
//! compiled into a daemon): admin credentials from the environment (`AOS_TEST_OS_*`), polling
//! with a bound ([`eventually`]), nova-compute hosts of a test's own ([`start_own_compute`],
//! [`remove_own_compute`]; never the shared `fake-N` hosts, which other tests use), servers
//! ([`tiny_image_and_nano_flavor`], [`wait_for_server`], [`delete_servers`]), and cleanup that
//! runs even when a test fails ([`Cleanup`]).
//!
//! These helpers panic with a message that says what to do: they are for tests only.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{
    AuthSettings, ClientOptions, ComputeService, EndpointInterface, OpenStackClient, OpenStackError, Secret,
    ServiceState,
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_string())
}

/// Installs rustls' `ring` provider (as the binaries do) and, once per test binary, a log
/// subscriber honouring `RUST_LOG` (e.g. `RUST_LOG=aos_openstack=debug` shows every call).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The admin credentials of the test cloud (`AOS_TEST_OS_*`, defaults admin/admin/admin).
pub fn admin_settings() -> AuthSettings {
    settings(
        &env_or("AOS_TEST_OS_USERNAME", "admin"),
        &env_or("AOS_TEST_OS_PASSWORD", "admin"),
        &env_or("AOS_TEST_OS_PROJECT", "admin"),
    )
}

/// A user of another project (Nova's service user in project `service` on the test cloud),
/// to own servers that only an all-projects listing shows to admin.
pub fn other_project_settings() -> AuthSettings {
    settings(
        &env_or("AOS_TEST_OS_OTHER_USERNAME", "nova"),
        &env_or("AOS_TEST_OS_OTHER_PASSWORD", "service-pass"),
        &env_or("AOS_TEST_OS_OTHER_PROJECT", "service"),
    )
}

pub fn settings(username: &str, password: &str, project: &str) -> AuthSettings {
    AuthSettings {
        auth_url: auth_url().parse().expect("AOS_TEST_OS_AUTH_URL is a URL"),
        username: username.to_string(),
        password: Secret::new(password.to_string()),
        project_name: project.to_string(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
        region_name: env_or("AOS_TEST_OS_REGION", "RegionOne"),
        interface: EndpointInterface::Public,
    }
}

pub fn auth_url() -> String {
    env_or("AOS_TEST_OS_AUTH_URL", "http://127.0.0.1:5000/v3")
}

/// Test options: the default timeouts, shorter retry delays.
pub fn options() -> ClientOptions {
    ClientOptions { retry_base_delay: Duration::from_millis(200), ..ClientOptions::default() }
}

/// Connects as admin; an unreachable cloud fails the test with what to do about it.
pub async fn admin_client() -> OpenStackClient {
    connect(admin_settings()).await
}

pub async fn connect(settings: AuthSettings) -> OpenStackClient {
    install_crypto_provider();
    match OpenStackClient::connect_with(settings, options()).await {
        Ok(client) => client,
        Err(
            error @ (OpenStackError::Connect { .. } | OpenStackError::Timeout { .. } | OpenStackError::Server { .. }),
        ) => {
            panic!(
                "the test cloud at {} is not reachable ({error}). Start it with scripts/ensure-openstack.sh \
                 (or point AOS_TEST_OS_AUTH_URL at a running one)",
                auth_url()
            )
        }
        Err(error) => panic!("cannot connect to the test cloud at {}: {error}", auth_url()),
    }
}

/// Calls `probe` every `step` until it returns `Some`, at most for `limit`; panics naming
/// `what` and the last observation otherwise.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, step: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let started = Instant::now();
    let mut last = String::from("nothing observed yet");
    loop {
        match probe().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(observation) => last = observation,
        }
        if started.elapsed() >= limit {
            panic!("{what}: not reached within {limit:?}; last observation: {last}");
        }
        tokio::time::sleep(step).await;
    }
}

/// Runs an async cleanup when dropped — also when the test panics — on a runtime and with a
/// client of its own: the test's client keeps pooled connections that belong to the test's
/// runtime, which is blocked while the cleanup runs.
pub struct Cleanup(Option<Box<dyn FnOnce() + Send>>);

impl Cleanup {
    pub fn new<F, Fut>(client: &OpenStackClient, cleanup: F) -> Self
    where
        F: FnOnce(OpenStackClient) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let settings = client.settings().clone();
        Self(Some(Box::new(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                match OpenStackClient::connect_with(settings, options()).await {
                    Ok(client) => cleanup(client).await,
                    Err(error) => eprintln!("cleanup skipped, cannot connect: {error}"),
                }
            });
        })))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            let _ = std::thread::spawn(cleanup).join();
        }
    }
}

/// The shared test environment's directory (`AOS_TEST_OSENV_DIR`, default
/// `../shared/openstack-env` beside the workspace): its scripts and `samples/`.
pub fn osenv_dir() -> PathBuf {
    std::env::var("AOS_TEST_OSENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/openstack-env"))
}

/// The test cloud's state directory (`OSENV_STATE_DIR`, default `~/.cache/aos-osenv`).
pub fn osenv_state_dir() -> PathBuf {
    std::env::var("OSENV_STATE_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/aos-osenv")
    })
}

/// The RabbitMQ transport of the test cloud, where Nova publishes its notifications (exchange
/// `nova`): `AOS_TEST_OSENV_TRANSPORT_URL`, default
/// `rabbit://osenv:osenv-rabbit-pass@127.0.0.1:5672/osenv` (openstack-env's README).
pub fn nova_transport_url() -> String {
    env_or("AOS_TEST_OSENV_TRANSPORT_URL", "rabbit://osenv:osenv-rabbit-pass@127.0.0.1:5672/osenv")
}

/// `openstack-env/compute.sh` of the shared test environment, with its state directory.
fn compute_script() -> Command {
    let mut command = Command::new(osenv_dir().join("compute.sh"));
    command.env("OSENV_STATE_DIR", osenv_state_dir());
    command
}

/// Runs `compute.sh <verb> <host>` for one of our own hosts (start is idempotent; stop and
/// kill only touch `host`). Our hosts get 1 GiB of RAM (512 MiB after Nova's reserve): room
/// for a few m1.nano servers, and always the scheduler's last choice next to the 16 GiB
/// `fake-N` hosts, so colleagues' servers do not land on a host we are about to kill.
pub fn compute_sh(verb: &str, host: &str) {
    if let Err(error) = compute_sh_with_ram(verb, host, 1024) {
        panic!("{error}");
    }
}

/// `compute.sh <verb> <host>` with `ram_mb` of RAM for the fake hypervisor (read when the
/// compute starts); its standard output, or what it printed when it failed.
pub fn compute_sh_with_ram(verb: &str, host: &str, ram_mb: u32) -> Result<String, String> {
    let output = compute_script()
        .args([verb, host])
        .env("OSENV_FAKE_RAM_MB", ram_mb.to_string())
        .output()
        .map_err(|error| format!("cannot run openstack-env/compute.sh: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("compute.sh {verb} {host} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

pub async fn compute_service(client: &OpenStackClient, host: &str) -> Option<ComputeService> {
    client.compute_services().await.expect("list compute services").into_iter().find(|service| service.host == host)
}

/// Starts a nova-compute of our own called `host` (a name no colleague uses), waits until
/// Nova lists it up and enabled, and returns its service record. A record left forced down
/// or disabled by an earlier failed run is reset first.
pub async fn start_own_compute(client: &OpenStackClient, host: &str) -> ComputeService {
    compute_sh("start", host);
    let service = eventually(&format!("{host} listed up"), Duration::from_secs(90), Duration::from_secs(1), || async {
        let service = compute_service(client, host).await;
        match service {
            Some(service) if service.forced_down => {
                let _ = client.set_forced_down(&service.id, false).await;
                Err(format!("{service:?}"))
            }
            Some(service) if service.status == crate::ServiceStatus::Disabled => {
                let _ = client.enable_service(&service.id).await;
                Err(format!("{service:?}"))
            }
            Some(service) if service.state == ServiceState::Up => Ok(Some(service)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Schedulable only once its compute node is a resource provider in Placement.
    eventually(&format!("{host} in Placement"), Duration::from_secs(60), Duration::from_secs(1), || async {
        let providers = client.resource_providers().await.map_err(|error| error.to_string())?;
        Ok(providers.iter().any(|provider| provider.name == host).then_some(()))
    })
    .await;
    service
}

/// Stops our own compute (SIGKILL: nothing of it is kept) and deletes its service record,
/// leaving the cloud as it was.
pub async fn remove_own_compute(client: &OpenStackClient, host: &str) {
    compute_sh("kill", host);
    if let Some(service) = compute_service(client, host).await
        && let Err(error) = client.delete_compute_service(&service.id).await
    {
        eprintln!("could not delete the compute service of {host}: {error}");
    }
}

/// Two nova-compute hosts of the shared cloud (`fake-N`) that are up, enabled and not forced
/// down, for tests that need a source and a destination.
pub async fn two_usable_fake_hosts(client: &OpenStackClient) -> (String, String) {
    let mut hosts: Vec<String> = client
        .compute_services()
        .await
        .expect("list compute services")
        .into_iter()
        .filter(|service| {
            service.host.starts_with("fake-")
                && service.state == ServiceState::Up
                && service.status == crate::ServiceStatus::Enabled
                && !service.forced_down
        })
        .map(|service| service.host)
        .collect();
    hosts.sort();
    assert!(hosts.len() >= 2, "need two usable fake hosts, found {hosts:?}");
    (hosts[0].clone(), hosts[1].clone())
}

/// A name unique to this test run.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Image `tiny` and flavor `m1.nano` of the test cloud.
pub async fn tiny_image_and_nano_flavor(client: &OpenStackClient) -> (String, String) {
    let image = client.image_id_by_name("tiny").await.expect("image tiny");
    let flavor = client
        .flavors()
        .await
        .expect("list flavors")
        .into_iter()
        .find(|flavor| flavor.name == "m1.nano")
        .expect("flavor m1.nano")
        .id;
    (image, flavor)
}

/// Waits until the server has `status`, no task in progress, and (when given) is no longer on
/// `not_on`; panics on ERROR.
pub async fn wait_for_status(client: &OpenStackClient, server_id: &str, status: &str) -> crate::Server {
    wait_for_server(client, server_id, status, None).await
}

pub async fn wait_for_server(
    client: &OpenStackClient,
    server_id: &str,
    status: &str,
    not_on: Option<&str>,
) -> crate::Server {
    eventually(&format!("server {server_id} {status}"), Duration::from_secs(120), Duration::from_secs(1), || async {
        let server = client.server(server_id).await.map_err(|error| error.to_string())?;
        assert_ne!(server.status, "ERROR", "server {server_id} went to ERROR: {server:?}");
        let moved = not_on.is_none() || server.host.as_deref() != not_on;
        if server.status == status && server.task_state.is_none() && moved {
            Ok(Some(server))
        } else {
            Err(format!("status {} task {:?} host {:?}", server.status, server.task_state, server.host))
        }
    })
    .await
}

/// Deletes servers and waits until Nova no longer has them.
pub async fn delete_servers(client: &OpenStackClient, server_ids: &[String]) {
    for id in server_ids {
        match client.delete_server(id).await {
            Ok(()) | Err(OpenStackError::NotFound { .. }) => {}
            Err(error) => eprintln!("could not delete server {id}: {error}"),
        }
    }
    for id in server_ids {
        eventually(&format!("server {id} deleted"), Duration::from_secs(60), Duration::from_secs(1), || async {
            match client.server(id).await {
                Err(OpenStackError::NotFound { .. }) => Ok(Some(())),
                Ok(server) if server.status == "DELETED" => Ok(Some(())),
                Ok(server) => Err(format!("still {} (task {:?})", server.status, server.task_state)),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
    }
}

/// Boots `server` (on its `host`), retrying while Nova does not map a (re)started host yet
/// ("Compute host … could not be found": the scheduler maps new hosts within
/// `discover_hosts_in_cells_interval`), for up to 90 s.
pub async fn boot_on(client: &OpenStackClient, server: crate::NewServer) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match client.create_server(&server).await {
            Ok(id) => return id,
            Err(error) if error.to_string().contains("could not be found") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => panic!("boot {}: {error}", server.name),
        }
    }
}
