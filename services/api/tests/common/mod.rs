//! Helpers shared by the API tests against the real Keystone of the test cloud.

use aos_openstack::testing::{admin_settings, auth_url, install_crypto_provider, options, settings, unique_name};
use aos_openstack::{IdentityClient, IssuedToken};

/// A reader user of project `admin`, deleted on drop.
pub struct ReaderUser {
    pub user_id: String,
    pub name: String,
    pub password: String,
}

impl Drop for ReaderUser {
    fn drop(&mut self) {
        let user_id = self.user_id.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                match IdentityClient::connect(admin_settings(), options()).await {
                    Ok(identity) => {
                        if let Err(error) = identity.delete_user(&user_id).await {
                            eprintln!("could not delete test user {user_id}: {error}");
                        }
                    }
                    Err(error) => eprintln!("cleanup skipped: {error}"),
                }
            });
        })
        .join();
    }
}

pub async fn admin_identity() -> IdentityClient {
    install_crypto_provider();
    IdentityClient::connect(admin_settings(), options()).await.unwrap_or_else(|error| {
        panic!(
            "the test cloud's Keystone at {} is not usable ({error}); start it with scripts/ensure-openstack.sh",
            auth_url()
        )
    })
}

/// A new reader user named after `prefix`.
pub async fn create_reader(identity: &IdentityClient, prefix: &str) -> ReaderUser {
    let project = identity.project_id("admin").await.expect("project admin");
    let role = identity.role_id("reader").await.expect("role reader");
    let name = unique_name(prefix);
    let password = unique_name("pw");
    let user_id = identity.create_user(&name, &password, &project).await.expect("create the reader user");
    let user = ReaderUser { user_id, name, password };
    identity.assign_project_role(&project, &user.user_id, &role).await.expect("grant reader");
    user
}

pub async fn reader_token(identity: &IdentityClient, user: &ReaderUser) -> IssuedToken {
    identity.issue_token(&settings(&user.name, &user.password, "admin")).await.expect("reader token")
}
