//! `api`: requests per second and latency of `GET /v1/nodes` through the whole API stack —
//! request id, authentication with a cached Keystone token, policy, the paged query, JSON —
//! on loopback.
//!
//! Set-up: a fresh SQLite database (or MariaDB, `--backend mysql`) with `--nodes` nodes (`aos_db::sync_nodes`, as
//! node sync writes them); the API served in this process on 127.0.0.1 port 0 with
//! `[keystone_authtoken]` pointing at the real test cloud's Keystone; an admin token issued
//! by that Keystone and validated once (the first request), then served from the token cache
//! for the whole run. Load: `--connections` keep-alive HTTP/1.1 connections, each sending
//! its next request when the previous answer is read (closed loop), for `--seconds`, once per
//! page size in `--limits` (0 = no `limit`, i.e. `[api] max_limit`, 1000 = every node).
//! The client is a minimal HTTP/1.1 writer/reader over `TcpStream` so that the client costs
//! little of the two cores it shares with the server. Headline: req/s at the first limit.
//! Identical lists are answered from the API's short-lived snapshot (docs/adr/0013-api.md);
//! `--no-cache` sends `Cache-Control: no-cache` so that every request queries and serializes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aos_db::ObservedComputeHost;
use aos_db::testing::TestDatabase;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Nodes in the database.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load per page size.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Page sizes to measure (`limit`); 0 sends no limit (the whole list up to max_limit).
    #[arg(long, value_delimiter = ',', default_value = "50,0")]
    limits: Vec<u64>,
    /// The database: a SQLite file (the single-node default) or MariaDB (`AOS_TEST_MYSQL_URL`,
    /// default mysql://root@127.0.0.1:3306, a fresh database dropped at the end).
    #[arg(long, value_enum, default_value_t = ApiBackend::Sqlite)]
    backend: ApiBackend,
    /// Send `Cache-Control: no-cache`: every request reads the database (no list snapshot).
    #[arg(long)]
    no_cache: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiBackend {
    Sqlite,
    Mysql,
}

pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: ApiArgs) -> anyhow::Result<()> {
    aos_openstack::testing::install_crypto_provider();
    let database = match args.backend {
        ApiBackend::Sqlite => TestDatabase::sqlite().await?,
        ApiBackend::Mysql => TestDatabase::mysql().await?,
    };
    database.connect_migrated().await?.close().await?;
    let admin = aos_openstack::testing::admin_settings();
    let ini = format!(
        "[database]\nurl = {}\n[keystone_authtoken]\nauth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\n\
         interface = public\n[api]\nmax_limit = 1000\n",
        aos_testkit_url(&database),
        admin.auth_url,
        admin.username,
        admin.password.expose(),
        admin.project_name,
    );
    let loaded = aos_config::load_from_str(&[("bench.conf", &ini)]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let shutdown = aos_daemon::ShutdownToken::new();
    let context = aos_daemon::DaemonContext::connect("api", Arc::new(loaded.config), shutdown.clone()).await?;
    let observed: Vec<ObservedComputeHost> = (0..args.nodes)
        .map(|index| ObservedComputeHost::up_and_enabled(format!("bench-node-{index:05}"), None))
        .collect();
    aos_db::sync_nodes(&context.db, None, "bench", &observed).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(aos_api::serve(listener, context));

    let identity =
        aos_openstack::IdentityClient::connect(admin.clone(), aos_openstack::testing::options()).await.with_context(
            || format!("the test cloud's Keystone at {} is needed (scripts/ensure-openstack.sh)", admin.auth_url),
        )?;
    let token = identity.issue_token(&admin).await?.token.expose().clone();

    println!(
        "api: GET /v1/nodes, {} nodes ({}), {} connections, {} s per page size, token validated once by Keystone then cached, {}",
        args.nodes,
        if args.backend == ApiBackend::Sqlite { "SQLite" } else { "MariaDB" },
        args.connections,
        args.seconds,
        if args.no_cache { "Cache-Control: no-cache (every request queries)" } else { "list snapshots allowed" },
    );
    let extra = if args.no_cache { "Cache-Control: no-cache\r\n" } else { "" };
    let mut headline = None;
    for &limit in &args.limits {
        let path = if limit == 0 { "/v1/nodes".to_string() } else { format!("/v1/nodes?limit={limit}") };
        // Warm-up: validates the token (the only Keystone call) and fills the pools.
        let (status, body_len) = one_request(address, &path, &token, extra).await?;
        if status != 200 {
            bail!("GET {path} answered {status}");
        }
        let (count, mut latencies, elapsed) =
            load(address, &path, &token, extra, args.connections, args.seconds).await?;
        latencies.sort_unstable();
        let rate = count as f64 / elapsed.as_secs_f64();
        let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "  {path:<22} {rate:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({count} requests, {body_len} bytes each)",
            percentile(0.50) as f64 / 1000.0,
            percentile(0.99) as f64 / 1000.0,
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        headline.get_or_insert((path, rate, percentile(0.99)));
    }
    shutdown.cancel();
    server.await??;
    if let Some((path, rate, p99)) = headline {
        println!("headline: {rate:.0} req/s GET {path} (p99 {:.2} ms)", p99 as f64 / 1000.0);
    }
    Ok(())
}

/// The configuration's spelling of the test database's URL (as an operator writes it).
fn aos_testkit_url(database: &TestDatabase) -> String {
    if let Some(rest) = database.url().strip_prefix("mysql://") {
        return format!("mysql+pymysql://{rest}?charset=utf8");
    }
    let path = database.url().trim_start_matches("sqlite://");
    format!("sqlite:///{}", path.split('?').next().unwrap_or(path))
}

/// `connections` closed-loop clients for `seconds`: requests done, latencies in µs, time.
async fn load(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    extra: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(usize, Vec<u32>, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..connections {
        let request = request_bytes(path, token, extra);
        clients.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let mut buffer = Vec::with_capacity(64 * 1024);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                stream.write_all(&request).await?;
                let status = read_response(&mut stream, &mut buffer).await?.0;
                if status != 200 {
                    bail!("answered {status}");
                }
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    Ok((all.len(), all, started.elapsed()))
}

async fn one_request(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    extra: &str,
) -> anyhow::Result<(u16, usize)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(&request_bytes(path, token, extra)).await?;
    let mut buffer = Vec::new();
    read_response(&mut stream, &mut buffer).await
}

/// `extra`: more header lines, each ending in CRLF.
fn request_bytes(path: &str, token: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {token}\r\nAccept: application/json\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response with a Content-Length body (what axum sends for JSON):
/// `(status, body length)`. Reads straight into `buffer` (no intermediate copy: the client
/// shares the cores with the server).
async fn read_response(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<(u16, usize)> {
    buffer.clear();
    let mut scanned: usize = 0;
    loop {
        // Only the new bytes (and the three before them) can complete the head's end.
        let from = scanned.saturating_sub(3);
        if let Some(at) = buffer[from..].windows(4).position(|window| window == b"\r\n\r\n") {
            let end = from + at;
            let head = std::str::from_utf8(&buffer[..end]).context("response head")?;
            let status: u16 = head.split(' ').nth(1).and_then(|code| code.parse().ok()).context("status line")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .context("no content-length")?;
            let total = end + 4 + length;
            buffer.reserve(total.saturating_sub(buffer.len()));
            while buffer.len() < total {
                if stream.read_buf(buffer).await? == 0 {
                    bail!("connection closed mid-body");
                }
            }
            return Ok((status, length));
        }
        scanned = buffer.len();
        buffer.reserve(64 * 1024);
        if stream.read_buf(buffer).await? == 0 {
            bail!("connection closed before an answer");
        }
    }
}
