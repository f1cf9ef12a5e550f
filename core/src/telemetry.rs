//! Structured logging. `RUST_LOG` picks levels (default `info`); `SB_LOG_JSON=1`
//! switches to JSON lines for log shippers.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests start many components in one process) is harmless.
    let _ = builder.try_init();
}
