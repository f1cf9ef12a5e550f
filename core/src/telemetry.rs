//! Logs and traces, installed once per process. `RUST_LOG` picks log levels
//! (default `info`); `SB_LOG_JSON=1` switches to JSON lines (one object per
//! event, its fields at the top level) for log shippers. Traces: see
//! [`crate::traces`].

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

const DEFAULT_FILTER: &str = "info,librdkafka=warn,rdkafka=warn,sqlx=warn";

/// Installs the process's logger and, when an OTLP endpoint is set, its
/// trace export (`service` names the process unless `OTEL_SERVICE_NAME`
/// does; a bad OTLP setting exits with status 64). Keep the returned value
/// until the process ends: dropping it flushes the spans still queued. A
/// second call (tests start many components in one process) is harmless.
pub fn init(service: &'static str) -> crate::traces::Exporter {
    let json = std::env::var("SB_LOG_JSON").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    // Colours only on a terminal: a log file or `kubectl logs` got the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    install(json, ansi, std::io::stdout);
    crate::traces::init(service).unwrap_or_else(|e| crate::config::exit_bad_config(e))
}

/// The logger of a command-line tool (`sbctl`): warnings and errors on
/// stderr, so what librdkafka reports (a refused SASL login, a certificate
/// that does not verify) is seen before the command's own error.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

fn install<W>(json: bool, ansi: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(writer).with_ansi(ansi);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Builds the JSON-lines subscriber without installing it (for tests).
#[cfg(test)]
fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Keeps what the test's logger writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_are_one_object_per_line_with_the_fields_at_the_top() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = json_subscriber(move || sink.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(node = "edge-1", connections = 3, "draining");
            tracing::warn!("second");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "draining");
        assert_eq!(lines[0]["node"], "edge-1");
        assert_eq!(lines[0]["connections"], 3);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["level"], "WARN");
    }
}
