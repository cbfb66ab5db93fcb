//! The metric names jatah exports (the README's "Metrics and API"), in one place for the tests
//! that check dashboards and rules against them and the test that finds
//! them in a real Prometheus.

/// The policy, traffic and gateway metrics every scrape carries from the
/// daemon's first second: tests/prometheus.rs finds each of them in
/// Prometheus.
pub const CORE: [&str; 18] = [
    "jatah_opd_download_bytes_total",
    "jatah_opd_upload_bytes_total",
    "jatah_opd_download_packets_total",
    "jatah_opd_upload_packets_total",
    "jatah_opd_download_dropped_packets_total",
    "jatah_opd_upload_dropped_packets_total",
    "jatah_opd_download_guaranteed_bytes_per_second",
    "jatah_opd_download_ceiling_bytes_per_second",
    "jatah_opd_upload_guaranteed_bytes_per_second",
    "jatah_opd_upload_ceiling_bytes_per_second",
    "jatah_opd_info",
    "jatah_unclassified_download_bytes_total",
    "jatah_unclassified_upload_bytes_total",
    "jatah_gateway_download_capacity_bytes_per_second",
    "jatah_gateway_upload_capacity_bytes_per_second",
    "jatah_policy_last_reload_successful",
    "jatah_policy_last_reload_timestamp_seconds",
    "jatah_build_info",
];

/// The rest: reload timing, history, data path health, and the diagnosis
/// stage's states, round trips and probes.
pub const MORE: [&str; 27] = [
    "jatah_policy_last_reload_duration_seconds",
    "jatah_history_available",
    "jatah_datapath_unparsed_packets_total",
    "jatah_opd_state",
    "jatah_gateway_state",
    "jatah_opd_rtt_seconds_bucket",
    "jatah_opd_rtt_seconds_sum",
    "jatah_opd_rtt_seconds_count",
    "jatah_opd_probe_up",
    "jatah_opd_probe_rtt_seconds",
    "jatah_opd_probe_sent_total",
    "jatah_opd_probe_lost_total",
    "jatah_upstream_probe_up",
    "jatah_upstream_probe_rtt_seconds",
    "jatah_upstream_probe_sent_total",
    "jatah_upstream_probe_lost_total",
    "jatah_opd_syn_unanswered_total",
    "jatah_opd_tcp_segments_sampled_total",
    "jatah_opd_tcp_retransmissions_total",
    "jatah_opd_tcp_payload_bytes_sampled_total",
    "jatah_opd_tcp_upload_acked_bytes_total",
    "jatah_gateway_download_effective_capacity_bytes_per_second",
    "jatah_gateway_upload_effective_capacity_bytes_per_second",
    "jatah_interface_attached",
    "jatah_kernel_repairs_total",
    "jatah_kernel_errors_total",
    "jatah_opd_misplaced_packets_total",
];

/// Present only while the uplink delivers less than asked of it (a
/// delivered estimate at medium confidence or better).
pub const WHILE_SHORT: [&str; 2] = [
    "jatah_gateway_download_delivered_bytes_per_second",
    "jatah_gateway_upload_delivered_bytes_per_second",
];

/// Every metric jatah exports, including the diagnosis stage's.
pub fn exported() -> impl Iterator<Item = &'static str> {
    CORE.into_iter().chain(MORE).chain(WHILE_SHORT)
}

/// The value of one sample in jatah's /metrics, named as exposed (labels
/// included, e.g. `jatah_opd_misplaced_packets_total{opd="dinsos"}`); 0
/// while the series is absent.
pub fn sample(lab: &jatah::lab::Lab, series: &str) -> u64 {
    let (status, body) = lab.http_get("/metrics").unwrap();
    assert_eq!(status, 200);
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}
