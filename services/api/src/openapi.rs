//! The OpenAPI document of `/v1`, derived by utoipa from the handlers' `#[utoipa::path]`
//! attributes and the request/response types, served unauthenticated at `/v1/openapi.json`
//! (as version discovery is). `services/api/openapi.json` is the shipped copy; a test fails
//! when it is not what the code produces (`AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-api`
//! rewrites it).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{balancing, drs};
use crate::routes::{nodes, resources, settings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aos-cloud-manager API",
        description = "Compute HA, balancing and power management for OpenStack. Every /v1 resource needs a \
                       Keystone token in X-Auth-Token; errors are {\"<fault>\": {\"code\", \"message\"}}; every \
                       answer carries x-openstack-request-id.",
        version = "1.0"
    ),
    paths(
        nodes::list,
        nodes::show,
        nodes::history,
        nodes::power_status,
        nodes::action,
        resources::power_devices,
        resources::power_device,
        resources::reserve_bindings,
        resources::storages,
        resources::tasks,
        resources::task,
        resources::events,
        resources::alarms,
        settings::show,
        balancing::preview,
        balancing::run,
        drs::create_audit,
        drs::list_audits,
        drs::show_audit,
        drs::show_plan,
        drs::apply_plan,
        drs::cancel_plan,
    ),
    components(schemas(
        nodes::NodeView,
        nodes::NodeAction,
        nodes::EvacuateArgs,
        nodes::MaintenanceArgs,
        nodes::EvacuationArgs,
        nodes::PowerArgs,
        nodes::PowerVerb,
        settings::SettingView,
        balancing::BalancingRunRequest,
        drs::AuditRequest,
        drs::DrsSource,
        crate::error::ErrorBody,
        crate::error::Fault,
    )),
    modifiers(&KeystoneToken),
    security(("keystone_token" = []))
)]
pub struct ApiDoc;

struct KeystoneToken;

impl Modify for KeystoneToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "keystone_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
    }
}

/// The document as served and shipped (pretty-printed, trailing newline).
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut text = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("AOS_REGENERATE_EXAMPLES").is_some() {
            std::fs::write(path, super::document()).unwrap();
        }
        let shipped = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            shipped == super::document(),
            "services/api/openapi.json is not what the code generates: run AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-api"
        );
    }

    #[test]
    fn the_document_lists_every_v1_route() {
        let document: serde_json::Value = serde_json::from_str(super::document()).unwrap();
        for path in ["/v1/nodes", "/v1/nodes/{name}", "/v1/nodes/{name}/action", "/v1/tasks/{id}", "/v1/alarms"] {
            assert!(document["paths"][path].is_object(), "{path} missing");
        }
    }
}
