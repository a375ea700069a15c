//! What the client needs to know before its first call: whose credentials, which endpoints,
//! how patient to be.
//!
//! `AuthSettings` mirrors `[keystone_authtoken]` (and converts from its validated section);
//! `ClientOptions` holds the transport policy (timeouts, retries, token renewal margin), with
//! defaults meant for a control loop that polls every few seconds.

use std::time::Duration;

use aos_config::{EndpointInterface, KeystoneAuthtokenSection, Secret};

/// Keystone v3 password credentials scoped to a project, and how to pick endpoints from the
/// catalogue. `Debug` prints the password as `***`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Keystone's identity endpoint, e.g. `http://127.0.0.1:5000/v3`. A URL without the `/v3`
    /// suffix gets it appended.
    pub auth_url: url::Url,
    pub username: String,
    pub password: Secret<String>,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// Region of the Nova and Placement endpoints; empty accepts any region.
    pub region_name: String,
    /// Which catalogue endpoint (public, internal, admin) Nova and Placement are reached on.
    pub interface: EndpointInterface,
}

impl From<&KeystoneAuthtokenSection> for AuthSettings {
    fn from(section: &KeystoneAuthtokenSection) -> Self {
        Self {
            auth_url: section.auth_url.clone(),
            username: section.username.clone(),
            password: section.password.clone(),
            project_name: section.project_name.clone(),
            user_domain_name: section.user_domain_name.clone(),
            project_domain_name: section.project_domain_name.clone(),
            region_name: section.region_name.clone(),
            interface: section.interface,
        }
    }
}

/// Transport policy. The defaults suit the daemons; tests shorten the delays.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, from sending to the last byte of the answer. A
    /// peer that accepts the connection and never answers fails after this.
    pub request_timeout: Duration,
    /// Tries per request for failures that may be transient (connection refused or reset,
    /// 5xx, timeouts): 3 means one first try and at most two retries. Non-idempotent
    /// requests (POST actions) are retried only when the request never left (connect error).
    pub attempts: u32,
    /// Delay before the first retry; doubled before each further one.
    pub retry_base_delay: Duration,
    /// A token is renewed this long before it expires (at most half its lifetime).
    pub token_renewal_margin: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            attempts: 3,
            retry_base_delay: Duration::from_millis(500),
            token_renewal_margin: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_the_settings_hides_the_password() {
        let settings = AuthSettings {
            auth_url: "http://127.0.0.1:5000/v3".parse().unwrap(),
            username: "admin".into(),
            password: Secret::new("pw-very-secret".into()),
            project_name: "admin".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            region_name: "RegionOne".into(),
            interface: EndpointInterface::Public,
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("pw-very-secret"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }
}
