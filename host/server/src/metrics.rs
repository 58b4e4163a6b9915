//! The host's metrics in Prometheus's text format (`GET /metrics`): counters, gauges and
//! histograms keyed by name and labels, recorded where things happen (the dispatcher, the job
//! manager and worker, fetch, webhooks) into one process-wide registry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of every histogram's buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0];

/// What each metric is, for `# HELP` / `# TYPE`.
const FAMILIES: [(&str, &str, &str); 11] = [
    ("focal_http_requests_total", "counter", "HTTP requests by plugin (or host route) and status"),
    ("focal_plugin_request_duration_seconds", "histogram", "Time to answer a request, by plugin"),
    ("focal_plugin_errors_total", "counter", "Plugin calls that failed (trap, timeout, memory, bad response, busy), by plugin and kind"),
    ("focal_requests_refused_total", "counter", "Requests refused before any plugin ran, by reason (key, quota)"),
    ("focal_jobs_submitted_total", "counter", "Jobs queued, by tenant"),
    ("focal_jobs_finished_total", "counter", "Jobs ended, by tenant and outcome (success, error, stopped)"),
    ("focal_jobs_queued", "gauge", "Unfinished (waiting or running) jobs, by tenant"),
    ("focal_job_duration_seconds", "histogram", "Time from a job's start to its end, by tenant"),
    ("focal_engine_step_seconds", "histogram", "Time of one sampling step"),
    ("focal_fetches_total", "counter", "Outbound fetches for plugins, by outcome"),
    ("focal_webhooks_total", "counter", "Webhook deliveries, by outcome"),
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, f64>,
    gauges: BTreeMap<Key, f64>,
    histograms: BTreeMap<Key, Histogram>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (name, labels.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

pub fn inc(name: &'static str, labels: &[(&'static str, &str)]) {
    *registry().lock().unwrap().counters.entry(key(name, labels)).or_default() += 1.0;
}

pub fn set(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    registry().lock().unwrap().gauges.insert(key(name, labels), value);
}

pub fn observe(name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
    let mut r = registry().lock().unwrap();
    let h = r.histograms.entry(key(name, labels)).or_default();
    for (i, le) in BUCKETS.iter().enumerate() {
        if seconds <= *le {
            h.counts[i] += 1;
        }
    }
    h.sum += seconds;
    h.count += 1;
}

/// Escape a label value (`\`, `"`, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(pairs: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let all: Vec<String> =
        pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).chain(extra.map(|(k, v)| format!("{k}=\"{v}\""))).collect();
    if all.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", all.join(","))
    }
}

/// Everything recorded, in the text exposition format (version 0.0.4).
pub fn render() -> String {
    let r = registry().lock().unwrap();
    let mut out = String::new();
    for (family, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for ((name, pairs), v) in r.counters.iter().chain(&r.gauges).filter(|((n, _), _)| *n == family) {
            let _ = writeln!(out, "{name}{} {v}", labels(pairs, None));
        }
        for ((name, pairs), h) in r.histograms.iter().filter(|((n, _), _)| *n == family) {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{} {}", labels(pairs, Some(("le", le.to_string()))), h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{} {}", labels(pairs, Some(("le", "+Inf".into()))), h.count);
            let _ = writeln!(out, "{name}_sum{} {}", labels(pairs, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", labels(pairs, None), h.count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        inc("focal_fetches_total", &[("outcome", "ok")]);
        inc("focal_fetches_total", &[("outcome", "ok")]);
        set("focal_jobs_queued", &[("tenant", "a\"b")], 3.0);
        observe("focal_engine_step_seconds", &[], 0.02);
        observe("focal_engine_step_seconds", &[], 2.0);
        let text = render();
        assert!(text.contains("focal_fetches_total{outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("focal_jobs_queued{tenant=\"a\\\"b\"} 3"), "{text}");
        assert!(text.contains("focal_engine_step_seconds_bucket{le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("focal_engine_step_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("# TYPE focal_job_duration_seconds histogram"));
    }
}
