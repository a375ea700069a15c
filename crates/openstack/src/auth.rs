//! Keystone v3: the password authentication request, the token it returns, the service
//! catalogue inside it, and when a token is due for renewal.
//!
//! Everything here is pure (no I/O) so it can be unit-tested from captured responses; the
//! client (`client.rs`) does the HTTP.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;

use aos_config::{EndpointInterface, Secret};

use crate::error::OpenStackError;
use crate::settings::AuthSettings;
use crate::time::parse_timestamp;

/// The body of `POST /v3/auth/tokens` for password authentication scoped to a project.
/// Contains the password: never log it.
pub(crate) fn password_auth_body(settings: &AuthSettings) -> serde_json::Value {
    json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": settings.username,
                        "domain": { "name": settings.user_domain_name },
                        "password": settings.password.expose(),
                    }
                }
            },
            "scope": {
                "project": {
                    "name": settings.project_name,
                    "domain": { "name": settings.project_domain_name },
                }
            }
        }
    })
}

/// `auth_url` with `/v3` ensured and `/auth/tokens` appended.
pub(crate) fn tokens_url(auth_url: &url::Url) -> String {
    let base = auth_url.as_str().trim_end_matches('/');
    if base.ends_with("/v3") { format!("{base}/auth/tokens") } else { format!("{base}/v3/auth/tokens") }
}

/// A project-scoped token and what came with it.
pub(crate) struct Session {
    pub token: Secret<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub catalog: Catalog,
    /// Increases with every authentication, so that a 401 invalidates only the token that
    /// was refused, not a newer one another task obtained meanwhile.
    pub generation: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: String,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

/// Parses Keystone's answer to `POST /v3/auth/tokens` (the token itself comes in the
/// `X-Subject-Token` header). `now` stands in for a missing `issued_at`.
pub(crate) fn parse_token_response(
    token: String,
    body: &[u8],
    now: DateTime<Utc>,
    generation: u64,
) -> Result<Session, String> {
    let response: TokenResponse = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    let expires_at = parse_timestamp(&response.token.expires_at)
        .ok_or_else(|| format!("unreadable expires_at {:?}", response.token.expires_at))?;
    let issued_at = response.token.issued_at.as_deref().and_then(parse_timestamp).unwrap_or(now);
    Ok(Session {
        token: Secret::new(token),
        issued_at,
        expires_at,
        catalog: Catalog { services: response.token.catalog },
        generation,
    })
}

/// Whether a token issued at `issued_at` and expiring at `expires_at` should be replaced
/// before use at `now`: once less than `margin` remains — but never more than half the
/// token's lifetime early, so a short-lived token is not renewed on every call.
pub(crate) fn needs_renewal(
    now: DateTime<Utc>,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    margin: std::time::Duration,
) -> bool {
    let lifetime = (expires_at - issued_at).max(TimeDelta::zero());
    let margin = TimeDelta::from_std(margin).unwrap_or(TimeDelta::MAX).min(lifetime / 2);
    now + margin >= expires_at
}

/// The service catalogue of a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    services: Vec<CatalogService>,
}

#[derive(Debug, Clone, Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region_id: Option<String>,
    /// Keystone's older name for the region; still sent next to `region_id`.
    #[serde(default)]
    region: Option<String>,
    url: String,
}

impl Catalog {
    /// The URL of the endpoint of `service_type` on `interface` in `region` (empty: any
    /// region). Endpoints are matched on `region_id` or the legacy `region` field.
    pub(crate) fn endpoint(
        &self,
        service_type: &str,
        interface: EndpointInterface,
        region: &str,
    ) -> Result<url::Url, OpenStackError> {
        let not_found = || OpenStackError::EndpointNotFound {
            service_type: service_type.to_string(),
            interface: interface.as_str().to_string(),
            region: region.to_string(),
        };
        let endpoint = self
            .services
            .iter()
            .filter(|service| service.service_type == service_type)
            .flat_map(|service| service.endpoints.iter())
            .find(|endpoint| {
                endpoint.interface == interface.as_str()
                    && (region.is_empty()
                        || endpoint.region_id.as_deref() == Some(region)
                        || endpoint.region.as_deref() == Some(region))
            })
            .ok_or_else(not_found)?;
        endpoint.url.parse().map_err(|_| not_found())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TOKEN_FIXTURE: &[u8] = include_bytes!("../fixtures/keystone_token.json");

    fn session_from_fixture() -> Session {
        parse_token_response("gAAAAtoken".into(), TOKEN_FIXTURE, Utc::now(), 1).unwrap()
    }

    /// The captured catalogue with a second region whose endpoints differ, as in a
    /// multi-region cloud.
    fn two_region_catalog() -> Catalog {
        let mut body: serde_json::Value = serde_json::from_slice(TOKEN_FIXTURE).unwrap();
        for service in body["token"]["catalog"].as_array_mut().unwrap() {
            let endpoints = service["endpoints"].as_array_mut().unwrap();
            let mut other_region: Vec<serde_json::Value> = endpoints.clone();
            for endpoint in &mut other_region {
                endpoint["region_id"] = json!("RegionTwo");
                endpoint["region"] = json!("RegionTwo");
                let url = endpoint["url"].as_str().unwrap().replace("127.0.0.1", "10.2.0.1");
                endpoint["url"] = json!(url);
            }
            endpoints.splice(0..0, other_region);
        }
        let body = serde_json::to_vec(&body).unwrap();
        parse_token_response("t".into(), &body, Utc::now(), 1).unwrap().catalog
    }

    #[test]
    fn the_token_response_gives_expiry_issue_time_and_catalogue() {
        let session = session_from_fixture();
        assert_eq!(session.expires_at - session.issued_at, TimeDelta::hours(1));
        assert_eq!(session.expires_at.to_rfc3339(), "2026-11-23T15:05:00+00:00");
        let compute = session.catalog.endpoint("compute", EndpointInterface::Public, "RegionOne").unwrap();
        assert_eq!(compute.as_str(), "http://127.0.0.1:8774/v2.1");
        let placement = session.catalog.endpoint("placement", EndpointInterface::Internal, "RegionOne").unwrap();
        assert_eq!(placement.as_str(), "http://127.0.0.1:8778/");
    }

    #[test]
    fn catalogue_selection_honours_the_region() {
        let catalog = two_region_catalog();
        let one = catalog.endpoint("compute", EndpointInterface::Internal, "RegionOne").unwrap();
        let two = catalog.endpoint("compute", EndpointInterface::Internal, "RegionTwo").unwrap();
        assert_eq!(one.host_str(), Some("127.0.0.1"));
        assert_eq!(two.host_str(), Some("10.2.0.1"));
    }

    #[test]
    fn catalogue_selection_honours_the_interface() {
        let mut body: serde_json::Value = serde_json::from_slice(TOKEN_FIXTURE).unwrap();
        for service in body["token"]["catalog"].as_array_mut().unwrap() {
            for endpoint in service["endpoints"].as_array_mut().unwrap() {
                let interface = endpoint["interface"].as_str().unwrap().to_string();
                let url = endpoint["url"].as_str().unwrap().replace("127.0.0.1", &format!("{interface}.example"));
                endpoint["url"] = json!(url);
            }
        }
        let catalog =
            parse_token_response("t".into(), &serde_json::to_vec(&body).unwrap(), Utc::now(), 1).unwrap().catalog;
        for interface in [EndpointInterface::Public, EndpointInterface::Internal, EndpointInterface::Admin] {
            let url = catalog.endpoint("placement", interface, "RegionOne").unwrap();
            assert_eq!(url.host_str(), Some(format!("{}.example", interface.as_str()).as_str()));
        }
    }

    #[test]
    fn an_empty_region_accepts_any_region() {
        let url = session_from_fixture().catalog.endpoint("compute", EndpointInterface::Admin, "").unwrap();
        assert_eq!(url.port(), Some(8774));
    }

    #[test]
    fn a_missing_service_or_region_is_endpoint_not_found_naming_what_was_asked() {
        let catalog = session_from_fixture().catalog;
        let error = catalog.endpoint("volumev3", EndpointInterface::Public, "RegionOne").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no 'volumev3' endpoint with interface 'public' in region 'RegionOne' in the Keystone catalogue"
        );
        assert!(matches!(
            catalog.endpoint("compute", EndpointInterface::Public, "Elsewhere"),
            Err(OpenStackError::EndpointNotFound { .. })
        ));
    }

    #[test]
    fn a_token_is_renewed_a_margin_before_it_expires() {
        let issued = "2026-11-23T14:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let expires = issued + TimeDelta::hours(1);
        let margin = Duration::from_secs(300);
        assert!(!needs_renewal(issued, issued, expires, margin));
        assert!(!needs_renewal(expires - TimeDelta::seconds(301), issued, expires, margin));
        assert!(needs_renewal(expires - TimeDelta::seconds(300), issued, expires, margin));
        assert!(needs_renewal(expires + TimeDelta::seconds(1), issued, expires, margin));
    }

    #[test]
    fn a_short_lived_token_is_renewed_at_half_its_lifetime_not_on_every_call() {
        let issued = "2026-11-23T14:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let expires = issued + TimeDelta::minutes(2);
        let margin = Duration::from_secs(300);
        assert!(!needs_renewal(issued + TimeDelta::seconds(59), issued, expires, margin));
        assert!(needs_renewal(issued + TimeDelta::seconds(60), issued, expires, margin));
    }

    #[test]
    fn the_password_request_is_scoped_to_the_project_and_the_url_gets_v3() {
        let settings = AuthSettings {
            auth_url: "http://keystone.example:5000".parse().unwrap(),
            username: "aos".into(),
            password: Secret::new("pw".into()),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            region_name: "RegionOne".into(),
            interface: EndpointInterface::Internal,
        };
        let body = password_auth_body(&settings);
        assert_eq!(body["auth"]["scope"]["project"]["name"], "service");
        assert_eq!(body["auth"]["identity"]["password"]["user"]["name"], "aos");
        assert_eq!(tokens_url(&settings.auth_url), "http://keystone.example:5000/v3/auth/tokens");
        let with_v3: url::Url = "http://keystone.example:5000/v3/".parse().unwrap();
        assert_eq!(tokens_url(&with_v3), "http://keystone.example:5000/v3/auth/tokens");
    }
}
