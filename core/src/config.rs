//! Configuration shared by every binary: clap argument groups where each flag
//! is also an `SB_...` environment variable, typed durations, and a redacting
//! type for secrets. Bad configuration exits with status 64 (EX_USAGE) before
//! any port is bound.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

use crate::kafka::{KafkaConfig, KafkaSecurity, Sasl, SaslMechanism, SecurityProtocol};
use crate::topics::Topics;

/// Exit status for unusable configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// Parses the command line; usage errors exit with [`EXIT_CONFIG`], `--help`
/// and `--version` exit 0 as usual.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(value) => value,
        Err(err) if err.use_stderr() => {
            let _ = err.print();
            std::process::exit(EXIT_CONFIG);
        }
        Err(err) => err.exit(),
    }
}

/// Reports a configuration error found after parsing and exits with [`EXIT_CONFIG`].
pub fn exit_bad_config(message: impl fmt::Display) -> ! {
    eprintln!("error: invalid configuration: {message}");
    std::process::exit(EXIT_CONFIG);
}

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Parses a `key=value` pair for pass-through client settings.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.trim().is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// Parses a human duration such as `250ms`, `5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// How to reach Kafka and name its topics.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long = "kafka-brokers", env = "SB_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix of every topic name (`<prefix>.inbound`, ...).
    #[arg(long, env = "SB_TOPIC_PREFIX", default_value = "sb")]
    pub topic_prefix: String,
    /// Extra librdkafka settings as key=value (e.g. security.protocol=SASL_SSL), comma separated.
    #[arg(long = "kafka-option", env = "SB_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
    /// How long the edge's producer waits to batch client sends (the workers
    /// queue whole batches and wait only 0.2 ms).
    #[arg(long = "kafka-linger", env = "SB_KAFKA_LINGER", default_value = "2ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// How to talk to the brokers: plaintext, ssl (TLS), sasl_plaintext or
    /// sasl_ssl (SASL over TLS: what managed clusters ask for).
    #[arg(
        long = "kafka-security-protocol",
        env = "SB_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism (with sasl_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long = "kafka-sasl-mechanism", env = "SB_KAFKA_SASL_MECHANISM", value_enum)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name (with sasl_*).
    #[arg(long = "kafka-sasl-username", env = "SB_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (with sasl_*).
    #[arg(long = "kafka-sasl-password", env = "SB_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA certificates that sign the brokers' certificates
    /// (with ssl and sasl_ssl); unset: the system's CA store.
    #[arg(long = "kafka-ca-location", env = "SB_KAFKA_CA_LOCATION")]
    pub ca_location: Option<PathBuf>,
}

impl KafkaArgs {
    /// The clients' settings; a security setting that cannot work ends the
    /// process with a message that says what to set.
    pub fn config(&self) -> KafkaConfig {
        let security = self.security().unwrap_or_else(|e| exit_bad_config(e));
        KafkaConfig {
            options: self.options.clone(),
            linger: self.linger,
            security,
            ..KafkaConfig::new(self.brokers.clone())
        }
    }

    /// Checks the security settings together (clap checks each alone).
    pub fn security(&self) -> Result<KafkaSecurity, String> {
        let protocol = self.security_protocol;
        let sasl = match (protocol.sasl(), &self.sasl_mechanism, &self.sasl_username, &self.sasl_password) {
            (true, Some(mechanism), Some(username), Some(password)) => {
                if username.is_empty() || password.expose().is_empty() {
                    return Err("--kafka-sasl-username and --kafka-sasl-password may not be empty".into());
                }
                Some(Sasl { mechanism: *mechanism, username: username.clone(), password: password.clone() })
            }
            (true, _, _, _) => {
                return Err(format!(
                    "--kafka-security-protocol {} needs --kafka-sasl-mechanism, --kafka-sasl-username and \
                     --kafka-sasl-password (SB_KAFKA_SASL_MECHANISM, _USERNAME, _PASSWORD)",
                    protocol.name()
                ));
            }
            (false, None, None, None) => None,
            (false, _, _, _) => {
                return Err(format!(
                    "SASL settings are given but --kafka-security-protocol is {}: use sasl_ssl (or sasl_plaintext)",
                    protocol.name()
                ));
            }
        };
        if let Some(ca) = &self.ca_location {
            if !protocol.tls() {
                return Err(format!(
                    "--kafka-ca-location is given but --kafka-security-protocol is {}: use ssl or sasl_ssl",
                    protocol.name()
                ));
            }
            if !ca.is_file() {
                return Err(format!("--kafka-ca-location {}: no such file", ca.display()));
            }
        }
        Ok(KafkaSecurity { protocol, sasl, ca_location: self.ca_location.clone() })
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix).unwrap_or_else(|e| exit_bad_config(format_args!("--topic-prefix: {e}")))
    }
}

/// How to reach the SQL database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// postgres://user:pass@host/db or sqlite://path?mode=rwc
    #[arg(long = "database-url", env = "SB_DATABASE_URL")]
    pub url: Secret,
    /// Most connections of the pool that reads and, on PostgreSQL, of the
    /// one that writes (opened only by what writes: the persister, `sbctl
    /// replay store`).
    #[arg(long = "database-max-connections", env = "SB_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub max_connections: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct KafkaOnly {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn kafka(args: &[&str]) -> Result<KafkaSecurity, String> {
        KafkaOnly::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().kafka.security()
    }

    #[test]
    fn kafka_security_settings_are_checked_together() {
        assert_eq!(kafka(&[]).unwrap().protocol, SecurityProtocol::Plaintext);
        let sasl = ["--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism", "SCRAM-SHA-512"];
        let user = ["--kafka-sasl-username", "sb", "--kafka-sasl-password", "hunter2"];
        let ok = kafka(&[&sasl[..], &user[..]].concat()).unwrap();
        assert_eq!(ok.sasl.as_ref().unwrap().mechanism, SaslMechanism::ScramSha512);
        assert!(!format!("{ok:?}").contains("hunter2"), "the password is redacted");
        let empty = kafka(&[&sasl[..], &["--kafka-sasl-username", "sb", "--kafka-sasl-password", ""][..]].concat());
        assert!(empty.unwrap_err().contains("may not be empty"));
        let missing = kafka(&sasl).unwrap_err();
        assert!(missing.contains("--kafka-sasl-username"), "{missing}");
        let stray = kafka(&user).unwrap_err();
        assert!(stray.contains("use sasl_ssl"), "{stray}");
        let ca = kafka(&["--kafka-ca-location", "/no/such/ca.pem", "--kafka-security-protocol", "ssl"]).unwrap_err();
        assert!(ca.contains("no such file"), "{ca}");
        let plain_ca = kafka(&["--kafka-ca-location", "Cargo.toml"]).unwrap_err();
        assert!(plain_ca.contains("use ssl or sasl_ssl"), "{plain_ca}");
        let mechanism = ["--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism", "GSSAPI"];
        assert!(KafkaOnly::try_parse_from(std::iter::once("x").chain(mechanism)).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("postgres://u:hunter2@h/db");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "postgres://u:hunter2@h/db");
    }

    #[test]
    fn key_values_and_durations_parse() {
        assert_eq!(parse_key_value("a.b = c").unwrap(), ("a.b".into(), "c".into()));
        assert!(parse_key_value("novalue").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
