//! Client authentication at the handshake: a JWT from `?token=` (browsers
//! cannot set headers on a WebSocket) or `Authorization: Bearer`.
//!
//! HS256 with a shared secret today; `Authenticator` holds a key and a
//! validation, so RS256 keys or a JWKS set slot in as other constructors.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use switchboard_schemas::ids::validate_id;
use thiserror::Error;

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Display name shown to others; the user id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
}

/// What an admin token must say: `admin: true` (the admin API's claim;
/// client tokens never carry it, and the dev token endpoint never signs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminClaims {
    /// Who is acting (recorded as the command's `issued_by`).
    pub sub: String,
    #[serde(default)]
    pub admin: bool,
    pub exp: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: pass ?token= or an Authorization: Bearer header")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token does not carry the `admin: true` claim")]
    NotAdmin,
}

#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

/// Longest display name kept from a token.
const MAX_NAME_LEN: usize = 64;

impl Authenticator {
    /// `leeway` is the clock skew allowed on `exp` and `nbf` (whole seconds).
    pub fn hs256(secret: &[u8], leeway: std::time::Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut claims = data.claims;
        validate_id(&claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        if let Some(name) = &mut claims.name {
            if name.trim().is_empty() {
                claims.name = None;
            } else if name.len() > MAX_NAME_LEN {
                let mut end = MAX_NAME_LEN;
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name.truncate(end);
            }
        }
        Ok(claims)
    }
}

impl Authenticator {
    /// Checks an admin API token: valid as any token, and `admin: true`.
    pub fn verify_admin(&self, token: &str) -> Result<AdminClaims, AuthError> {
        let data =
            decode::<AdminClaims>(token, &self.key, &self.validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        validate_id(&data.claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        if !data.claims.admin {
            return Err(AuthError::NotAdmin);
        }
        Ok(data.claims)
    }
}

/// Signs an HS256 token (dev token endpoint, tests, operators' tooling).
pub fn issue_hs256(secret: &[u8], claims: &impl Serialize) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";
    const LEEWAY: std::time::Duration = std::time::Duration::from_secs(5);

    fn now() -> u64 {
        switchboard_core::clock::now_ms() as u64 / 1000
    }

    /// Signs arbitrary claims (e.g. with `nbf`, which [`Claims`] does not carry).
    fn sign(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims { sub: sub.into(), name: Some("Alice".into()), exp }
    }

    fn far_future() -> u64 {
        4_000_000_000
    }

    #[test]
    fn accepts_a_good_token() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let token = issue_hs256(SECRET, &claims("alice", far_future()));
        assert_eq!(auth.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn refuses_bad_tokens() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        assert!(auth.verify("not-a-jwt").is_err());
        let wrong_key = issue_hs256(b"another-secret-0000000", &claims("alice", far_future()));
        assert!(auth.verify(&wrong_key).is_err());
        let expired = issue_hs256(SECRET, &claims("alice", 1_000));
        assert!(auth.verify(&expired).is_err());
        let bad_sub = issue_hs256(SECRET, &claims("a/b", far_future()));
        assert!(auth.verify(&bad_sub).is_err());
    }

    #[test]
    fn expiry_and_not_before_are_checked_with_the_configured_leeway() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let t = now();
        let ok = |claims| auth.verify(&sign(claims)).is_ok();
        assert!(ok(serde_json::json!({"sub": "a", "exp": t + 60})));
        assert!(ok(serde_json::json!({"sub": "a", "exp": t - 2})), "expired within the leeway");
        assert!(!ok(serde_json::json!({"sub": "a", "exp": t - 30})), "expired 30 s ago, beyond a 5 s leeway");
        assert!(ok(serde_json::json!({"sub": "a", "exp": t + 60, "nbf": t + 2})), "not yet valid, within the leeway");
        assert!(!ok(serde_json::json!({"sub": "a", "exp": t + 60, "nbf": t + 30})), "nbf is honoured");
        assert!(!ok(serde_json::json!({"sub": "a"})), "exp is required");
        let lenient = Authenticator::hs256(SECRET, std::time::Duration::from_secs(60));
        assert!(lenient.verify(&sign(serde_json::json!({"sub": "a", "exp": t - 30}))).is_ok());
    }

    #[test]
    fn admin_tokens_need_the_admin_claim() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let t = now() + 60;
        let admin = auth.verify_admin(&sign(serde_json::json!({"sub": "ops", "exp": t, "admin": true})));
        assert_eq!(admin.unwrap().sub, "ops");
        let client = sign(serde_json::json!({"sub": "alice", "exp": t}));
        assert_eq!(auth.verify_admin(&client), Err(AuthError::NotAdmin));
        let denied = sign(serde_json::json!({"sub": "alice", "exp": t, "admin": false}));
        assert_eq!(auth.verify_admin(&denied), Err(AuthError::NotAdmin));
        assert!(matches!(auth.verify_admin("junk"), Err(AuthError::Invalid(_))));
    }
}
