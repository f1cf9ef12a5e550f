//! Client authentication at the handshake: a JWT from `?token=` (browsers
//! cannot set headers on a WebSocket) or `Authorization: Bearer`.
//!
//! The header's `alg` picks the key, and each key verifies one algorithm:
//! - HS256 with the shared secret (SB_JWT_SECRET): simple setups, the dev
//!   token endpoint, operators' tooling such as `sbctl probe`.
//! - RS256 and ES256 from an identity provider: the key its JWKS
//!   (SB_JWKS_URL, [`crate::jwks`]) publishes under the token's `kid`, which
//!   must be a key for that same algorithm; `iss` and `aud` are checked
//!   when configured (SB_JWT_ISSUER, SB_JWT_AUDIENCE).
//!
//! So the secret never checks an RS256 token, a provider's public key never
//! serves as an HMAC secret (an HS256 token "signed" with it is just a wrong
//! signature), and `alg: none` or any other algorithm is refused before a
//! key is looked at.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard_schemas::ids::validate_id;
use thiserror::Error;

use crate::config::EdgeConfig;
use crate::events::EdgeEvents;
use crate::jwks::{Jwks, JwksError};

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
    /// The provider's key set does not hold the token's `kid`, even after
    /// fetching it again (or the last fetch was too recent to try).
    #[error(
        "invalid token: unknown key id {kid:?}: the identity provider's key set does not hold it (it is fetched again at most every {every:?})"
    )]
    UnknownKey { kid: String, every: Duration },
    #[error("the token does not carry the `admin: true` claim")]
    NotAdmin,
}

/// What an identity provider's tokens must carry besides a good signature.
#[derive(Debug, Clone, Default)]
pub struct ProviderChecks {
    /// The only `iss` accepted; `None` checks none.
    pub issuer: Option<String>,
    /// `aud` must name one of these; empty checks none.
    pub audience: Vec<String>,
}

/// Verifies tokens with the keys it was given; without any, refuses all.
#[derive(Clone)]
pub struct Authenticator {
    leeway: Duration,
    hs256: Option<(DecodingKey, Validation)>,
    provider: Option<Provider>,
}

/// The identity provider's keys, with one validation per algorithm it may sign with.
#[derive(Clone)]
struct Provider {
    jwks: Arc<Jwks>,
    rs256: Validation,
    es256: Validation,
}

/// Longest display name kept from a token.
const MAX_NAME_LEN: usize = 64;
/// Longest key id echoed back in a refusal.
const MAX_KID_ECHO: usize = 64;

impl Authenticator {
    /// `leeway` is the clock skew allowed on `exp` and `nbf` (whole seconds).
    /// Refuses every token until a key is added.
    pub fn new(leeway: Duration) -> Self {
        Self { leeway, hs256: None, provider: None }
    }

    /// Only HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8], leeway: Duration) -> Self {
        Self::new(leeway).with_hs256(secret)
    }

    /// Also accepts HS256 tokens signed with `secret`. Their claims are
    /// checked as they always were: whoever holds the secret is trusted, so
    /// `iss` means nothing, and an `aud` is refused.
    pub fn with_hs256(mut self, secret: &[u8]) -> Self {
        let validation = base_validation(Algorithm::HS256, self.leeway, &["exp", "sub"]);
        self.hs256 = Some((DecodingKey::from_secret(secret), validation));
        self
    }

    /// Also accepts RS256 and ES256 tokens signed with a key of `jwks`.
    pub fn with_provider(mut self, jwks: Arc<Jwks>, checks: &ProviderChecks) -> Self {
        let validation = |algorithm| {
            let mut required = vec!["exp", "sub"];
            required.extend(checks.issuer.as_ref().map(|_| "iss"));
            required.extend((!checks.audience.is_empty()).then_some("aud"));
            let mut validation = base_validation(algorithm, self.leeway, &required);
            if let Some(issuer) = &checks.issuer {
                validation.set_issuer(&[issuer]);
            }
            if checks.audience.is_empty() {
                // A provider's tokens always name an audience; without a
                // configured one there is nothing to compare it with.
                validation.validate_aud = false;
            } else {
                validation.set_audience(&checks.audience);
            }
            validation
        };
        let (rs256, es256) = (validation(Algorithm::RS256), validation(Algorithm::ES256));
        self.provider = Some(Provider { jwks, rs256, es256 });
        self
    }

    /// The edge's authenticator: HS256 with SB_JWT_SECRET when set, the
    /// provider's tokens when SB_JWKS_URL is set (its key set fetched now).
    pub async fn from_config(config: &EdgeConfig, events: Arc<EdgeEvents>) -> Result<Self, JwksError> {
        let mut auth = Self::new(config.token_leeway);
        if let Some(secret) = &config.jwt_secret {
            auth = auth.with_hs256(secret.expose().as_bytes());
        }
        if let Some(url) = &config.jwks_url {
            let jwks = Jwks::start(url, config.jwks_refresh_min_interval, config.jwks_refresh_interval, events).await?;
            let checks = ProviderChecks { issuer: config.jwt_issuer.clone(), audience: config.jwt_audience.clone() };
            if checks.issuer.is_none() {
                tracing::warn!("no SB_JWT_ISSUER: the tokens' iss is not checked");
            }
            auth = auth.with_provider(jwks, &checks);
        }
        Ok(auth)
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut claims: Claims = self.decode(token).await?;
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

    /// Checks an admin API token: valid as any token, and `admin: true`.
    pub async fn verify_admin(&self, token: &str) -> Result<AdminClaims, AuthError> {
        let claims: AdminClaims = self.decode(token).await?;
        validate_id(&claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        if !claims.admin {
            return Err(AuthError::NotAdmin);
        }
        Ok(claims)
    }

    /// The claims of a token whose signature and time claims hold, checked
    /// with the key its header's algorithm (and `kid`) selects.
    async fn decode<T: DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        let invalid = |why: String| AuthError::Invalid(why);
        let header = decode_header(token)
            .map_err(|e| invalid(format!("unreadable, or an algorithm never accepted (such as none): {e}")))?;
        if header.crit.is_some() {
            return Err(invalid("the header names critical (crit) extensions, which this edge does not know".into()));
        }
        let decoded = match header.alg {
            Algorithm::HS256 => {
                let Some((key, validation)) = &self.hs256 else {
                    return Err(invalid("HS256 tokens are not accepted here (no SB_JWT_SECRET)".into()));
                };
                decode::<T>(token, key, validation)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let Some(provider) = &self.provider else {
                    return Err(invalid(format!("{:?} tokens are not accepted here (no SB_JWKS_URL)", header.alg)));
                };
                let kid = header.kid.as_deref().ok_or_else(|| invalid("the token names no key (kid)".into()))?;
                let Some(key) = provider.jwks.key(kid).await else {
                    let kid = kid.chars().take(MAX_KID_ECHO).collect();
                    return Err(AuthError::UnknownKey { kid, every: provider.jwks.min_interval() });
                };
                if key.algorithm != header.alg {
                    return Err(invalid(format!(
                        "key {kid:?} is for {:?}, and the token says {:?}",
                        key.algorithm, header.alg
                    )));
                }
                let validation = if key.algorithm == Algorithm::RS256 { &provider.rs256 } else { &provider.es256 };
                decode::<T>(token, &key.key, validation)
            }
            other => return Err(invalid(format!("{other:?} tokens are not accepted (HS256, RS256, ES256 are)"))),
        };
        decoded.map(|data| data.claims).map_err(|e| invalid(e.to_string()))
    }
}

/// One algorithm, the required claims, `exp` and `nbf` with the leeway.
fn base_validation(algorithm: Algorithm, leeway: Duration, required: &[&str]) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_required_spec_claims(required);
    validation.validate_nbf = true;
    validation.leeway = leeway.as_secs();
    validation
}

/// Signs an HS256 token (dev token endpoint, tests, operators' tooling).
pub fn issue_hs256(secret: &[u8], claims: &impl Serialize) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::testing::{EC_A, KeyServer, RSA_A, RSA_B, TestKey, b64};
    use serde_json::json;
    use switchboard_core::metrics::Metrics;

    const SECRET: &[u8] = b"0123456789abcdef0123";
    const LEEWAY: Duration = Duration::from_secs(5);
    const ISSUER: &str = "https://idp.example.com/";
    const AUDIENCE: &str = "switchboard";

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

    #[tokio::test]
    async fn accepts_a_good_token() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let token = issue_hs256(SECRET, &claims("alice", far_future()));
        assert_eq!(auth.verify(&token).await.unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn refuses_bad_tokens() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        assert!(auth.verify("not-a-jwt").await.is_err());
        let wrong_key = issue_hs256(b"another-secret-0000000", &claims("alice", far_future()));
        assert!(auth.verify(&wrong_key).await.is_err());
        let expired = issue_hs256(SECRET, &claims("alice", 1_000));
        assert!(auth.verify(&expired).await.is_err());
        let bad_sub = issue_hs256(SECRET, &claims("a/b", far_future()));
        assert!(auth.verify(&bad_sub).await.is_err());
    }

    #[tokio::test]
    async fn expiry_and_not_before_are_checked_with_the_configured_leeway() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let t = now();
        let ok = async |claims| auth.verify(&sign(claims)).await.is_ok();
        assert!(ok(json!({"sub": "a", "exp": t + 60})).await);
        assert!(ok(json!({"sub": "a", "exp": t - 2})).await, "expired within the leeway");
        assert!(!ok(json!({"sub": "a", "exp": t - 30})).await, "expired 30 s ago, beyond a 5 s leeway");
        assert!(ok(json!({"sub": "a", "exp": t + 60, "nbf": t + 2})).await, "not yet valid, within the leeway");
        assert!(!ok(json!({"sub": "a", "exp": t + 60, "nbf": t + 30})).await, "nbf is honoured");
        assert!(!ok(json!({"sub": "a"})).await, "exp is required");
        let lenient = Authenticator::hs256(SECRET, Duration::from_secs(60));
        assert!(lenient.verify(&sign(json!({"sub": "a", "exp": t - 30}))).await.is_ok());
    }

    #[tokio::test]
    async fn admin_tokens_need_the_admin_claim() {
        let auth = Authenticator::hs256(SECRET, LEEWAY);
        let t = now() + 60;
        let admin = auth.verify_admin(&sign(json!({"sub": "ops", "exp": t, "admin": true}))).await;
        assert_eq!(admin.unwrap().sub, "ops");
        let client = sign(json!({"sub": "alice", "exp": t}));
        assert_eq!(auth.verify_admin(&client).await, Err(AuthError::NotAdmin));
        let denied = sign(json!({"sub": "alice", "exp": t, "admin": false}));
        assert_eq!(auth.verify_admin(&denied).await, Err(AuthError::NotAdmin));
        assert!(matches!(auth.verify_admin("junk").await, Err(AuthError::Invalid(_))));
    }

    /// The test provider's keys: `rsa-a` (RS256) and `ec-a` (ES256).
    fn provider_keys() -> (TestKey, TestKey) {
        (TestKey::rsa("rsa-a", RSA_A), TestKey::ec("ec-a", EC_A))
    }

    /// An authenticator for the keys `server` serves, with `checks`, and
    /// HS256 with [`SECRET`] when `hs256`.
    async fn with_provider(server: &KeyServer, checks: ProviderChecks, hs256: bool) -> Authenticator {
        let events = Arc::new(EdgeEvents::new(&Metrics::default()));
        let jwks = Jwks::start(&server.url, Duration::from_secs(3600), Duration::MAX, events).await.unwrap();
        let auth = Authenticator::new(LEEWAY).with_provider(jwks, &checks);
        if hs256 { auth.with_hs256(SECRET) } else { auth }
    }

    fn checked() -> ProviderChecks {
        ProviderChecks { issuer: Some(ISSUER.into()), audience: vec!["other-app".into(), AUDIENCE.into()] }
    }

    fn provider_claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "name": "From IdP", "exp": now() + 300, "iss": ISSUER, "aud": AUDIENCE})
    }

    /// A change to a token's claims.
    type Change = fn(&mut serde_json::Value);

    fn reason(result: Result<Claims, AuthError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[tokio::test]
    async fn provider_tokens_verify_with_the_key_their_kid_names() {
        let (rsa, ec) = provider_keys();
        let server = KeyServer::with_keys(&[&rsa, &ec]).await;
        let auth = with_provider(&server, checked(), false).await;
        let claims = auth.verify(&rsa.sign(&provider_claims("alice"))).await.unwrap();
        assert_eq!((claims.sub.as_str(), claims.name.as_deref()), ("alice", Some("From IdP")));
        assert_eq!(auth.verify(&ec.sign(&provider_claims("bob"))).await.unwrap().sub, "bob");
        let mut admin = provider_claims("ops");
        admin["admin"] = true.into();
        assert_eq!(auth.verify_admin(&ec.sign(&admin)).await.unwrap().sub, "ops");
        assert_eq!(auth.verify_admin(&rsa.sign(&provider_claims("alice"))).await, Err(AuthError::NotAdmin));
        assert_eq!(server.hits(), 1, "keys are looked up in the set held, not fetched per token");
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let (rsa, _) = provider_keys();
        let server = KeyServer::with_keys(&[&rsa]).await;
        let auth = with_provider(&server, checked(), false).await;
        let with = |change: Change| {
            let mut claims = provider_claims("alice");
            change(&mut claims);
            rsa.sign(&claims)
        };
        assert!(auth.verify(&with(|_| {})).await.is_ok());
        assert!(auth.verify(&with(|c| c["aud"] = json!(["x", AUDIENCE]))).await.is_ok(), "one of several");
        let refusals: [(Change, &str); 5] = [
            (|c| c["iss"] = "https://evil.example.com/".into(), "InvalidIssuer"),
            (|c| c["aud"] = "someone-else".into(), "InvalidAudience"),
            (|c| c["aud"] = json!(["x", "y"]), "InvalidAudience"),
            (|c| drop(c.as_object_mut().unwrap().remove("iss")), "Missing required claim: iss"),
            (|c| drop(c.as_object_mut().unwrap().remove("aud")), "Missing required claim: aud"),
        ];
        for (change, why) in refusals {
            let refused = reason(auth.verify(&with(change)).await);
            assert!(refused.contains(why), "{refused} should say {why}");
        }

        // Unconfigured, neither is checked.
        let lax = with_provider(&server, ProviderChecks::default(), false).await;
        assert!(lax.verify(&with(|c| c["iss"] = "anyone".into())).await.is_ok());
        assert!(lax.verify(&with(|c| c["aud"] = "anything".into())).await.is_ok());
    }

    #[tokio::test]
    async fn a_key_verifies_only_its_own_algorithm() {
        let (rsa, ec) = provider_keys();
        let server = KeyServer::with_keys(&[&rsa, &ec]).await;
        let claims = provider_claims("mallory");
        for hs256 in [false, true] {
            let auth = with_provider(&server, checked(), hs256).await;
            let mode = if hs256 { "with a secret too" } else { "provider only" };

            // alg none, with and without a signature.
            let header = b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-a"}"#);
            let body = b64(claims.to_string().as_bytes());
            for token in [format!("{header}.{body}."), format!("{header}.{body}.c2ln")] {
                assert!(reason(auth.verify(&token).await).contains("never accepted"), "{mode}");
            }

            // HS256 "signed" with the RSA key's public half, named by its kid:
            // the JWK as published, and its modulus.
            let public = rsa.jwk();
            let modulus = public["n"].as_str().unwrap().to_owned();
            for secret in [public.to_string(), modulus] {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("rsa-a".into());
                let forged = encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
                let refused = reason(auth.verify(&forged).await);
                let why = if hs256 { "InvalidSignature" } else { "HS256 tokens are not accepted" };
                assert!(refused.contains(why), "{mode}: {refused}");
            }

            // A provider's key for the other algorithm.
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("ec-a".into());
            let rs256_naming_the_ec_key = encode(&header, &claims, &rsa.signing).unwrap();
            let refused = reason(auth.verify(&rs256_naming_the_ec_key).await);
            assert!(refused.contains(r#"key "ec-a" is for ES256, and the token says RS256"#), "{refused}");
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("rsa-a".into());
            let es256_naming_the_rsa_key = encode(&header, &claims, &ec.signing).unwrap();
            assert!(reason(auth.verify(&es256_naming_the_rsa_key).await).contains("is for RS256"));

            // Another RSA algorithm with the right key.
            let mut header = Header::new(Algorithm::RS384);
            header.kid = Some("rsa-a".into());
            let rs384 = encode(&header, &claims, &rsa.signing).unwrap();
            assert!(reason(auth.verify(&rs384).await).contains("RS384 tokens are not accepted"));

            // No kid, critical extensions.
            let mut header = Header::new(Algorithm::RS256);
            let no_kid = encode(&header, &claims, &rsa.signing).unwrap();
            assert!(reason(auth.verify(&no_kid).await).contains("names no key"));
            header.kid = Some("rsa-a".into());
            header.crit = Some(vec!["exp".into()]);
            let critical = encode(&header, &claims, &rsa.signing).unwrap();
            assert!(reason(auth.verify(&critical).await).contains("crit"));
        }
        // An edge without a provider refuses the provider's tokens.
        let hs256_only = Authenticator::hs256(SECRET, LEEWAY);
        assert!(reason(hs256_only.verify(&rsa.sign(&claims)).await).contains("no SB_JWKS_URL"));
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refused_and_a_later_set_is_fetched_for_it() {
        let (rsa, _) = provider_keys();
        let rotated = TestKey::rsa("rsa-b", RSA_B);
        let server = KeyServer::with_keys(&[&rsa]).await;
        let events = Arc::new(EdgeEvents::new(&Metrics::default()));
        let every = Duration::from_millis(300);
        let jwks = Jwks::start(&server.url, every, Duration::MAX, events).await.unwrap();
        let auth = Authenticator::new(LEEWAY).with_provider(jwks, &checked());
        let token = rotated.sign(&provider_claims("alice"));

        // Served, but the last fetch (at start) is too recent to fetch again.
        *server.answer.lock().unwrap() = (200, crate::jwks::testing::set_of(&[&rsa, &rotated]));
        let refused = auth.verify(&token).await;
        assert_eq!(refused, Err(AuthError::UnknownKey { kid: "rsa-b".into(), every }));
        assert!(refused.unwrap_err().to_string().contains(r#"unknown key id "rsa-b""#));
        assert_eq!(server.hits(), 1);

        tokio::time::sleep(every).await;
        assert_eq!(auth.verify(&token).await.unwrap().sub, "alice");
        assert_eq!(server.hits(), 2);
        assert!(auth.verify(&rsa.sign(&provider_claims("bob"))).await.is_ok(), "the old key is still served");
    }
}
