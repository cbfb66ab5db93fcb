//! jatah's own operational metrics, on the `prometheus` crate's types in a
//! registry of the daemon's own, with the crate's standard `process_*`
//! collector (CPU, resident memory, open file descriptors, start time).
//! `/metrics` appends this registry's text after the per-OPD series, which
//! keep their own writer (`http::exposition`) for speed.
//!
//! Counters are counted where things happen (a failed kernel operation, a
//! repair); gauges that mirror a part of the state (the last reload, the
//! history store) are set from it at each scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// What the keeper repairs, as `jatah_kernel_repairs_total` names it.
pub const REPAIRS: [&str; 3] = ["root_qdisc", "class", "classifier"];

/// The last policy load as the gauges show it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastReload {
    pub successful: bool,
    /// Unix time; 0 before any.
    pub at_seconds: f64,
    pub duration_seconds: f64,
}

/// The kernel side's counters and the attached gauge: written by the link
/// keeper and by whoever sees a kernel operation fail.
pub struct KernelMetrics {
    errors: IntCounterVec,
    repairs: IntCounterVec,
    attached: IntGaugeVec,
    /// The interfaces the gauge has a series for.
    attached_now: Mutex<BTreeMap<String, bool>>,
}

impl Default for KernelMetrics {
    fn default() -> Self {
        KernelMetrics {
            errors: IntCounterVec::new(
                Opts::new(
                    "jatah_kernel_errors_total",
                    "Netlink and BPF operations that failed, by operation and interface (each is also logged).",
                ),
                &["interface", "operation"],
            )
            .expect("a valid metric"),
            repairs: IntCounterVec::new(
                Opts::new(
                    "jatah_kernel_repairs_total",
                    "Parts of jatah's data path found gone from an interface and put back, by interface and what: root_qdisc (replaced), class (deleted), classifier (detached). Each is also logged.",
                ),
                &["interface", "what"],
            )
            .expect("a valid metric"),
            attached: IntGaugeVec::new(
                Opts::new(
                    "jatah_interface_attached",
                    "1 while jatah's classifiers and HTB tree are on the interface; 0 while it is missing or re-attaching failed.",
                ),
                &["interface"],
            )
            .expect("a valid metric"),
            attached_now: Mutex::new(BTreeMap::new()),
        }
    }
}

impl KernelMetrics {
    /// Counts a failed netlink or BPF operation on an interface.
    pub fn count_error(&self, operation: &str, interface: &str) {
        self.errors
            .with_label_values(&[interface, operation])
            .inc();
    }

    /// Counts a part of jatah's data path put back on an interface.
    pub fn count_repair(&self, what: &str, interface: &str) {
        self.repairs.with_label_values(&[interface, what]).inc();
    }

    /// Whether jatah is on each shaped interface. Every kind of repair of
    /// an interface is exported from then on, at zero until one happens,
    /// so the first repair is an increase.
    pub fn set_attached(&self, attached: BTreeMap<String, bool>) {
        let mut now = self
            .attached_now
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for gone in now.keys().filter(|i| !attached.contains_key(*i)) {
            let _ = self.attached.remove_label_values(&[gone]);
        }
        for (iface, up) in &attached {
            self.attached
                .with_label_values(&[iface])
                .set(i64::from(*up));
            for what in REPAIRS {
                self.repairs.with_label_values(&[iface, what]);
            }
        }
        *now = attached;
    }
}

/// The registry `/metrics` appends, and the metrics only it holds.
pub struct OpsMetrics {
    registry: Registry,
    reload_successful: IntGauge,
    reload_timestamp: Gauge,
    reload_duration: Gauge,
    history_available: IntGauge,
    scrape_duration: Histogram,
}

/// Buckets of `jatah_scrape_duration_seconds`: a scrape of 1,000 OPDs
/// should take under 20 ms.
const SCRAPE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl OpsMetrics {
    /// The registry with the kernel's metrics, the daemon's own and the
    /// process collector.
    pub fn new(kernel: &KernelMetrics) -> OpsMetrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid metric");
        let reload_successful = gauge(
            "jatah_policy_last_reload_successful",
            "1 if the last policy load or reload succeeded.",
        );
        let reload_timestamp = Gauge::new(
            "jatah_policy_last_reload_timestamp_seconds",
            "When the policy was last loaded or reloaded (Unix time).",
        )
        .expect("a valid metric");
        let reload_duration = Gauge::new(
            "jatah_policy_last_reload_duration_seconds",
            "How long the last policy load or reload took to apply.",
        )
        .expect("a valid metric");
        let history_available = gauge(
            "jatah_history_available",
            "1 if the usage history store is writable and answering.",
        );
        let build_info = IntGaugeVec::new(
            Opts::new("jatah_build_info", "jatah's version (value 1)."),
            &["version"],
        )
        .expect("a valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let scrape_duration = Histogram::with_opts(
            HistogramOpts::new(
                "jatah_scrape_duration_seconds",
                "How long /metrics took to read and write everything, per scrape (this scrape's own time is in the next one).",
            )
            .buckets(SCRAPE_BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(kernel.errors.clone()),
            Box::new(kernel.repairs.clone()),
            Box::new(kernel.attached.clone()),
            Box::new(reload_successful.clone()),
            Box::new(reload_timestamp.clone()),
            Box::new(reload_duration.clone()),
            Box::new(history_available.clone()),
            Box::new(build_info),
            Box::new(scrape_duration.clone()),
            Box::new(ProcessCollector::for_self()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        OpsMetrics {
            registry,
            reload_successful,
            reload_timestamp,
            reload_duration,
            history_available,
            scrape_duration,
        }
    }

    /// Records how long a scrape took.
    pub fn observe_scrape(&self, seconds: f64) {
        self.scrape_duration.observe(seconds);
    }

    /// Sets the gauges from the state and appends every metric of the
    /// registry to `out` in the text format.
    pub fn encode(&self, reload: LastReload, history_available: bool, out: &mut String) {
        self.reload_successful.set(i64::from(reload.successful));
        self.reload_timestamp.set(reload.at_seconds);
        self.reload_duration.set(reload.duration_seconds);
        self.history_available.set(i64::from(history_available));
        let mut text = Vec::new();
        // Encoding into memory fails only on an invalid family, which the
        // constructors above already refused.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ops: &OpsMetrics) -> String {
        let mut out = String::new();
        ops.encode(LastReload::default(), true, &mut out);
        out
    }

    #[test]
    fn kernel_counters_and_the_process_collector_reach_the_text() {
        let kernel = KernelMetrics::default();
        let ops = OpsMetrics::new(&kernel);
        let before = text(&ops);
        assert!(!before.contains("jatah_kernel_errors_total"), "{before}");
        assert!(!before.contains("jatah_interface_attached"), "{before}");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "jatah_build_info{version=",
            "jatah_history_available 1",
            "jatah_policy_last_reload_successful 0",
        ] {
            assert!(before.contains(name), "{name} missing:\n{before}");
        }
        kernel.count_error("attach", "lan0");
        kernel.count_error("attach", "lan0");
        kernel.set_attached([("lan0".to_string(), true), ("wan0".to_string(), false)].into());
        kernel.count_repair("class", "wan0");
        let after = text(&ops);
        for line in [
            "jatah_kernel_errors_total{interface=\"lan0\",operation=\"attach\"} 2",
            "jatah_interface_attached{interface=\"lan0\"} 1",
            "jatah_interface_attached{interface=\"wan0\"} 0",
            "jatah_kernel_repairs_total{interface=\"wan0\",what=\"class\"} 1",
            "jatah_kernel_repairs_total{interface=\"lan0\",what=\"root_qdisc\"} 0",
        ] {
            assert!(after.lines().any(|l| l == line), "{line} missing:\n{after}");
        }
        // An interface no longer shaped leaves the gauge.
        kernel.set_attached([("lan0".to_string(), true)].into());
        assert!(!text(&ops).contains("jatah_interface_attached{interface=\"wan0\"}"));
    }
}
