//! How fast the agent's heartbeat notices a dead host compared with Nova's own
//! `service_down_time`, on the real test cloud: a nova-compute of the test's own and a node
//! agent named like it die together (SIGKILL of both, as when the host loses power). The test
//! asserts that both notice, and prints the two delays (a measurement, not an assertion).

mod common;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_openstack::ServiceState;
use aos_openstack::testing::{
    admin_client, compute_service, compute_sh, remove_own_compute, start_own_compute, unique_name,
};
use aos_testkit::{Scratch, testing::TestDatabase};
use common::TestVhost;

const INTERVAL_SECONDS: u64 = 1;
const STALE_AFTER_SECONDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_heartbeats_notice_a_dead_host_and_so_does_nova_each_at_its_own_pace() -> anyhow::Result<()> {
    aos_openstack::testing::install_crypto_provider();
    let client = admin_client().await;
    let database = TestDatabase::mysql().await?;
    let db = database.connect_migrated().await?;
    let mut vhost = TestVhost::create().await?;
    let host = unique_name("aos-agent-dead");
    vhost.add_nodes(&[&host]).await?;
    let scratch = Scratch::new()?;
    let mut controller = common::spawn_controller(&scratch, &database, &vhost, STALE_AFTER_SECONDS)?;
    let mut node = common::spawn_node(&scratch, &vhost, &host, INTERVAL_SECONDS, None)?;
    start_own_compute(&client, &host).await;
    aos_testkit::wait_until(Duration::from_secs(60), "the node's heartbeat", || async {
        Ok(aos_db::agent_liveness(&db, chrono::Utc::now()).await?.get(&host).copied().filter(|alive| *alive))
    })
    .await
    .with_context(|| controller.log())?;

    // The host dies: its nova-compute and its agent at the same moment.
    let died = Instant::now();
    node.start_kill()?;
    compute_sh("kill", &host);
    let (mut agent_silent, mut nova_down) = (None, None);
    while agent_silent.is_none() || nova_down.is_none() {
        anyhow::ensure!(died.elapsed() < Duration::from_secs(180), "neither signal within 180 s");
        if agent_silent.is_none() && aos_db::agent_liveness(&db, chrono::Utc::now()).await?.get(&host) == Some(&false) {
            agent_silent = Some(died.elapsed());
        }
        if nova_down.is_none()
            && compute_service(&client, &host).await.is_some_and(|service| service.state == ServiceState::Down)
        {
            nova_down = Some(died.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (agent_silent, nova_down) = (agent_silent.unwrap_or_default(), nova_down.unwrap_or_default());
    println!(
        "dead host noticed: agent heartbeat stale after {:.1} s (heartbeat_interval {INTERVAL_SECONDS} s, \
         heartbeat_stale_after {STALE_AFTER_SECONDS} s); Nova reported nova-compute down after {:.1} s \
         (test cloud: report_interval 2 s, service_down_time 10 s; Nova's defaults are 10 s / 60 s)",
        agent_silent.as_secs_f64(),
        nova_down.as_secs_f64(),
    );

    let _ = node.wait().await;
    remove_own_compute(&client, &host).await;
    controller.sigterm()?;
    controller.wait_exit(Duration::from_secs(30)).await?;
    db.close().await?;
    database.cleanup().await;
    Ok(())
}
