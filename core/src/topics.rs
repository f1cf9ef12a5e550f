//! Topic names. The prefix is configuration (`sb` by default), so several
//! deployments can share one Kafka cluster.

use switchboard_schemas::ids::{IdError, validate_id};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// The prefix must be a valid id, since it becomes part of topic names.
    pub fn new(prefix: &str) -> Result<Self, IdError> {
        validate_id(prefix)?;
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// Client commands from edges; the replay source to rebuild SQL.
    pub fn inbound(&self) -> String {
        format!("{}.inbound", self.prefix)
    }

    /// Canonical ordered log of stored messages.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Typing and presence pings: routed, never stored.
    pub fn ephemeral(&self) -> String {
        format!("{}.ephemeral", self.prefix)
    }

    /// Compacted: which node wants which room.
    pub fn routes(&self) -> String {
        format!("{}.routes", self.prefix)
    }

    /// Compacted: node epochs and heartbeats.
    pub fn nodes(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    /// Records no worker could decode, with the reason in headers.
    pub fn dead_letter(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// What one edge node pushes to its clients.
    pub fn deliver(&self, node: &str) -> String {
        format!("{}.deliver.{node}", self.prefix)
    }

    /// The consumer group of a worker role (`persister`, `router`) unless
    /// configured otherwise: named after the prefix, so deployments sharing
    /// a Kafka cluster never join each other's groups.
    pub fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `topic` is one of this deployment's: a shared topic or a
    /// delivery topic, all named `<prefix>.*`.
    pub fn owns(&self, topic: &str) -> bool {
        topic.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }

    /// The shared topics every deployment has (delivery topics are per node).
    pub fn shared(&self) -> [String; 6] {
        [self.inbound(), self.events(), self.ephemeral(), self.routes(), self.nodes(), self.dead_letter()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topics::new("sb").unwrap();
        assert_eq!(t.inbound(), "sb.inbound");
        assert_eq!(t.deliver("edge-0"), "sb.deliver.edge-0");
        assert_eq!(t.dead_letter(), "sb.dead-letter");
        assert!(Topics::new("bad/prefix").is_err());
    }

    #[test]
    fn a_deployment_owns_only_its_own_topics() {
        let t = Topics::new("sb").unwrap();
        assert!(t.owns("sb.inbound") && t.owns("sb.deliver.edge-0"));
        assert!(!t.owns("sb2.inbound") && !t.owns("sb") && !t.owns("other.sb.inbound"));
    }
}
