//! OpenTelemetry traces of messages across the hops: the edge's send
//! (producer), the persister's processing and its SQL write, the router's
//! routing and the receiving edge's delivery (consumers). Each hop starts its
//! span under the `traceparent` of the record it read and writes its own
//! span's context into the records it produces, so one message is one trace
//! across the processes.
//!
//! Export is over OTLP/HTTP, configured by the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `_ARG`; the default sampler
//! is parent-based, so a sampled message is sampled at every hop) and off
//! when no endpoint is set. Off, the hops still carry a trace context: the
//! same trace id, a fresh span id per hop.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use switchboard_schemas::headers::TraceParent;

pub use opentelemetry::KeyValue as Attribute;
pub use opentelemetry::trace::SpanKind as Kind;

/// The process's tracer, once [`init`] found an endpoint.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Keeps the exporter running; flushes what is queued when dropped.
#[must_use = "dropping it stops the export"]
pub struct Exporter(Option<SdkTracerProvider>);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not flush");
        }
    }
}

/// Starts exporting this process's spans when an OTLP endpoint is set;
/// `service` is the name used when `OTEL_SERVICE_NAME` is not. A second call
/// in one process (tests) leaves the first one in place.
pub fn init(service: &'static str) -> Result<Exporter, String> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !configured || TRACER.get().is_some() {
        return Ok(Exporter(None));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTLP trace exporter: {e} (check OTEL_EXPORTER_OTLP_ENDPOINT)"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    if TRACER.set(provider.tracer("switchboard")).is_err() {
        return Ok(Exporter(None));
    }
    tracing::info!(service, "exporting traces over OTLP/HTTP");
    Ok(Exporter(Some(provider)))
}

/// A span's name and attributes.
pub type Description = (String, Vec<KeyValue>);

/// Whether this process exports spans.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// This process's span of one hop of one message. Ends when dropped.
pub struct Hop {
    span: Option<opentelemetry_sdk::trace::Span>,
    context: TraceParent,
}

impl Hop {
    /// Starts a span under `parent` (the context of the record this hop
    /// read, or a client's), or a new trace. `describe` gives the span's
    /// name and attributes; it is called only when spans are exported, so an
    /// untraced process allocates nothing for them.
    pub fn start(kind: SpanKind, parent: Option<&TraceParent>, describe: impl FnOnce() -> Description) -> Hop {
        Self::start_at(kind, parent, describe, None)
    }

    fn start_at(
        kind: SpanKind,
        parent: Option<&TraceParent>,
        describe: impl FnOnce() -> Description,
        start: Option<SystemTime>,
    ) -> Hop {
        let untraced = || match parent {
            Some(parent) => parent.child(fastrand::u64(..)),
            None => TraceParent::new_root(fastrand::u128(..), fastrand::u64(..)),
        };
        let Some(tracer) = TRACER.get() else {
            return Hop { span: None, context: untraced() };
        };
        let parent_context = match parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(p.trace_id),
                SpanId::from(p.span_id),
                if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let (name, attributes) = describe();
        let mut builder = tracer.span_builder(name).with_kind(kind).with_attributes(attributes);
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let span = builder.start_with_context(tracer, &parent_context);
        let own = span.span_context();
        let context = if own.is_valid() {
            TraceParent {
                trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(own.span_id().to_bytes()),
                sampled: own.is_sampled(),
            }
        } else {
            untraced()
        };
        Hop { span: Some(span), context }
    }

    /// The context the records this hop produces carry.
    pub fn context(&self) -> &TraceParent {
        &self.context
    }

    /// Adds an attribute (made only when the span is exported).
    pub fn set(&mut self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(span) = &mut self.span {
            span.set_attribute(attribute());
        }
    }

    /// Marks the hop failed, with what went wrong.
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error(description));
        }
    }

    /// A finished child span that took from `start` to `end` (a step timed
    /// for many hops at once, such as one SQL transaction for a batch).
    pub fn child_between(&self, start: SystemTime, end: SystemTime, describe: impl FnOnce() -> Description) {
        if self.span.is_none() {
            return;
        }
        let mut child = Self::start_at(SpanKind::Internal, Some(&self.context), describe, Some(start));
        if let Some(span) = &mut child.span {
            span.end_with_timestamp(end);
        }
    }
}

/// The attributes every Kafka hop has (OpenTelemetry messaging conventions).
pub fn kafka_attributes(operation: &'static str, topic: &str, partition: Option<i32>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.destination.name", topic.to_owned()),
    ];
    if let Some(partition) = partition {
        attributes.push(KeyValue::new("messaging.destination.partition.id", partition.to_string()));
    }
    attributes
}

/// This process's span of processing `record` (a consumer span under
/// `parent`, usually the record's own `traceparent`): named `<verb> <topic>`,
/// with the messaging attributes, the record's offset and `extra`.
pub fn consumer_hop<M: rdkafka::Message>(
    verb: &'static str,
    record: &M,
    parent: Option<&TraceParent>,
    extra: impl FnOnce(&mut Vec<KeyValue>),
) -> Hop {
    Hop::start(SpanKind::Consumer, parent, || {
        let mut attributes = kafka_attributes("process", record.topic(), Some(record.partition()));
        attributes.push(KeyValue::new("messaging.kafka.offset", record.offset()));
        extra(&mut attributes);
        (format!("{verb} {}", record.topic()), attributes)
    })
}

/// An attribute whose value is a list of strings.
pub fn string_list(key: &'static str, values: impl IntoIterator<Item = String>) -> KeyValue {
    let values = values.into_iter().map(opentelemetry::StringValue::from).collect();
    KeyValue::new(key, opentelemetry::Value::Array(opentelemetry::Array::String(values)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_a_hop_continues_the_trace_with_a_new_span() {
        let parent = TraceParent::new_root(0xabc, 0x12);
        let hop = Hop::start(SpanKind::Consumer, Some(&parent), || unreachable!("described only when exported"));
        assert_eq!(hop.context().trace_id, parent.trace_id);
        assert_ne!(hop.context().span_id, parent.span_id);
        let root = Hop::start(SpanKind::Producer, None, || unreachable!("described only when exported"));
        assert_ne!(root.context().trace_id, 0);
    }
}
