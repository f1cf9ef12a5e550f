//! The identity provider's public keys, read from its JWKS URL.
//!
//! Fetched once at start (retried briefly, then a clear error), then held in
//! memory: verifying a token looks its `kid` up without any I/O. A `kid` the
//! held set lacks (the provider rotated its keys) fetches the set again, at
//! most once per `min_interval` however many such tokens arrive, so a flood
//! of made-up key ids costs the provider one request per interval. Once the
//! held set is older than `max_age`, the next lookup fetches it again in the
//! background, so a key the provider withdrew stops verifying without a
//! restart. A failed fetch keeps the keys already held.
//!
//! Only keys for RS256 (RSA, at least 2048 bits) and ES256 (EC on P-256)
//! are kept, each under its `kid` and with the one algorithm it may verify;
//! every other entry is skipped, symmetric (`oct`) keys above all: a JWKS is
//! public, so a secret in it would let anyone sign.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;
use switchboard_core::http_client::error_chain;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::events::EdgeEvents;

/// Longest a fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set read. Providers publish a few keys (a few KiB); a larger
/// body is a wrong URL, not a key set.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus kept (NIST SP 800-57: 2048 bits until 2030).
const MIN_RSA_BITS: usize = 2048;

/// Why the key set could not be fetched or used.
#[derive(Debug, Error)]
pub enum JwksError {
    /// Configuration: the operator's to fix.
    #[error("SB_JWKS_URL {url:?} is not an http:// or https:// URL with a host")]
    BadUrl { url: String },
    /// Configuration: keys fetched in the clear from another machine could
    /// be swapped on the way, and whoever swapped them signs any token.
    #[error(
        "SB_JWKS_URL {url:?} is plain http to another machine: use https (http only to this machine, e.g. a sidecar)"
    )]
    PlainHttp { url: String },
    /// The machine's CA store is empty or unreadable: the image's to fix.
    #[error(
        "no CA certificates to check {url} with ({source}); install ca-certificates or point SSL_CERT_FILE at a bundle"
    )]
    NoRootCertificates { url: String, source: std::io::Error },
    /// The network or the provider; passes on a retry, often. `reason` is
    /// the whole chain (hyper's own message is only "client error (Connect)").
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("GET {url}: no complete answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    /// 5xx passes on a retry, often; 4xx is a wrong URL.
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: reading the body: {reason} (a key set is at most {MAX_BODY_BYTES} bytes)")]
    Body { url: String, reason: String },
    /// The URL answers, but not with a key set: the operator's to fix.
    #[error("{url} is not a JWK set: {source}")]
    NotAKeySet { url: String, source: serde_json::Error },
    #[error(
        "{url} holds no key this edge can use (RS256 on RSA of 2048+ bits, or ES256 on P-256, each with a kid); skipped: {skipped}"
    )]
    NoUsableKey { url: String, skipped: String },
}

impl JwksError {
    /// Whether trying again may help (the network or the provider's
    /// availability) rather than a mistake in the URL or the set.
    fn is_transient(&self) -> bool {
        match self {
            JwksError::Request { .. } | JwksError::Timeout { .. } | JwksError::Body { .. } => true,
            JwksError::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }
}

/// One public key of the provider, with the only algorithm it verifies.
pub(crate) struct PublicKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The usable keys of one fetch of the set, by `kid`.
pub(crate) struct KeySet {
    pub(crate) keys: HashMap<String, Arc<PublicKey>>,
    /// Entries left out, each with why (logged: an operator wondering why a
    /// token is refused wants to see that its key was skipped).
    pub(crate) skipped: Vec<String>,
}

/// The key set as held: the keys and when they were fetched.
struct Held {
    keys: HashMap<String, Arc<PublicKey>>,
    fetched: Instant,
}

/// What the tokens' `kid`s are looked up in.
pub struct Jwks {
    url: Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    min_interval: Duration,
    max_age: Duration,
    events: Arc<EdgeEvents>,
    /// Swapped whole by a fetch; read without waiting on one.
    held: RwLock<Arc<Held>>,
    /// Held while a fetch runs, so concurrent misses wait for one fetch
    /// instead of each making their own; holds when the last fetch started
    /// (successful or not), which the rate limit counts from.
    last_fetch: Arc<Mutex<Instant>>,
}

impl Jwks {
    /// Fetches the set from `url` (a few tries over about two seconds when
    /// the network or the provider fails) and holds it. `min_interval`
    /// limits fetches caused by unknown key ids; `max_age` is how old the
    /// held set may get before it is fetched again in the background.
    pub async fn start(
        url: &str,
        min_interval: Duration,
        max_age: Duration,
        events: Arc<EdgeEvents>,
    ) -> Result<Arc<Self>, JwksError> {
        let uri = parse_url(url)?;
        let client = Client::builder(TokioExecutor::new()).build(connector(&uri)?);
        let retry = ExponentialBuilder::default().with_min_delay(Duration::from_millis(250)).with_max_times(3);
        let fetched = (|| fetch(&client, &uri))
            .retry(retry)
            .when(JwksError::is_transient)
            .notify(|error, after| events.jwks_fetch_failed(error, Some(after)))
            .await;
        let set = fetched.inspect_err(|error| events.jwks_fetch_failed(error, None))?;
        events.jwks_fetched(&set);
        let now = Instant::now();
        Ok(Arc::new(Self {
            url: uri,
            client,
            min_interval,
            max_age,
            events,
            held: RwLock::new(Arc::new(Held { keys: set.keys, fetched: now })),
            last_fetch: Arc::new(Mutex::new(now)),
        }))
    }

    /// The key named `kid`, fetching the set again first if it is not held
    /// (rate limited); `None` if the set still does not hold it.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str) -> Option<Arc<PublicKey>> {
        let held = self.held();
        if held.fetched.elapsed() >= self.max_age {
            self.refresh_in_background();
        }
        if let Some(key) = held.keys.get(kid) {
            return Some(key.clone());
        }
        self.refresh_for_unknown_kid().await;
        self.held().keys.get(kid).cloned()
    }

    /// How long an unknown key id waits before it can fetch the set again.
    pub(crate) fn min_interval(&self) -> Duration {
        self.min_interval
    }

    fn held(&self) -> Arc<Held> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Fetches the set unless one was fetched (or tried) within the
    /// interval; waits for a fetch already running instead of starting one.
    async fn refresh_for_unknown_kid(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.elapsed() < self.min_interval {
            self.events.jwks_refresh_too_soon();
            return;
        }
        *last = Instant::now();
        self.fetch_and_hold().await;
    }

    /// Starts a fetch on its own task, unless one is running or the last
    /// one started within the interval: the lookup that noticed the age
    /// goes on with the keys held.
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(mut last) = self.last_fetch.clone().try_lock_owned() else { return };
        if last.elapsed() < self.min_interval {
            return;
        }
        *last = Instant::now();
        let this = self.clone();
        tokio::spawn(async move {
            this.fetch_and_hold().await;
            drop(last);
        });
    }

    async fn fetch_and_hold(&self) {
        match fetch(&self.client, &self.url).await {
            Ok(set) => {
                self.events.jwks_fetched(&set);
                let held = Arc::new(Held { keys: set.keys, fetched: Instant::now() });
                *self.held.write().unwrap_or_else(PoisonError::into_inner) = held;
            }
            Err(error) => self.events.jwks_fetch_failed(&error, None),
        }
    }
}

fn parse_url(url: &str) -> Result<Uri, JwksError> {
    let bad = || JwksError::BadUrl { url: url.to_owned() };
    let uri: Uri = url.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else { return Err(bad()) };
    if !scheme_ok {
        return Err(bad());
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return Err(JwksError::PlainHttp { url: url.to_owned() });
    }
    Ok(uri)
}

/// Checks `url` the way [`Jwks::start`] will, for configuration checks
/// before any port is bound.
pub fn validate_url(url: &str) -> Result<(), JwksError> {
    parse_url(url).map(|_| ())
}

fn connector(url: &Uri) -> Result<HttpsConnector<HttpConnector>, JwksError> {
    switchboard_core::http_client::connector(url, CONNECT_TIMEOUT)
        .map_err(|source| JwksError::NoRootCertificates { url: url.to_string(), source })
}

/// One GET of the set, parsed.
async fn fetch(client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, url: &Uri) -> Result<KeySet, JwksError> {
    let name = || url.to_string();
    let request = Request::get(url.clone())
        .header(ACCEPT, "application/jwk-set+json, application/json")
        .header(USER_AGENT, concat!("switchboard-edge/", env!("CARGO_PKG_VERSION")))
        .body(Empty::new())
        .expect("a GET of a parsed URI is a valid request");
    let body = tokio::time::timeout(FETCH_TIMEOUT, async {
        let response =
            client.request(request).await.map_err(|e| JwksError::Request { url: name(), reason: error_chain(&e) })?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Status { url: name(), status });
        }
        let collected = Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await;
        collected.map(|c| c.to_bytes()).map_err(|e| JwksError::Body { url: name(), reason: e.to_string() })
    })
    .await
    .map_err(|_| JwksError::Timeout { url: name() })??;
    let set = parse(&body).map_err(|source| JwksError::NotAKeySet { url: name(), source })?;
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKey { url: name(), skipped: set.skipped.join("; ") });
    }
    Ok(set)
}

/// A JWK set as sent: each key read on its own, so one entry this edge
/// cannot read (a new key type, say) does not hide the others.
#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWK set document; an error only when it is not one.
pub(crate) fn parse(body: &[u8]) -> Result<KeySet, serde_json::Error> {
    let raw: RawSet = serde_json::from_slice(body)?;
    let mut set = KeySet { keys: HashMap::new(), skipped: Vec::new() };
    for (i, entry) in raw.keys.into_iter().enumerate() {
        let kid = entry.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        let Some(kid) = kid else {
            set.skipped.push(format!("{name}: no kid"));
            continue;
        };
        if set.keys.contains_key(&kid) {
            set.skipped.push(format!("{name}: a second key with this kid"));
            continue;
        }
        match usable(entry) {
            Ok(key) => {
                set.keys.insert(kid, Arc::new(key));
            }
            Err(why) => set.skipped.push(format!("{name}: {why}")),
        }
    }
    Ok(set)
}

/// The key an entry holds and the algorithm it verifies, or why it is not
/// used. The algorithm comes from the key: its `alg` when it names one, else
/// its type (RSA: RS256; EC on P-256: ES256). A token must then say the same.
fn usable(entry: serde_json::Value) -> Result<PublicKey, String> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|e| format!("not a key this edge reads ({e})"))?;
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return Err("its use is not sig".into());
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return Err("its key_ops lack verify".into());
    }
    let named = jwk.common.key_algorithm;
    let algorithm = match (&jwk.algorithm, named) {
        (AlgorithmParameters::OctetKey(_), _) => return Err("a symmetric key, never taken from a public set".into()),
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (params, alg) => {
            let kind = match params {
                AlgorithmParameters::EllipticCurve(ec) => format!("EC {:?}", ec.curve),
                AlgorithmParameters::OctetKeyPair(okp) => format!("OKP {:?}", okp.curve),
                _ => "RSA".to_owned(),
            };
            let named = alg.map(|a| format!(" for {a}")).unwrap_or_default();
            return Err(format!("an {kind} key{named}, where only RS256 on RSA and ES256 on P-256 are used"));
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unreadable ({e})"))?;
    match (algorithm, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, .. }) if bits(n) < MIN_RSA_BITS => {
            return Err(format!("an RSA key of {} bits, fewer than {MIN_RSA_BITS}", bits(n)));
        }
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) if point.len() != 65 => {
            return Err("x and y are not 32 bytes each".into());
        }
        _ => {}
    }
    Ok(PublicKey { algorithm, key })
}

/// Significant bits of a big-endian unsigned integer.
fn bits(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
        None => 0,
    }
}

/// Keys and a key server for the edge's unit tests: the fixed keys of
/// tests/fixtures/jwks (see its README) and a real HTTP server on a port-0
/// listener serving whatever set a test puts in it.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub(crate) const RSA_A: &[u8] = include_bytes!("../../tests/fixtures/jwks/rsa-a.der");
    pub(crate) const RSA_B: &[u8] = include_bytes!("../../tests/fixtures/jwks/rsa-b.der");
    pub(crate) const EC_A: &[u8] = include_bytes!("../../tests/fixtures/jwks/ec-a.der");

    /// A signing key of the test provider and its public JWK.
    pub(crate) struct TestKey {
        pub(crate) kid: &'static str,
        pub(crate) algorithm: Algorithm,
        pub(crate) signing: EncodingKey,
    }

    impl TestKey {
        pub(crate) fn rsa(kid: &'static str, der: &[u8]) -> Self {
            Self { kid, algorithm: Algorithm::RS256, signing: EncodingKey::from_rsa_der(der) }
        }

        pub(crate) fn ec(kid: &'static str, der: &[u8]) -> Self {
            Self { kid, algorithm: Algorithm::ES256, signing: EncodingKey::from_ec_der(der) }
        }

        /// The public half as a provider publishes it (with `alg`).
        pub(crate) fn jwk(&self) -> serde_json::Value {
            let mut jwk = Jwk::from_encoding_key(&self.signing, self.algorithm).expect("a public JWK");
            jwk.common.key_id = Some(self.kid.to_owned());
            serde_json::to_value(jwk).unwrap()
        }

        /// A token with this key's kid and algorithm.
        pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
            let mut header = Header::new(self.algorithm);
            header.kid = Some(self.kid.to_owned());
            jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
        }
    }

    /// base64url without padding, as JWTs and JWKs use.
    pub(crate) fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A key server: answers `GET /jwks` with `status` and `body`, counting requests.
    pub(crate) struct KeyServer {
        pub(crate) url: String,
        pub(crate) answer: Arc<Mutex<(u16, String)>>,
        hits: Arc<AtomicUsize>,
    }

    impl KeyServer {
        pub(crate) async fn start(status: u16, body: impl Into<String>) -> Self {
            let answer = Arc::new(Mutex::new((status, body.into())));
            let hits = Arc::new(AtomicUsize::new(0));
            let (served, counted) = (answer.clone(), hits.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = served.lock().unwrap().clone();
                    async move { (axum::http::StatusCode::from_u16(status).unwrap(), body) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { url, answer, hits }
        }

        /// Serves the public halves of `keys`.
        pub(crate) async fn with_keys(keys: &[&TestKey]) -> Self {
            Self::start(200, set_of(keys)).await
        }

        pub(crate) fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    pub(crate) fn set_of(keys: &[&TestKey]) -> String {
        serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{KeyServer, b64};
    use super::*;

    fn rsa_jwk(kid: &str, n_bytes: usize) -> serde_json::Value {
        // A modulus with its top bit set: exactly n_bytes * 8 bits.
        let mut n = vec![0xc5u8; n_bytes];
        n[n_bytes - 1] |= 1;
        serde_json::json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ec_jwk(kid: &str) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&[7; 32]), "y": b64(&[9; 32])})
    }

    fn parsed(keys: serde_json::Value) -> KeySet {
        parse(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn keeps_rs256_and_es256_keys_under_their_kid_with_their_one_algorithm() {
        let mut named = rsa_jwk("named", 256);
        named["alg"] = "RS256".into();
        named["use"] = "sig".into();
        let set = parsed(serde_json::json!([rsa_jwk("rsa", 256), ec_jwk("ec"), named]));
        assert_eq!(set.keys["rsa"].algorithm, Algorithm::RS256);
        assert_eq!(set.keys["named"].algorithm, Algorithm::RS256);
        assert_eq!(set.keys["ec"].algorithm, Algorithm::ES256);
        assert!(set.skipped.is_empty(), "{:?}", set.skipped);
    }

    #[test]
    fn skips_what_a_token_must_never_be_verified_with() {
        let mut for_encryption = rsa_jwk("enc", 256);
        for_encryption["use"] = "enc".into();
        let mut rs384 = rsa_jwk("rs384", 256);
        rs384["alg"] = "RS384".into();
        let mut ec_claiming_rs256 = ec_jwk("ec-rs256");
        ec_claiming_rs256["alg"] = "RS256".into();
        let mut p384 = ec_jwk("p384");
        p384["crv"] = "P-384".into();
        let mut sign_only = ec_jwk("sign-only");
        sign_only["key_ops"] = serde_json::json!(["sign"]);
        let set = parsed(serde_json::json!([
            {"kty": "oct", "kid": "secret", "k": b64(b"0123456789abcdef0123456789abcdef")},
            rsa_jwk("short", 128),
            for_encryption,
            rs384,
            ec_claiming_rs256,
            p384,
            sign_only,
            {"kty": "AKP", "kid": "future", "alg": "ML-DSA-44", "pub": "AAAA"},
            {"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            rsa_jwk("twice", 256),
            rsa_jwk("twice", 256),
        ]));
        assert_eq!(set.keys.keys().collect::<Vec<_>>(), ["twice"]);
        let skipped = set.skipped.join("\n");
        for why in [
            "secret: a symmetric key",
            "short: an RSA key of 1024 bits",
            "enc: its use is not sig",
            "rs384: an RSA key for RS384, where only",
            "ec-rs256: an EC P256 key for RS256, where only",
            "p384: an EC P384 key, where only",
            "sign-only: its key_ops lack verify",
            "future: not a key this edge reads",
            "#8: no kid",
            "twice: a second key",
        ] {
            assert!(skipped.contains(why), "{why:?} not in\n{skipped}");
        }
    }

    #[test]
    fn a_document_that_is_not_a_set_is_an_error() {
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"kty": "RSA"}"#).is_err());
        assert!(parse(br#"{"keys": []}"#).unwrap().keys.is_empty());
    }

    #[test]
    fn urls_need_a_scheme_this_client_speaks_and_a_host() {
        assert!(validate_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(validate_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(validate_url("http://localhost:8080/jwks").is_ok());
        assert!(validate_url("http://[::1]:8080/jwks").is_ok());
        assert!(matches!(validate_url("http://idp.example.com/jwks"), Err(JwksError::PlainHttp { .. })));
        assert!(matches!(validate_url("http://10.0.0.5/jwks"), Err(JwksError::PlainHttp { .. })));
        for bad in ["", "idp.example.com/jwks", "ftp://idp.example.com/jwks", "https:///jwks", "not a url"] {
            assert!(validate_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn counts_significant_bits() {
        assert_eq!(bits(&[0, 0x01, 0xff]), 9);
        assert_eq!(bits(&[0x80, 0]), 16);
        assert_eq!(bits(&[0, 0]), 0);
    }

    fn events() -> Arc<EdgeEvents> {
        Arc::new(EdgeEvents::new(&switchboard_core::metrics::Metrics::default()))
    }

    #[tokio::test]
    async fn start_fails_with_the_reason_and_retries_only_what_may_pass() {
        let start =
            |url: String| async move { Jwks::start(&url, Duration::from_secs(1), Duration::MAX, events()).await };

        let server = KeyServer::start(404, "not here").await;
        let error = start(server.url.clone()).await.err().unwrap();
        assert!(matches!(error, JwksError::Status { status: StatusCode::NOT_FOUND, .. }), "{error}");
        assert!(error.to_string().contains(&server.url), "{error}");
        assert_eq!(server.hits(), 1, "a wrong URL is not retried");

        let server = KeyServer::start(503, "busy").await;
        assert!(matches!(start(server.url.clone()).await.err().unwrap(), JwksError::Status { .. }));
        assert_eq!(server.hits(), 4, "an unavailable provider is tried four times");

        let server = KeyServer::start(200, "<html>login</html>").await;
        assert!(matches!(start(server.url.clone()).await.err().unwrap(), JwksError::NotAKeySet { .. }));

        let server = KeyServer::start(200, r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#).await;
        let error = start(server.url.clone()).await.err().unwrap();
        assert!(error.to_string().contains("s: a symmetric key"), "{error}");

        // Nobody listens on a port just released.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let error = start(format!("http://{closed}/jwks")).await.err().unwrap();
        assert!(matches!(error, JwksError::Request { .. }), "{error}");
        assert!(error.to_string().contains("Connection refused"), "{error}");
    }
}
