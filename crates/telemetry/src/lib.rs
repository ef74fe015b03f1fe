//! Logging and metrics set-up shared by every binary.
//!
//! [`init`] installs a `tracing` subscriber that writes either human-readable lines
//! (`LOG_FORMAT=pretty`, the default) or one JSON object per line (`LOG_FORMAT=json`).
//! Both put the service name on every line, so the interleaved output of `ctl up` and a
//! log shipper's index both say who spoke. Verbosity follows `RUST_LOG` (default
//! `info`). Span fields (`event_id`, `profile_id`) are printed with each line inside the
//! span, which is how one event is followed through the fleet.
//!
//! [`metrics_handle`] installs the process-wide Prometheus recorder once; services
//! render it at `GET /metrics`. [`init`] installs it too, before anything is recorded:
//! a metric handle taken before the recorder exists (a consumer's meters, created when
//! it starts) stays bound to the no-op recorder for good.
//!
//! # Assumptions, running, testing
//!
//! [`init`] belongs first thing in `main`; a second call (several services in one test
//! process) keeps the first subscriber. Tests: `cargo nextest run -p telemetry`. No
//! benchmark.

use std::fmt;
use std::sync::OnceLock;

use config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global tracing subscriber for `service`, and the Prometheus recorder.
/// Calling it again (tests start several services in one process) keeps the first.
pub fn init(service: &'static str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(ServiceFormat {
                service,
                inner: format::format().with_target(false),
            })
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(JsonServiceFormat {
                service,
                inner: format::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
            })
            .fmt_fields(format::JsonFields::new())
            .try_init(),
    };
    // Err only means a subscriber is already installed (several services in one test).
    drop(result);
    metrics_handle();
}

/// Prefixes every human-readable line with the service name.
struct ServiceFormat<F> {
    service: &'static str,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for ServiceFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{:<16} ", self.service)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Adds `"service":"<name>"` as the first key of every JSON line.
struct JsonServiceFormat<F> {
    service: &'static str,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for JsonServiceFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"service\":\"{}\",{rest}", self.service),
            None => writer.write_str(&line),
        }
    }
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still
            // renders this recorder's (then empty) metrics rather than crashing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_after_install() {
        let handle = metrics_handle();
        metrics::counter!("telemetry_test_total").increment(3);
        assert!(handle.render().contains("telemetry_test_total 3"));
    }
}
