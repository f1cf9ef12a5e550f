//! Topic provisioning on a real cluster (AdminClient): creates the shared
//! topics with their partitions and configs, leaves matching ones alone, and
//! reports every difference from the spec instead of changing a live topic.
//! (The mock cluster of the embedded default has no Admin API; it creates its
//! topics with `MockCluster::create_topic`.)

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::kafka::{KafkaConfig, METADATA_TIMEOUT};
use crate::topics::Topics;

/// What one topic should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(&'static str, String)>,
}

/// Retention of the shared topics.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `sb.inbound`, the replay source of the SQL store: unlimited (`None`)
    /// unless the operator chooses otherwise.
    pub inbound: Option<Duration>,
    /// `sb.events`, `sb.dead-letter`.
    pub log: Duration,
    /// `sb.ephemeral`.
    pub ephemeral: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { inbound: None, log: Duration::from_secs(7 * 24 * 3600), ephemeral: Duration::from_secs(3600) }
    }
}

/// The shared topics of a deployment.
pub fn shared_specs(topics: &Topics, partitions: i32, retention: Retention) -> Vec<TopicSpec> {
    let ms = |d: Duration| d.as_millis().to_string();
    let log = || vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", ms(retention.log))];
    let compacted = || vec![("cleanup.policy", "compact".to_owned())];
    // -1: Kafka keeps the records for ever.
    let inbound_ms = retention.inbound.map_or_else(|| "-1".to_owned(), ms);
    vec![
        TopicSpec {
            name: topics.inbound(),
            partitions,
            configs: vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", inbound_ms)],
        },
        TopicSpec { name: topics.events(), partitions, configs: log() },
        TopicSpec {
            name: topics.ephemeral(),
            partitions,
            configs: vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", ms(retention.ephemeral))],
        },
        TopicSpec { name: topics.routes(), partitions, configs: compacted() },
        TopicSpec { name: topics.nodes(), partitions, configs: compacted() },
        TopicSpec { name: topics.dead_letter(), partitions, configs: log() },
    ]
}

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("could not create topic {topic}: {code}")]
    Create { topic: String, code: RDKafkaErrorCode },
    #[error("could not read the configs of topic {topic}: {code}")]
    Describe { topic: String, code: RDKafkaErrorCode },
    #[error("could not delete topic {topic}: {code}")]
    Delete { topic: String, code: RDKafkaErrorCode },
}

/// Every topic the cluster holds of the deployment `topics` names: the
/// shared ones and every edge's delivery topic, sorted.
pub fn deployment_topics(kafka: &KafkaConfig, topics: &Topics) -> Result<Vec<String>, ProvisionError> {
    let admin = kafka.admin()?;
    let metadata = admin.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
    let mut names: Vec<String> =
        metadata.topics().iter().map(|t| t.name()).filter(|name| topics.owns(name)).map(str::to_owned).collect();
    names.sort();
    Ok(names)
}

/// Deletes the topics named, and every record they hold.
pub async fn delete_topics(kafka: &KafkaConfig, names: &[String]) -> Result<(), ProvisionError> {
    if names.is_empty() {
        return Ok(());
    }
    let admin = kafka.admin()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for result in admin.delete_topics(&names, &options).await? {
        if let Err((topic, code)) = result {
            return Err(ProvisionError::Delete { topic, code });
        }
    }
    Ok(())
}

/// What provisioning found or did, per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicStatus {
    Created,
    Matches,
    /// Exists but differs; each entry is `what: expected X, found Y`.
    Differs(Vec<String>),
}

/// Creates missing topics and checks existing ones against `specs`.
pub async fn provision(
    kafka: &KafkaConfig,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<(String, TopicStatus)>, ProvisionError> {
    let admin = kafka.admin()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut report = Vec::new();
    for spec in specs {
        let new_topic = spec
            .configs
            .iter()
            .fold(NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(replication)), |t, (k, v)| {
                t.set(k, v)
            });
        let created = admin.create_topics([&new_topic], &options).await?;
        let status = match created.into_iter().next() {
            Some(Ok(_)) => TopicStatus::Created,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => compare(&admin, spec, &options).await?,
            Some(Err((topic, code))) => return Err(ProvisionError::Create { topic, code }),
            None => return Err(ProvisionError::Create { topic: spec.name.clone(), code: RDKafkaErrorCode::Fail }),
        };
        report.push((spec.name.clone(), status));
    }
    Ok(report)
}

async fn compare(
    admin: &AdminClient<DefaultClientContext>,
    spec: &TopicSpec,
    options: &AdminOptions,
) -> Result<TopicStatus, ProvisionError> {
    let mut differences = Vec::new();
    let metadata = admin.inner().fetch_metadata(Some(&spec.name), METADATA_TIMEOUT)?;
    let partitions = metadata.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
    if partitions != spec.partitions {
        differences.push(format!("partitions: expected {}, found {partitions}", spec.partitions));
    }
    let described = admin.describe_configs([&ResourceSpecifier::Topic(&spec.name)], options).await?;
    let resource = match described.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => return Err(ProvisionError::Describe { topic: spec.name.clone(), code }),
        None => return Err(ProvisionError::Describe { topic: spec.name.clone(), code: RDKafkaErrorCode::Fail }),
    };
    for (key, expected) in &spec.configs {
        let found = resource.get(key).and_then(|e| e.value.clone()).unwrap_or_default();
        if &found != expected {
            differences.push(format!("{key}: expected {expected}, found {found}"));
        }
    }
    Ok(if differences.is_empty() { TopicStatus::Matches } else { TopicStatus::Differs(differences) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_state_is_compacted_and_logs_are_retained() {
        let specs = shared_specs(&Topics::new("sb").unwrap(), 8, Retention::default());
        assert_eq!(specs.len(), 6);
        let get = |name: &str| specs.iter().find(|s| s.name == name).unwrap();
        assert!(get("sb.routes").configs.contains(&("cleanup.policy", "compact".into())));
        assert!(get("sb.nodes").configs.contains(&("cleanup.policy", "compact".into())));
        assert!(get("sb.inbound").configs.contains(&("retention.ms", "-1".into())), "the replay source is kept");
        assert!(get("sb.events").configs.contains(&("retention.ms", "604800000".into())));
        assert!(specs.iter().all(|s| s.partitions == 8));
    }
}
