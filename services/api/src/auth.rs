//! Keystone token validation for the API, as keystonemiddleware's `auth_token` does it for
//! Python services: the user's `X-Auth-Token` is sent to Keystone (`GET /v3/auth/tokens`
//! with our service token) and the answer — user, project, roles, expiry — is cached.
//!
//! The cache (moka, bounded by `[api] token_cache_size`, least recently used out first) is
//! keyed by the SHA-256 of the token, so the process does not hold users' tokens. An entry
//! lives `[api] token_cache_time` but never past the token's own expiry; a token Keystone
//! refused is cached as refused for the same time (a refused token never becomes valid, and a
//! client retrying a bad token must not hammer Keystone). The price is keystonemiddleware's:
//! a revoked token keeps working for at most `token_cache_time`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_openstack::{IdentityClient, OpenStackError, TokenInfo};
use moka::Expiry;
use moka::sync::Cache;

use crate::error::ApiError;

/// What the cache remembers of a token.
#[derive(Debug, Clone)]
enum Verdict {
    Valid(Arc<TokenInfo>),
    Refused,
}

struct UntilExpiry {
    cache_time: Duration,
}

impl Expiry<[u8; 32], Verdict> for UntilExpiry {
    fn expire_after_create(&self, _key: &[u8; 32], verdict: &Verdict, _created_at: Instant) -> Option<Duration> {
        match verdict {
            Verdict::Valid(info) => {
                let remaining = (info.expires_at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
                Some(self.cache_time.min(remaining))
            }
            Verdict::Refused => Some(self.cache_time),
        }
    }
}

/// Validates tokens with Keystone behind a bounded cache. Cheap to clone.
#[derive(Clone)]
pub struct TokenValidator {
    identity: IdentityClient,
    cache: Cache<[u8; 32], Verdict>,
    cache_time: Duration,
}

impl TokenValidator {
    pub fn new(identity: IdentityClient, capacity: u64, cache_time: Duration) -> Self {
        let cache = Cache::builder().max_capacity(capacity).expire_after(UntilExpiry { cache_time }).build();
        Self { identity, cache, cache_time }
    }

    pub fn identity(&self) -> &IdentityClient {
        &self.identity
    }

    /// The token's owner and roles; 401 when Keystone refuses it or it expired, 503 when
    /// Keystone cannot be asked.
    pub async fn validate(&self, token: &str) -> Result<Arc<TokenInfo>, ApiError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let verdict = match self.cache.get(&key) {
            Some(verdict) => verdict,
            None => {
                let verdict = match self.identity.validate_token(token).await {
                    Ok(Some(info)) => Verdict::Valid(Arc::new(info)),
                    Ok(None) => Verdict::Refused,
                    Err(error) => return Err(unavailable(error)),
                };
                if !self.cache_time.is_zero() {
                    self.cache.insert(key, verdict.clone());
                }
                verdict
            }
        };
        match verdict {
            Verdict::Valid(info) if info.expires_at > chrono::Utc::now() => Ok(info),
            Verdict::Valid(_) => Err(ApiError::Unauthorized("the token has expired".into())),
            Verdict::Refused => Err(ApiError::Unauthorized(
                "the token is not valid (unknown, expired or revoked); get a new one from Keystone".into(),
            )),
        }
    }
}

fn unavailable(error: OpenStackError) -> ApiError {
    tracing::warn!(%error, "cannot validate a token with Keystone");
    ApiError::ServiceUnavailable(format!("cannot validate the token with Keystone: {error}"))
}
