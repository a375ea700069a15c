//! `keystone register` against the real Keystone of the test cloud: the service and its three
//! endpoints are created once, a second run changes nothing, a changed URL is updated in
//! place. The endpoints go to a region of the test's own (deleted afterwards with them), so a
//! real registration in RegionOne is never touched.

use aos_openstack::IdentityClient;
use aos_openstack::testing::{admin_settings, install_crypto_provider, options, unique_name};

use crate::support::{Backend, Fixture};

/// Removes the test region's endpoints (and the service, when the test created it), then the
/// region, also when the test fails.
struct CatalogueCleanup {
    region: String,
    delete_service: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Drop for CatalogueCleanup {
    fn drop(&mut self) {
        let region = self.region.clone();
        let service = self.delete_service.lock().map(|service| service.clone()).unwrap_or(None);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let Ok(identity) = IdentityClient::connect(admin_settings(), options()).await else { return };
                if let Ok(services) = identity.services_of_type("cloud-manager").await {
                    for service in services {
                        for endpoint in identity.endpoints_of_service(&service.id).await.unwrap_or_default() {
                            if endpoint.region_id.as_deref() == Some(region.as_str()) {
                                let _ = identity.delete_endpoint(&endpoint.id).await;
                            }
                        }
                    }
                }
                if let Some(service) = service {
                    let _ = identity.delete_service(&service).await;
                }
                if let Err(error) = identity.delete_region(&region).await {
                    eprintln!("could not delete test region {region}: {error}");
                }
            });
        })
        .join();
    }
}

fn keystone_section() -> String {
    let admin = admin_settings();
    format!(
        "[keystone_authtoken]\nauth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\ninterface = public\n",
        admin.auth_url,
        admin.username,
        admin.password.expose(),
        admin.project_name
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_register_creates_the_service_and_three_endpoints_idempotently() {
    install_crypto_provider();
    let identity = IdentityClient::connect(admin_settings(), options()).await.expect("the test cloud's Keystone");
    let region = unique_name("aos-test-region");
    identity.create_region(&region).await.expect("create the test region");
    let existed = !identity.services_of_type("cloud-manager").await.expect("list services").is_empty();
    let created_service = std::sync::Arc::new(std::sync::Mutex::new(None));
    let _cleanup = CatalogueCleanup { region: region.clone(), delete_service: created_service.clone() };
    let fixture = Fixture::new(Backend::Sqlite, &keystone_section()).await;

    let public = "http://127.0.0.1:19362";
    let internal = "http://127.0.0.2:19362";
    let run =
        fixture.run(&["keystone", "register", "--region", &region, "--public-url", public, "--internal-url", internal]);
    assert!(run.succeeded(), "{}", run.report());
    let services = identity.services_of_type("cloud-manager").await.expect("list services");
    let service = services.iter().find(|service| service.name == "cloud-manager").expect("the service exists");
    if !existed {
        *created_service.lock().unwrap() = Some(service.id.clone());
        assert!(run.stdout.contains("created"), "{}", run.report());
    }
    let mine = |endpoints: Vec<aos_openstack::EndpointRecord>| {
        let mut mine: Vec<(String, String)> = endpoints
            .into_iter()
            .filter(|endpoint| endpoint.region_id.as_deref() == Some(region.as_str()))
            .map(|endpoint| (endpoint.interface, endpoint.url))
            .collect();
        mine.sort();
        mine
    };
    let endpoints = mine(identity.endpoints_of_service(&service.id).await.unwrap());
    assert_eq!(
        endpoints,
        [
            ("admin".to_string(), internal.to_string()),
            ("internal".into(), internal.into()),
            ("public".into(), public.into())
        ],
        "the admin URL defaults to the internal one"
    );

    // Again: nothing changes.
    let run =
        fixture.run(&["keystone", "register", "--region", &region, "--public-url", public, "--internal-url", internal]);
    assert!(run.succeeded(), "{}", run.report());
    assert!(run.stdout.contains("service cloud-manager (type cloud-manager): exists"), "{}", run.report());
    assert_eq!(run.stdout.matches(": unchanged").count(), 3, "{}", run.report());
    assert_eq!(mine(identity.endpoints_of_service(&service.id).await.unwrap()), endpoints);

    // A new admin URL is updated in place, not added.
    let admin_url = "http://127.0.0.3:19362";
    let run = fixture.run(&[
        "keystone",
        "register",
        "--region",
        &region,
        "--public-url",
        public,
        "--internal-url",
        internal,
        "--admin-url",
        admin_url,
    ]);
    assert!(run.succeeded(), "{}", run.report());
    assert!(run.stdout.contains(&format!("endpoint admin: updated {internal} -> {admin_url}")), "{}", run.report());
    let endpoints = mine(identity.endpoints_of_service(&service.id).await.unwrap());
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    assert!(endpoints.contains(&("admin".to_string(), admin_url.to_string())));

    // A URL that is not http(s) is refused naming the option.
    let run = fixture.run(&["keystone", "register", "--region", &region, "--public-url", "ftp://x"]);
    assert_eq!(run.code, Some(2), "{}", run.report());
    assert!(run.stderr.contains("--public-url"), "{}", run.report());
}
