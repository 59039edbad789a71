//! Logs and metrics, kept out of `main` so tests and the binary set them up the same way.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global tracing subscriber once; later calls are no-ops (tests start
/// many hubs in one process).
pub fn init_logging(settings: &LogSettings) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&settings.filter))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let _ = if settings.format == "json" { builder.json().try_init() } else { builder.try_init() };
    });
}

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder,
/// so every hub in a process (tests start several) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

/// Handles of the metrics the live stream records per event, looked up once: the
/// `counter!` macros look the metric up in the registry on every call, which 10,000
/// clients × every event turn into a hot path.
pub struct StreamMetrics {
    pub events_streamed: metrics::Counter,
    pub slow_clients: metrics::Counter,
    pub clients: metrics::Gauge,
}

pub fn stream_metrics() -> &'static StreamMetrics {
    static HANDLES: OnceLock<StreamMetrics> = OnceLock::new();
    HANDLES.get_or_init(|| {
        // The recorder must be installed before the handles are taken from it.
        let _ = metrics_handle();
        StreamMetrics {
            events_streamed: metrics::counter!(names::EVENTS_STREAMED),
            slow_clients: metrics::counter!(names::SLOW_CLIENTS),
            clients: metrics::gauge!(names::CLIENTS),
        }
    })
}

/// Names of every metric the hub records, with their HELP text.
pub mod names {
    pub const INCIDENTS_RAISED: &str = "focalpoint_incidents_raised_total";
    pub const ACKS: &str = "focalpoint_acknowledgements_total";
    pub const EVENTS_STREAMED: &str = "focalpoint_events_streamed_total";
    pub const CLIENTS: &str = "focalpoint_stream_clients";
    pub const SLOW_CLIENTS: &str = "focalpoint_stream_slow_clients_closed_total";
    pub const HTTP_LATENCY: &str = "focalpoint_http_request_duration_seconds";
    pub const SIGNIN_FAILURES: &str = "focalpoint_signin_failures_total";
    pub const TOKEN_FAILURES: &str = "focalpoint_token_failures_total";
    pub const TIMERS_PENDING: &str = "focalpoint_escalation_timers_pending";
    pub const TIMER_LATENESS: &str = "focalpoint_escalation_timer_lateness_seconds";
    pub const ESCALATIONS: &str = "focalpoint_escalation_steps_total";
    pub const BUS_HEALTHY: &str = "focalpoint_bus_healthy";
    pub const BUS_DEGRADED: &str = "focalpoint_bus_degraded_total";
    pub const BUS_DEGRADED_SECONDS: &str = "focalpoint_bus_degraded_seconds_total";
    pub const PAGES_SENT: &str = "focalpoint_pages_sent_total";
    pub const PAGES_FAILED: &str = "focalpoint_pages_failed_total";
    pub const PAGES_RETRIED: &str = "focalpoint_pages_retried_total";
    pub const PAGES_THROTTLED: &str = "focalpoint_pages_throttled_total";
    pub const OUTBOX_PENDING: &str = "focalpoint_outbox_pending";
    pub const SEND_LATENCY: &str = "focalpoint_page_send_duration_seconds";
    pub const INBOUND_ACKS: &str = "focalpoint_inbound_acks_total";
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::INCIDENTS_RAISED, "Incidents raised (new incidents, not dedup hits)");
    describe_counter!(names::ACKS, "Party acknowledgements recorded (not repeated acks)");
    describe_counter!(names::EVENTS_STREAMED, "Events sent to WebSocket clients");
    describe_gauge!(names::CLIENTS, "WebSocket clients connected to this node");
    describe_counter!(names::SLOW_CLIENTS, "WebSocket clients closed because their buffer overflowed");
    describe_histogram!(names::HTTP_LATENCY, metrics::Unit::Seconds, "HTTP request latency by route and status");
    describe_counter!(names::SIGNIN_FAILURES, "Failed or rate-limited sign-ins");
    describe_counter!(names::TOKEN_FAILURES, "Requests refused for an invalid or rate-limited bearer token");
    describe_gauge!(names::TIMERS_PENDING, "Escalation steps waiting for their deadline");
    describe_histogram!(
        names::TIMER_LATENESS,
        metrics::Unit::Seconds,
        "How late escalation steps fire after their deadline"
    );
    describe_counter!(names::ESCALATIONS, "Escalation steps entered (later steps, loops and unanswered alarms)");
    describe_gauge!(names::BUS_HEALTHY, "1 while the Redis bus is subscribed, 0 while degraded (feeds poll the store)");
    describe_counter!(names::BUS_DEGRADED, "Times the Redis bus became degraded (connection lost or refused)");
    describe_counter!(
        names::BUS_DEGRADED_SECONDS,
        metrics::Unit::Seconds,
        "Whole seconds the Redis bus spent degraded, feeds polling the store"
    );
    describe_counter!(names::PAGES_SENT, "Pages accepted by their gateway, by channel");
    describe_counter!(names::PAGES_FAILED, "Pages that failed permanently, by channel");
    describe_counter!(names::PAGES_RETRIED, "Page attempts that failed temporarily and were rescheduled, by channel");
    describe_counter!(names::PAGES_THROTTLED, "Pages delayed because their destination got too many, by channel");
    describe_gauge!(names::OUTBOX_PENDING, "Pages waiting in the outbox to be sent");
    describe_histogram!(
        names::SEND_LATENCY,
        metrics::Unit::Seconds,
        "Time one gateway send took, by channel and outcome"
    );
    describe_counter!(names::INBOUND_ACKS, "Acknowledgements received by SMS reply or email link, by channel");
}
