//! `all-in-one`: the five roles in one process, answering HTTP, stopping by itself.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Backend, Fixture, on_both_backends};

/// How long the API gets to answer after the process starts.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long the process gets to stop by itself once `--run-for` has elapsed.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Kills the child if the test fails before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// `GET path` over a plain HTTP/1.1 connection: the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_owned()))
}

async fn all_in_one_serves_the_api_and_stops_by_itself_after_run_for(backend: Backend) {
    // On SQLite the database is the default one in --data-dir; on MariaDB it is the
    // configured [database] url.
    let fixture = Fixture::new(backend, "").await;
    let config = match backend {
        Backend::MySql => fixture.config.clone(),
        Backend::Sqlite => {
            let path = fixture.directory.path().join("empty.conf");
            std::fs::write(&path, "").unwrap();
            path
        }
    };
    let data_dir = fixture.directory.path().join("data");
    let log = fixture.directory.path().join("all-in-one.log");
    let port = free_port();
    let child = Command::new(BIN)
        .arg("--no-default-config-files")
        .arg("--config-file")
        .arg(&config)
        .args(["all-in-one", "--data-dir"])
        .arg(&data_dir)
        .args(["--api-port", &port.to_string(), "--run-for", "3"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start all-in-one");
    let mut child = ChildGuard(child);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();

    let started = Instant::now();
    let healthz = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("all-in-one exited ({status}) before its API answered:\n{}", output());
        }
        if let Ok(response) = http_get(port, "/healthz") {
            break response;
        }
        assert!(started.elapsed() < STARTUP_DEADLINE, "the API did not answer on port {port}:\n{}", output());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(healthz.0, 200, "/healthz: {}\n{}", healthz.1, output());
    let (status, body) = http_get(port, "/").expect("GET /");
    assert_eq!(status, 200, "GET /: {body}");
    let document: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"));
    let versions = document["versions"].as_array().unwrap_or_else(|| panic!("no versions list: {body}"));
    assert!(!versions.is_empty(), "{body}");

    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(stopped.elapsed() < EXIT_DEADLINE, "all-in-one did not stop after --run-for:\n{}", output());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "all-in-one exited with {status}:\n{}", output());

    match backend {
        Backend::Sqlite => assert!(data_dir.join("cloud_manager.sqlite").is_file(), "no database in --data-dir"),
        Backend::MySql => assert!(!data_dir.exists(), "--data-dir is not used when [database] url is set"),
    }
    // All-in-one migrates its database itself.
    if backend == Backend::MySql {
        assert_eq!(fixture.current_version().await, aos_db::latest_version());
    }
    fixture.cleanup().await;
}

on_both_backends!(all_in_one_serves_the_api_and_stops_by_itself_after_run_for);
