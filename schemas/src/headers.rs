//! Kafka record headers: the envelope schema version and W3C trace context.

use thiserror::Error;

/// Header naming the envelope type and version, e.g. `inbound.v1`.
pub const SCHEMA: &str = "sb-schema";
/// W3C trace context header, carried from edge to persister to router to edge.
pub const TRACEPARENT: &str = "traceparent";
/// Dead-letter headers: why the record was refused and where it came from.
pub const DLQ_REASON: &str = "sb-dlq-reason";
pub const DLQ_TOPIC: &str = "sb-dlq-topic";
pub const DLQ_PARTITION: &str = "sb-dlq-partition";
pub const DLQ_OFFSET: &str = "sb-dlq-offset";

/// A W3C `traceparent` value (version 00): trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed traceparent header")]
pub struct TraceParentError;

impl TraceParent {
    /// Starts a new trace with the given random ids (zero ids are invalid in W3C,
    /// so they are bumped to one).
    pub fn new_root(trace_id: u128, span_id: u64) -> Self {
        Self { trace_id: trace_id.max(1), span_id: span_id.max(1), sampled: true }
    }

    /// The same trace, continued by a new span of the next hop.
    pub fn child(&self, span_id: u64) -> Self {
        Self { span_id: span_id.max(1), ..*self }
    }

    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        // W3C Trace Context: exactly lowercase hex fields, no sign, no
        // padding; `from_str_radix` alone would take `+`, uppercase and more.
        let parts: Vec<&str> = value.split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return Err(TraceParentError);
        };
        let lower_hex = |field: &str, len: usize| {
            field.len() == len && field.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if *version != "00" || !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return Err(TraceParentError);
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| TraceParentError)?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| TraceParentError)?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| TraceParentError)?;
        if trace_id == 0 || span_id == 0 {
            return Err(TraceParentError);
        }
        Ok(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let tp = TraceParent::new_root(0xabc, 0x12);
        let text = tp.to_string();
        assert_eq!(text, "00-00000000000000000000000000000abc-0000000000000012-01");
        assert_eq!(TraceParent::parse(&text), Ok(tp));
        let child = tp.child(7);
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
    }

    #[test]
    fn traceparent_rejects_garbage() {
        assert!(TraceParent::parse("").is_err());
        assert!(TraceParent::parse("01-00000000000000000000000000000abc-0000000000000012-01").is_err());
        assert!(TraceParent::parse("00-00000000000000000000000000000000-0000000000000012-01").is_err());
        assert!(TraceParent::parse("00-zz000000000000000000000000000abc-0000000000000012-01").is_err());
        // What a lenient hex parser would take and W3C does not.
        assert!(TraceParent::parse("00-+0000000000000000000000000000abc-0000000000000012-01").is_err());
        assert!(TraceParent::parse("00-00000000000000000000000000000ABC-0000000000000012-01").is_err());
        assert!(TraceParent::parse(" 00-00000000000000000000000000000abc-0000000000000012-01").is_err());
        assert!(TraceParent::parse("00-00000000000000000000000000000abc-+000000000000012-01").is_err());
    }
}
