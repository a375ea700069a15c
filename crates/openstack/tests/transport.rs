//! Transport failures that need no cloud: nothing listening, and a peer that accepts the
//! connection and never answers (what a hung API behind a load balancer looks like).

use std::time::Duration;

use aos_openstack::{AuthSettings, ClientOptions, EndpointInterface, OpenStackClient, OpenStackError, Secret};

fn settings_for(auth_url: &str) -> AuthSettings {
    AuthSettings {
        auth_url: auth_url.parse().unwrap(),
        username: "admin".into(),
        password: Secret::new("pw-transport-9d1c".into()),
        project_name: "admin".into(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
        region_name: "RegionOne".into(),
        interface: EndpointInterface::Public,
    }
}

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error_after_the_retries() {
    install_crypto_provider();
    // Bind and drop: a loopback port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = ClientOptions { retry_base_delay: Duration::from_millis(10), ..ClientOptions::default() };
    let error =
        OpenStackClient::connect_with(settings_for(&format!("http://127.0.0.1:{port}/v3")), options).await.unwrap_err();
    assert!(matches!(error, OpenStackError::Connect { .. }), "{error:?}");
    assert!(error.is_transient());
    let printed = format!("{error} {error:?}");
    assert!(printed.contains("keystone POST /auth/tokens"), "{printed}");
    assert!(!printed.contains("pw-transport-9d1c"), "{printed}");
}

#[tokio::test]
async fn a_peer_that_accepts_and_never_answers_times_out() {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and hold them open without a byte of answer.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        attempts: 2,
        retry_base_delay: Duration::from_millis(10),
        ..ClientOptions::default()
    };
    let error =
        OpenStackClient::connect_with(settings_for(&format!("http://127.0.0.1:{port}/v3")), options).await.unwrap_err();
    assert!(matches!(error, OpenStackError::Timeout { .. }), "{error:?}");
    holder.abort();
}
