//! What the production binaries accept, read from their own clap definitions:
//! the `SB_*` variables each command reads, which of them are required, their
//! defaults and long flags. The deployment checks (tests/compose.rs,
//! tests/helm.rs) hold compose.yaml and the Helm chart against these, so
//! neither can set a variable no binary reads or miss a required one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

/// The binaries a deployment runs.
pub const BINARIES: [&str; 5] = ["edge", "persister", "router", "notifier", "sbctl"];

/// Variables the binaries read outside clap: `SB_LOG_JSON` and `RUST_LOG` in
/// core/src/telemetry.rs, `OTEL_*` in core/src/traces.rs (every binary but
/// sbctl installs them).
pub const TELEMETRY_ENV: [&str; 3] = ["SB_LOG_JSON", "RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The checkout under test (read at run time, as a shared target directory
/// may hold a binary built in another checkout).
pub fn root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
}

/// The clap command of `words`: a binary, then any subcommands (`["sbctl",
/// "topics"]`); `None` for a subcommand the binary does not have.
pub fn command(words: &[&str]) -> Option<clap::Command> {
    let (binary, subcommands) = words.split_first().expect("a binary");
    let mut command = match *binary {
        "edge" => switchboard_edge::cli::Cli::command(),
        "persister" => switchboard_workers::cli::PersisterCli::command(),
        "router" => switchboard_workers::cli::RouterCli::command(),
        "notifier" => switchboard_workers::cli::NotifierCli::command(),
        "sbctl" => switchboard_admin::cli::Cli::command(),
        other => panic!("no binary named {other:?}"),
    };
    for name in subcommands {
        command = command.find_subcommand(name)?.clone();
    }
    Some(command)
}

/// The environment variables a command reads, with whether each is required
/// (no default), including those of its subcommands.
pub fn command_env(words: &[&str]) -> BTreeMap<String, bool> {
    let mut names = BTreeMap::new();
    let mut commands = vec![command(words).unwrap_or_else(|| panic!("{words:?} is not a command"))];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let required = arg.is_required_set() && arg.get_default_values().is_empty();
                names.insert(env.to_string_lossy().into_owned(), required);
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    names
}

/// Every variable a binary reads, in any of its subcommands.
pub fn binary_env(binary: &str) -> BTreeMap<String, bool> {
    command_env(&[binary])
}

/// The default of each variable a command reads that has one, as clap holds
/// it (`10s`, `16384`, `true`).
pub fn env_defaults(words: &[&str]) -> BTreeMap<String, String> {
    let command = command(words).unwrap_or_else(|| panic!("{words:?} is not a command"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            (!defaults.is_empty()).then(|| (env, defaults.join(",")))
        })
        .collect()
}

/// The long flags a command accepts (`--allow-differences`, ...).
pub fn long_flags(words: &[&str]) -> BTreeSet<String> {
    let command = command(words).unwrap_or_else(|| panic!("{words:?} is not a command"));
    command.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect()
}

/// A duration as the binaries parse it.
pub fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s:?} is not a duration: {e}"))
}

/// The port of a `host:port` listen address.
pub fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{listen:?} has no port"))
}

/// Time the edge may take after SIGTERM beyond its drain grace: up to 5 s
/// flushing the producer, then 1 s for the server to stop (edge/src/server.rs).
pub const EDGE_STOP_AFTER_DRAIN: Duration = Duration::from_secs(6);
