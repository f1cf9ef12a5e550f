//! Outgoing HTTP(S), for the edge's key-set fetches and the notifier's
//! webhook: hyper-util's client (already compiled, for reqwest in the OTLP
//! exporter) with rustls and ring (already compiled, for sqlx). reqwest
//! itself would switch TLS on in the copy the OTLP exporter shares, where it
//! needs a process-wide crypto provider (or aws-lc) to build a client.

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// An HTTP(S) connector with ring as its crypto provider, given here rather
/// than installed process-wide, and the machine's CA store (so a private
/// CA, e.g. an in-cluster service's, works through SSL_CERT_FILE) when `url`
/// is https. A plain http:// URL (a sidecar, the tests) needs no CA store.
/// Fails only when an https URL meets a machine without CA certificates.
pub fn connector(url: &Uri, connect_timeout: Duration) -> std::io::Result<HttpsConnector<HttpConnector>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = HttpsConnectorBuilder::new();
    let builder = if url.scheme_str() == Some("https") {
        builder.with_provider_and_native_roots(provider)?
    } else {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.with_tls_config(config)
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

/// An error and its sources, outermost first (hyper's own message is only
/// "client error (Connect)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
