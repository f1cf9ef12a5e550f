//! Tokens from an identity provider. A real HTTP server on 127.0.0.1 plays
//! the provider's JWKS endpoint, serving the public halves of the keys in
//! tests/fixtures/jwks and counting its requests; edges started next to the
//! embedded deployment (`Harness::start_edge`) verify the provider's RS256
//! and ES256 tokens against it, refuse what must be refused (`alg: none`, a
//! key used for another algorithm, the wrong issuer or audience, an unknown
//! key id), follow a key rotation without a restart while clients stay
//! connected, and fetch the set again at most once per interval.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Client, ExtraEdge, Harness, refused_handshake, start};
use switchboard_edge::config::EdgeConfig;
use switchboard_edge::jwks::JwksError;
use switchboard_edge::server::EdgeError;

const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "switchboard";

/// A signing key of the provider.
struct Key {
    kid: &'static str,
    algorithm: Algorithm,
    signing: EncodingKey,
}

impl Key {
    fn rsa_a() -> Self {
        Self::rsa("rsa-a", include_bytes!("fixtures/jwks/rsa-a.der"))
    }

    /// The key the provider rotates to.
    fn rsa_b() -> Self {
        Self::rsa("rsa-b", include_bytes!("fixtures/jwks/rsa-b.der"))
    }

    fn ec_a() -> Self {
        let signing = EncodingKey::from_ec_der(include_bytes!("fixtures/jwks/ec-a.der"));
        Self { kid: "ec-a", algorithm: Algorithm::ES256, signing }
    }

    fn rsa(kid: &'static str, der: &[u8]) -> Self {
        Self { kid, algorithm: Algorithm::RS256, signing: EncodingKey::from_rsa_der(der) }
    }

    /// The public half as the provider publishes it.
    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.signing, self.algorithm).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        serde_json::to_value(jwk).unwrap()
    }

    /// A token for `claims`, naming this key.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.algorithm, self.kid, claims)
    }

    /// A token signed with this key but saying `algorithm` and `kid`.
    fn sign_as(&self, algorithm: Algorithm, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }

    /// A client token for `user`, with the provider's issuer and audience.
    fn token(&self, user: &str) -> String {
        self.sign(&claims(user))
    }
}

/// A change to a token's claims.
type Change = fn(&mut Value);

fn claims(user: &str) -> Value {
    let exp = switchboard_core::clock::now_ms() / 1000 + 600;
    json!({"sub": user, "name": format!("{user} (IdP)"), "exp": exp, "iss": ISSUER, "aud": AUDIENCE})
}

/// The provider's JWKS endpoint: serves the set it is given, counts requests.
struct Provider {
    url: String,
    set: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&Key]) -> Self {
        let set = Arc::new(Mutex::new(set_of(keys)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (set.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let set = served.lock().unwrap().clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, set, hits }
    }

    /// From now on, serves these keys (and only these).
    fn serve(&self, keys: &[&Key]) {
        *self.set.lock().unwrap() = set_of(keys);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn set_of(keys: &[&Key]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// An edge verifying the provider's tokens with its issuer and audience
/// (and HS256 with the harness's secret, as the chart deploys it), changed by `tune`.
async fn provider_edge(h: &Harness, node: &str, provider: &Provider, tune: impl FnOnce(&mut EdgeConfig)) -> ExtraEdge {
    let url = provider.url.clone();
    h.start_edge(node, move |c| {
        c.jwks_url = Some(url);
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = vec![AUDIENCE.into()];
        // No background refresh during a test: every fetch is one it caused.
        c.jwks_refresh_interval = Duration::from_secs(3600);
        tune(c);
    })
    .await
    .expect("the edge starts")
}

/// The refusal's message, after checking it is a 401 `unauthorized`.
async fn unauthorized(edge: &ExtraEdge, token: &str) -> String {
    let (status, body) = refused_handshake(edge.addr, token).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_of_the_provider_connect_and_chat() {
    let h = start().await;
    let (rsa, ec) = (Key::rsa_a(), Key::ec_a());
    let provider = Provider::start(&[&rsa, &ec]).await;
    // The provider's tokens only: no HS256 secret on this edge.
    let edge = provider_edge(&h, "edge-idp", &provider, |c| c.jwt_secret = None).await;

    let mut alice = Client::connect_with_token(edge.addr, "alice", &rsa.token("alice")).await;
    let mut bob = Client::connect_with_token(edge.addr, "bob", &ec.token("bob")).await;
    // An embedded edge, with HS256, in the same room.
    let mut carol = Client::in_room(h.edge(0), "carol", "idp-lobby").await;
    alice.join("idp-lobby", None).await;
    bob.join("idp-lobby", None).await;
    alice.say("idp-lobby", "a-1", "signed by the provider").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let got = c.messages("idp-lobby", 1).await;
        assert_eq!(
            (got[0]["sender"].as_str(), got[0]["body"].as_str()),
            (Some("alice"), Some("signed by the provider"))
        );
        assert_eq!(got[0]["sender_name"], "alice (IdP)");
    }

    let hs256 = unauthorized(&edge, &support::token("mallory")).await;
    assert!(hs256.contains("HS256 tokens are not accepted"), "{hs256}");

    // The admin API takes the provider's tokens too.
    let mut admin = claims("ops");
    admin["admin"] = true.into();
    let auth = format!("Bearer {}", ec.sign(&admin));
    let body = json!({"room": "idp-private", "kind": "private", "members": ["alice"]}).to_string();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, reply) = support::http(edge.addr, "POST", "/v1/rooms", &headers, &body).await;
    assert_eq!(status, 202, "{reply}");
    let auth = format!("Bearer {}", rsa.token("alice"));
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    assert_eq!(support::http(edge.addr, "POST", "/v1/rooms", &headers, &body).await.0, 403, "no admin claim");

    assert_eq!(provider.hits(), 1, "fetched once, at start");
    edge.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_issuer_or_audience_is_refused() {
    let h = start().await;
    let rsa = Key::rsa_a();
    let provider = Provider::start(&[&rsa]).await;
    let edge = provider_edge(&h, "edge-idp", &provider, |c| {
        c.jwt_audience = vec!["other-app".into(), AUDIENCE.into()];
    })
    .await;
    let token = |change: Change| {
        let mut claims = claims("alice");
        change(&mut claims);
        rsa.sign(&claims)
    };
    let refusals: [(Change, &str); 5] = [
        (|c| c["iss"] = "https://evil.example.com/".into(), "InvalidIssuer"),
        (|c| c["aud"] = "someone-else".into(), "InvalidAudience"),
        (|c| c["aud"] = json!(["someone-else", "yet-another"]), "InvalidAudience"),
        (|c| drop(c.as_object_mut().unwrap().remove("iss")), "Missing required claim: iss"),
        (|c| drop(c.as_object_mut().unwrap().remove("aud")), "Missing required claim: aud"),
    ];
    for (change, why) in refusals {
        let message = unauthorized(&edge, &token(change)).await;
        assert!(message.contains(why), "{message} should say {why}");
    }
    Client::connect_with_token(edge.addr, "alice", &token(|_| {})).await;
    Client::connect_with_token(edge.addr, "alice", &token(|c| c["aud"] = json!(["x", AUDIENCE]))).await;
    edge.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_and_a_key_used_for_another_algorithm_are_refused() {
    let h = start().await;
    let (rsa, ec) = (Key::rsa_a(), Key::ec_a());
    let provider = Provider::start(&[&rsa, &ec]).await;
    // HS256 with the harness's secret as well, as the chart deploys it.
    let edge = provider_edge(&h, "edge-idp", &provider, |_| {}).await;
    let claims = claims("mallory");

    // {"alg":"none","typ":"JWT","kid":"rsa-a"}, then genuine claims; no
    // signature, or some bytes where one would be.
    const NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicnNhLWEifQ";
    let payload = rsa.sign(&claims).split('.').nth(1).unwrap().to_owned();
    for token in [format!("{NONE}.{payload}."), format!("{NONE}.{payload}.c2lnbmF0dXJl")] {
        let message = unauthorized(&edge, &token).await;
        assert!(message.contains("never accepted"), "{message}");
    }

    // HS256 keyed with the RSA key's public half (the JWK as published, or
    // its modulus), naming that key: the secret checks it, and fails.
    let public = rsa.jwk();
    for secret in [public.to_string(), public["n"].as_str().unwrap().to_owned()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-a".into());
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
        let message = unauthorized(&edge, &forged).await;
        assert!(message.contains("InvalidSignature"), "{message}");
    }

    // Each of the provider's keys verifies its own algorithm only.
    let message = unauthorized(&edge, &rsa.sign_as(Algorithm::RS256, "ec-a", &claims)).await;
    assert!(message.contains(r#"key "ec-a" is for ES256, and the token says RS256"#), "{message}");
    let message = unauthorized(&edge, &ec.sign_as(Algorithm::ES256, "rsa-a", &claims)).await;
    assert!(message.contains("is for RS256"), "{message}");
    let message = unauthorized(&edge, &rsa.sign_as(Algorithm::PS256, "rsa-a", &claims)).await;
    assert!(message.contains("PS256 tokens are not accepted"), "{message}");
    // Another key's signature under a known kid.
    let message = unauthorized(&edge, &Key::rsa_b().sign_as(Algorithm::RS256, "rsa-a", &claims)).await;
    assert!(message.contains("InvalidSignature"), "{message}");

    // The secret's own tokens still work.
    Client::connect_with_token(edge.addr, "alice", &support::token("alice")).await;
    edge.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_needs_no_restart_and_connected_clients_stay() {
    let h = start().await;
    let (old, new) = (Key::rsa_a(), Key::rsa_b());
    let provider = Provider::start(&[&old]).await;
    let interval = Duration::from_millis(300);
    let edge = provider_edge(&h, "edge-idp", &provider, |c| c.jwks_refresh_min_interval = interval).await;
    let epoch = edge.state.epoch;

    let mut alice = Client::connect_with_token(edge.addr, "alice", &old.token("alice")).await;
    alice.join("rotation", None).await;

    // The provider rotates: the new key replaces the old one.
    provider.serve(&[&new]);
    tokio::time::sleep(interval).await;
    let mut bob = Client::connect_with_token(edge.addr, "bob", &new.token("bob")).await;
    assert_eq!(provider.hits(), 2, "the new kid fetched the set once");
    assert_eq!(edge.state.epoch, epoch, "the same start of the edge");

    // Alice, connected with the withdrawn key, stays and chats with Bob.
    bob.join("rotation", None).await;
    bob.say("rotation", "b-1", "new key").await;
    alice.say("rotation", "a-1", "old key, same connection").await;
    for c in [&mut alice, &mut bob] {
        let got = c.messages("rotation", 2).await;
        let bodies: Vec<_> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["new key", "old key, same connection"], "{}", c.user);
    }

    // A new connection with the withdrawn key is refused.
    let message = unauthorized(&edge, &old.token("carol")).await;
    assert!(message.contains(r#"unknown key id "rsa-a""#), "{message}");
    edge.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_are_refused_and_fetch_the_set_at_most_once_per_interval() {
    let h = start().await;
    let (rsa, stranger) = (Key::rsa_a(), Key::rsa_b());
    let provider = Provider::start(&[&rsa]).await;
    let interval = Duration::from_secs(2);
    let edge = provider_edge(&h, "edge-idp", &provider, |c| c.jwks_refresh_min_interval = interval).await;
    let started = tokio::time::Instant::now();
    let unknown = |i: usize| stranger.sign_as(Algorithm::RS256, &format!("made-up-{i}"), &claims("eve"));
    assert_eq!(provider.hits(), 1);

    // Within the interval of the fetch at start: refused without a fetch.
    let message = unauthorized(&edge, &unknown(0)).await;
    assert!(message.contains(r#"unknown key id "made-up-0""#) && message.contains("at most every 2s"), "{message}");
    assert_eq!(provider.hits(), 1);

    // After it, a burst of unknown ids costs the provider one request...
    tokio::time::sleep_until(started + interval + Duration::from_millis(200)).await;
    let burst = (1..=8).map(|i| {
        let (addr, token) = (edge.addr, unknown(i));
        tokio::spawn(async move { refused_handshake(addr, &token).await.0 })
    });
    for handshake in burst.collect::<Vec<_>>() {
        assert_eq!(handshake.await.unwrap(), 401);
    }
    assert_eq!(provider.hits(), 2, "one fetch for the whole burst");
    // ...and more of them right after, none.
    let after_burst = tokio::time::Instant::now();
    for i in 9..=16 {
        unauthorized(&edge, &unknown(i)).await;
    }
    assert!(after_burst.elapsed() < interval, "the handshakes took longer than the interval");
    assert_eq!(provider.hits(), 2);
    // Known keys never wait for the provider.
    Client::connect_with_token(edge.addr, "alice", &rsa.token("alice")).await;

    tokio::time::sleep(interval).await;
    unauthorized(&edge, &unknown(17)).await;
    assert_eq!(provider.hits(), 3, "one interval later, one more fetch");

    let metrics = edge.state.events.metrics().render();
    assert!(metrics.contains(r#"switchboard_edge_jwks_fetches_total{outcome="ok"} 3"#), "{metrics}");
    assert!(metrics.contains("switchboard_edge_jwks_refreshes_too_soon_total"), "{metrics}");
    edge.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_key_set_cannot_be_fetched_does_not_start() {
    let h = start().await;
    // Nobody listens on a port just released.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/.well-known/jwks.json");
    let tune = |url: String| {
        move |c: &mut EdgeConfig| {
            c.jwks_url = Some(url);
            c.jwt_audience = vec![AUDIENCE.into()];
        }
    };
    let error = h.start_edge("edge-idp-1", tune(url.clone())).await.err().expect("no start without keys");
    assert!(matches!(error, EdgeError::Jwks(JwksError::Request { .. })), "{error}");
    assert!(error.to_string().contains(&url), "{error}");

    // A set with nothing usable in it (a symmetric key) is no better.
    let provider = Provider::start(&[]).await;
    *provider.set.lock().unwrap() = json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0LXNlY3JldA"}]});
    let error = h.start_edge("edge-idp-2", tune(provider.url.clone())).await.err().expect("no start without keys");
    assert!(error.to_string().contains("holds no key this edge can use"), "{error}");
    h.stop().await;
}
