//! The `openstack aos` plugin (`client/python-aosclient`) with the real python-openstackclient
//! of the test cloud, against the API served here and registered in the real Keystone's
//! catalogue by `aos-cloud-manager keystone register`.
//!
//! The venv: the test cloud's Python (`~/.cache/aos-osenv/venv`'s base interpreter) with the
//! test cloud's exact python-openstackclient, osc-lib, keystoneauth1 and cliff versions from
//! PyPI, created once under `~/.cache/aos-cloud-manager/` (minutes the first time, then
//! reused); the plugin's wheel is built from the repository and reinstalled on every run. The
//! endpoints go to a region of the test's own (deleted afterwards with them), so a real
//! registration in RegionOne is never touched. `aos-cloud-manager` (for `keystone register`
//! and `openstack aos db list`) is built with cargo into this test's target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use aos_db::ObservedComputeHost;
use aos_openstack::IdentityClient;
use aos_openstack::testing::{admin_settings, install_crypto_provider, options, osenv_state_dir, unique_name};
use aos_testkit::config_database_url;
use aos_testkit::testing::TestDatabase;
use serde_json::Value;

/// What the plugin is tested with: the test cloud's own client packages.
const PINNED: [&str; 4] = ["python-openstackclient", "osc-lib", "keystoneauth1", "cliff"];

/// Deletes the test's reader user, its region's endpoints and the region, also when the test
/// fails. The `cloud-manager` service itself stays (other tests may be using it; without
/// endpoints it is inert).
struct Cleanup {
    region: String,
    user_id: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let region = self.region.clone();
        let user_id = self.user_id.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let Ok(identity) = IdentityClient::connect(admin_settings(), options()).await else { return };
                if let Some(user_id) = user_id
                    && let Err(error) = identity.delete_user(&user_id).await
                {
                    eprintln!("could not delete test user {user_id}: {error}");
                }
                for service in identity.services_of_type("cloud-manager").await.unwrap_or_default() {
                    for endpoint in identity.endpoints_of_service(&service.id).await.unwrap_or_default() {
                        if endpoint.region_id.as_deref() == Some(region.as_str()) {
                            let _ = identity.delete_endpoint(&endpoint.id).await;
                        }
                    }
                }
                if let Err(error) = identity.delete_region(&region).await {
                    eprintln!("could not delete test region {region}: {error}");
                }
            });
        })
        .join();
    }
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    command.output().unwrap_or_else(|error| panic!("cannot run {shown}: {error}"))
}

fn report(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let output = run(command);
    assert!(output.status.success(), "{shown}: {}", report(&output));
    output
}

/// `aos-cloud-manager`, built (or found up to date) by cargo in this test's target directory.
fn cloud_manager_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/plugin-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let target_dir = profile_dir.parent().expect("target").to_path_buf();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet", "-p", "aos-cloud-manager", "--bin", "aos-cloud-manager", "--target-dir"])
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    check(&mut build);
    let binary = profile_dir.join("aos-cloud-manager");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

/// The versions of [`PINNED`] in the test cloud's venv, and its base interpreter.
fn test_cloud_python() -> (PathBuf, Vec<String>) {
    let venv = osenv_state_dir().join("venv");
    let config = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (the test cloud's venv; run scripts/ensure-openstack.sh)",
            venv.join("pyvenv.cfg").display()
        )
    });
    let home = config
        .lines()
        .find_map(|line| line.split_once('=').filter(|(key, _)| key.trim() == "home").map(|(_, value)| value.trim()))
        .expect("pyvenv.cfg names its base interpreter (home)");
    let script =
        format!("import importlib.metadata as m\nfor name in {PINNED:?}: print(name + '==' + m.version(name))");
    let output = check(Command::new(venv.join("bin/python")).args(["-c", &script]));
    let pins = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    (PathBuf::from(home).join("python3"), pins)
}

/// A venv with the test cloud's client packages (cached across runs) and the plugin's wheel
/// built from this repository freshly installed: its `bin` directory.
fn plugin_venv() -> PathBuf {
    let (python, pins) = test_cloud_python();
    let key: String = pins
        .iter()
        .map(|pin| pin.replace("==", "-"))
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let venv = home.join(".cache/aos-cloud-manager").join(format!("aosclient-venv-{key}"));
    let ready = venv.join(".ready");
    if !ready.is_file() {
        let _ = std::fs::remove_dir_all(&venv);
        check(Command::new(&python).args(["-m", "venv"]).arg(&venv));
        check(
            Command::new(venv.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "setuptools>=64", "wheel"])
                .args(&pins),
        );
        std::fs::write(&ready, pins.join("\n")).expect("mark the venv ready");
    }
    // Build from a copy, so that setuptools' build/ and *.egg-info never land in the tree.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../client/python-aosclient");
    let work = tempdir("aosclient-build");
    let copy = work.join("src");
    copy_tree(&source, &copy);
    let wheels = work.join("wheels");
    check(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w"])
            .arg(&wheels)
            .arg(&copy),
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("the wheel directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "whl"))
        .expect("pip built a wheel");
    assert!(wheel.file_name().unwrap().to_string_lossy().starts_with("python_aosclient-"), "{}", wheel.display());
    check(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall"])
            .arg(&wheel),
    );
    let _ = std::fs::remove_dir_all(&work);
    venv.join("bin")
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// The package's sources (not caches or build output).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).unwrap_or_else(|error| panic!("{}: {error}", from.display())) {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            if name != "__pycache__" && name != "build" && !name.ends_with(".egg-info") {
                copy_tree(&path, &to.join(&name));
            }
        } else if name.ends_with(".py") || name == "pyproject.toml" || name == "README.md" {
            std::fs::copy(&path, to.join(&name)).expect("copy a source file");
        }
    }
}

/// `openstack` of the venv as `user` (of project `admin`), in the test's region, with none of
/// the caller's `OS_*` variables.
fn openstack(bin: &Path, region: &str, user: (&str, &str), args: &[&str]) -> Output {
    let admin = admin_settings();
    let mut command = Command::new(bin.join("openstack"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OS_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--os-auth-url", admin.auth_url.as_str(), "--os-identity-api-version", "3"])
        .args(["--os-username", user.0, "--os-password", user.1, "--os-project-name", &admin.project_name])
        .args(["--os-user-domain-name", "Default", "--os-project-domain-name", "Default"])
        .args(["--os-region-name", region, "--os-interface", "public"])
        .args(args);
    run(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_aos_lists_our_nodes_through_the_catalogue_refuses_a_reader_and_runs_db_list() -> anyhow::Result<()> {
    install_crypto_provider();
    let identity = IdentityClient::connect(admin_settings(), options()).await.expect("the test cloud's Keystone");
    let region = unique_name("aos-plugin-region");
    identity.create_region(&region).await.expect("create the test region");
    let mut cleanup = Cleanup { region: region.clone(), user_id: None };
    let project = identity.project_id("admin").await?;
    let reader_role = identity.role_id("reader").await?;
    let reader_name = unique_name("aos-plugin-reader");
    let reader_password = unique_name("pw");
    let reader_id = identity.create_user(&reader_name, &reader_password, &project).await?;
    cleanup.user_id = Some(reader_id.clone());
    identity.assign_project_role(&project, &reader_id, &reader_role).await?;

    // The API over a fresh database with three nodes, and a configuration file for the CLI.
    let database = TestDatabase::sqlite().await?;
    database.connect_migrated().await?.close().await?;
    let admin = admin_settings();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let ini = format!(
        "[database]\nurl = {}\n[keystone_authtoken]\nauth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\n\
         interface = public\nregion_name = {region}\n[api]\nhost = 127.0.0.1\nport = {}\n",
        config_database_url(&database),
        admin.auth_url,
        admin.username,
        admin.password.expose(),
        admin.project_name,
        address.port(),
    );
    let work = tempdir("aos-plugin");
    let config_file = work.join("cloud_manager.conf");
    std::fs::write(&config_file, &ini)?;
    let loaded = aos_config::load_from_str(&[("plugin.conf", &ini)]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let shutdown = aos_daemon::ShutdownToken::new();
    let context = aos_daemon::DaemonContext::connect(aos_api::ROLE, Arc::new(loaded.config), shutdown.clone()).await?;
    let observed: Vec<ObservedComputeHost> = ["plugin-node-1", "plugin-node-2", "plugin-node-3"]
        .iter()
        .map(|name| ObservedComputeHost::up_and_enabled(*name, None))
        .collect();
    aos_db::sync_nodes(&context.db, None, "test", &observed).await?;
    let server = tokio::spawn(aos_api::serve(listener, context));

    let (binary, bin) = tokio::task::spawn_blocking(|| (cloud_manager_binary(), plugin_venv())).await?;
    let cli = |args: &[&str]| {
        let mut command = Command::new(&binary);
        command.arg("--no-default-config-files").arg("--config-file").arg(&config_file).args(args);
        command
    };
    // The catalogue entry: the endpoints default to http://[api] host:[api] port, in our region.
    let registered = check(&mut cli(&["keystone", "register"]));
    let stdout = String::from_utf8_lossy(&registered.stdout).into_owned();
    assert!(stdout.contains(&format!("endpoint public: created http://127.0.0.1:{}", address.port())), "{stdout}");

    let admin_user = (admin.username.as_str(), admin.password.expose().as_str());
    let reader_user = (reader_name.as_str(), reader_password.as_str());
    let (bin, region) = (Arc::new(bin), Arc::new(region));
    let os = {
        let (bin, region) = (bin.clone(), region.clone());
        move |user: (String, String), args: Vec<&'static str>| {
            let (bin, region) = (bin.clone(), region.clone());
            tokio::task::spawn_blocking(move || openstack(&bin, &region, (&user.0, &user.1), &args))
        }
    };
    let owned = |user: (&str, &str)| (user.0.to_owned(), user.1.to_owned());

    // The admin lists our nodes: python-openstackclient found the API in the catalogue.
    let listed = os(owned(admin_user), vec!["aos", "node", "list", "-f", "json"]).await?;
    assert!(listed.status.success(), "{}", report(&listed));
    let nodes: Value = serde_json::from_slice(&listed.stdout)?;
    let names: Vec<&str> =
        nodes.as_array().expect("a JSON list").iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ["plugin-node-1", "plugin-node-2", "plugin-node-3"], "{nodes}");
    assert_eq!(nodes[0]["state"], "up", "{nodes}");

    // The reader reads, but the policy refuses it an action: 403 with the action's name.
    let shown = os(owned(reader_user), vec!["aos", "node", "show", "plugin-node-2", "-f", "json"]).await?;
    assert!(shown.status.success(), "{}", report(&shown));
    assert_eq!(serde_json::from_slice::<Value>(&shown.stdout)?["name"], "plugin-node-2");
    let refused = os(owned(reader_user), vec!["aos", "node", "maintenance", "set", "plugin-node-2"]).await?;
    assert!(!refused.status.success(), "{}", report(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("HTTP 403") && stderr.contains("cloud_manager:node:maintenance"), "{}", report(&refused));

    // The admin may.
    let set = os(owned(admin_user), vec!["aos", "node", "maintenance", "set", "plugin-node-2", "-f", "json"]).await?;
    assert!(set.status.success(), "{}", report(&set));
    let node: Value = serde_json::from_slice(&set.stdout)?;
    assert_eq!((node["state"].as_str(), node["maintenance"].as_bool()), (Some("maintenance"), Some(true)), "{node}");

    // The other families answer through the plugin too.
    let history = os(owned(admin_user), vec!["aos", "node", "history", "plugin-node-2", "-f", "json"]).await?;
    assert!(history.status.success(), "{}", report(&history));
    let events: Value = serde_json::from_slice(&history.stdout)?;
    assert!(events.as_array().expect("a list").iter().any(|event| event["to_state"] == "maintenance"), "{events}");
    for family in ["task", "power-device"] {
        let listed = os(owned(reader_user), vec!["aos", family, "list", "-f", "json"]).await?;
        assert!(listed.status.success(), "{}", report(&listed));
        assert_eq!(serde_json::from_slice::<Value>(&listed.stdout)?, serde_json::json!([]), "{}", report(&listed));
    }
    let power = os(owned(admin_user), vec!["aos", "power", "status", "plugin-node-1"]).await?;
    let stderr = String::from_utf8_lossy(&power.stderr);
    assert!(
        !power.status.success() && stderr.contains("HTTP 409") && stderr.contains("no power device"),
        "{}",
        report(&power)
    );

    // `aos db list` runs the local aos-cloud-manager with the given configuration.
    let listed = tokio::task::spawn_blocking({
        let (bin, binary, config_file) = (bin.clone(), binary.clone(), config_file.clone());
        move || {
            let mut command = Command::new(bin.join("openstack"));
            for (name, _) in std::env::vars() {
                if name.starts_with("OS_") {
                    command.env_remove(name);
                }
            }
            command
                .env("AOS_CLOUD_MANAGER", &binary)
                .args(["aos", "db", "list", "-n", "cloud_manager", "--no-default-config-files", "--config-file"])
                .arg(&config_file);
            run(&mut command)
        }
    })
    .await?;
    assert!(listed.status.success(), "{}", report(&listed));
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(stdout.contains("Module name: cloud_manager"), "{}", report(&listed));
    let latest = format!("Current version: {} (latest known: {})", aos_db::latest_version(), aos_db::latest_version());
    assert!(stdout.contains(&latest), "{}", report(&listed));

    shutdown.cancel();
    server.await??;
    let _ = std::fs::remove_dir_all(&work);
    drop(cleanup);
    Ok(())
}
