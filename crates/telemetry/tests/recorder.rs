//! The Prometheus recorder is in place as soon as a service has called `init`: a metric
//! handle taken before the first scrape (as consumers take theirs when they start)
//! still reports. Its own test binary, so no other test installed the recorder first.

#[test]
fn metrics_recorded_right_after_init_are_rendered() {
    telemetry::init("telemetry-test", config::LogFormat::Pretty);
    let counter = metrics::counter!("telemetry_early_total");
    counter.increment(2);
    let rendered = telemetry::metrics_handle().render();
    assert!(
        rendered.contains("telemetry_early_total 2"),
        "not rendered: {rendered}"
    );
}
