//! The final report of a load run, as JSON or as readable text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::worker::Shared;
use super::LoadgenArgs;

/// Upper bounds (µs) of the buckets of the latency table; one more bucket holds the rest.
const BUCKET_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BAR_WIDTH: u64 = 40;

/// The result of [`super::run`].
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The target base URL.
    pub target: String,
    /// Requests that got an HTTP answer or failed in transport.
    pub requests: u64,
    /// Answers by HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (refused, reset, timed out after 10 s, ...).
    pub transport_errors: u64,
    /// The first transport error, to tell why they happened.
    pub first_transport_error: Option<String>,
    /// Requests that re-sent an earlier body (counted in `requests`).
    pub duplicates_sent: u64,
    /// Requests abandoned in flight when the duration ran out or shutdown came.
    pub cancelled: u64,
    /// Why the run stopped: `count`, `duration` or `shutdown`.
    pub stop_reason: String,
    /// Wall time of the timed section.
    pub elapsed_secs: f64,
    /// 2xx answers per second.
    pub throughput_per_sec: f64,
    /// Latency percentiles, µs, from just before sending to the end of the answer body.
    pub latency_us: LatencySummary,
    /// Latency distribution in fixed buckets.
    pub latency_buckets: Vec<LatencyBucket>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Target rate (requests/s), 0 = unlimited.
    pub target_rate: u32,
    /// Tenants the requests were spread over.
    pub tenants: usize,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Requests whose latency is at most `le_us` and above the previous bucket's bound;
/// `le_us: None` is the overflow bucket.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyBucket {
    pub le_us: Option<u64>,
    pub count: u64,
}

impl LatencySummary {
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        Self {
            p50: hist.value_at_quantile(0.50),
            p95: hist.value_at_quantile(0.95),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
        }
    }
}

fn buckets(hist: &Histogram<u64>) -> Vec<LatencyBucket> {
    let mut counts = vec![0_u64; BUCKET_BOUNDS_US.len() + 1];
    for value in hist.iter_recorded() {
        let micros = hist.highest_equivalent(value.value_iterated_to());
        let ix = BUCKET_BOUNDS_US.partition_point(|&bound| bound < micros);
        counts[ix] += value.count_at_value();
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(ix, count)| LatencyBucket {
            le_us: BUCKET_BOUNDS_US.get(ix).copied(),
            count,
        })
        .collect()
}

impl LoadReport {
    pub(crate) fn build(
        args: &LoadgenArgs,
        tenants: usize,
        shared: &Shared,
        elapsed: Duration,
        stop_reason: &str,
    ) -> Self {
        let stats = shared.merged();
        let elapsed_secs = elapsed.as_secs_f64();
        Self {
            target: args.target.clone(),
            requests: stats.requests(),
            by_status: stats.by_status.clone(),
            transport_errors: stats.transport_errors,
            first_transport_error: stats.first_transport_error.clone(),
            duplicates_sent: stats.duplicates,
            cancelled: stats.cancelled,
            stop_reason: stop_reason.to_owned(),
            elapsed_secs,
            throughput_per_sec: stats.ok as f64 / elapsed_secs.max(1e-9),
            latency_us: LatencySummary::from_histogram(&stats.latency_us),
            latency_buckets: buckets(&stats.latency_us),
            concurrency: args.concurrency,
            target_rate: args.rate,
            tenants,
        }
    }

    /// Answers with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }

    /// The report as pretty-printed JSON.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// A readable summary with a small latency histogram table.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.write_summary(&mut out);
        self.write_table(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) {
        let rate = match self.target_rate {
            0 => "unlimited".to_owned(),
            n => format!("{n}/s"),
        };
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        let l = &self.latency_us;
        let _ = writeln!(out, "loadgen report for {}", self.target);
        let _ = writeln!(
            out,
            "  stopped by   {} after {:.2} s (concurrency {}, rate {rate}, {} tenants)",
            self.stop_reason, self.elapsed_secs, self.concurrency, self.tenants
        );
        let _ = writeln!(
            out,
            "  requests     {} ({} 2xx, {} transport errors, {} duplicates, {} cancelled)",
            self.requests,
            self.ok(),
            self.transport_errors,
            self.duplicates_sent,
            self.cancelled
        );
        let _ = writeln!(out, "  statuses     {}", or_none(&statuses.join("  ")));
        if let Some(error) = &self.first_transport_error {
            let _ = writeln!(out, "  first error  {error}");
        }
        let _ = writeln!(out, "  throughput   {:.1} 2xx/s", self.throughput_per_sec);
        let _ = writeln!(
            out,
            "  latency      p50 {}  p95 {}  p99 {}  p99.9 {}  max {}  mean {}",
            fmt_us(l.p50),
            fmt_us(l.p95),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean.round() as u64)
        );
    }

    /// Buckets from the first to the last non-empty one, with a bar each.
    fn write_table(&self, out: &mut String) {
        let used = |b: &&LatencyBucket| b.count > 0;
        let (Some(first), Some(last)) = (
            self.latency_buckets.iter().position(|b| used(&b)),
            self.latency_buckets.iter().rposition(|b| used(&b)),
        ) else {
            return;
        };
        let total: u64 = self.latency_buckets.iter().map(|b| b.count).sum();
        let widest = self
            .latency_buckets
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(1);
        let _ = writeln!(out, "\n  latency      requests       %");
        for bucket in &self.latency_buckets[first..=last] {
            let label = match bucket.le_us {
                Some(bound) => format!("<= {}", fmt_us(bound)),
                None => format!(
                    " > {}",
                    fmt_us(BUCKET_BOUNDS_US[BUCKET_BOUNDS_US.len() - 1])
                ),
            };
            let pct = 100.0 * bucket.count as f64 / total as f64;
            let bar = "#".repeat((bucket.count * BAR_WIDTH).div_ceil(widest) as usize);
            let _ = writeln!(out, "  {label:<11} {:>9} {pct:>6.1}%  {bar}", bucket.count);
        }
    }
}

fn or_none(text: &str) -> &str {
    if text.is_empty() {
        "none"
    } else {
        text
    }
}

/// `850 us`, `1.25 ms`, `2.50 s`.
fn fmt_us(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} us"),
        1_000..1_000_000 => format!("{:.2} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut hist = Histogram::new(3).unwrap();
        for &v in values {
            hist.record(v).unwrap();
        }
        hist
    }

    #[test]
    fn buckets_put_each_value_under_its_bound() {
        let hist = histogram(&[50, 100, 101, 900, 20_000_000]);
        let buckets = buckets(&hist);
        assert_eq!(buckets.len(), BUCKET_BOUNDS_US.len() + 1);
        assert_eq!(buckets[0].count, 2, "50 and 100 are <= 100");
        assert_eq!(buckets[1].count, 1, "101 is <= 250");
        assert_eq!(buckets[3].count, 1, "900 is <= 1000");
        assert_eq!(buckets.last().unwrap().le_us, None);
        assert_eq!(buckets.last().unwrap().count, 1);
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 5);
    }

    #[test]
    fn empty_histogram_gives_zero_summary() {
        let summary = LatencySummary::from_histogram(&histogram(&[]));
        assert_eq!(summary.p99, 0);
        assert_eq!(summary.max, 0);
    }

    #[test]
    fn formats_latencies_by_magnitude() {
        assert_eq!(fmt_us(850), "850 us");
        assert_eq!(fmt_us(1_250), "1.25 ms");
        assert_eq!(fmt_us(2_500_000), "2.50 s");
    }

    #[test]
    fn text_lists_statuses_and_only_the_used_buckets() {
        let hist = histogram(&[300, 400, 3_000]);
        let report = LoadReport {
            target: "http://127.0.0.1:8080".to_owned(),
            requests: 3,
            by_status: BTreeMap::from([(202, 2), (503, 1)]),
            transport_errors: 0,
            first_transport_error: None,
            duplicates_sent: 1,
            cancelled: 0,
            stop_reason: "count".to_owned(),
            elapsed_secs: 1.0,
            throughput_per_sec: 2.0,
            latency_us: LatencySummary::from_histogram(&hist),
            latency_buckets: buckets(&hist),
            concurrency: 4,
            target_rate: 0,
            tenants: 2,
        };
        let text = report.render_text();
        assert!(text.contains("202: 2  503: 1"), "{text}");
        assert!(
            text.contains("(2 2xx, 0 transport errors, 1 duplicates"),
            "{text}"
        );
        assert!(text.contains("<= 500 us"), "{text}");
        assert!(text.contains("<= 5.00 ms"), "{text}");
        assert!(
            !text.contains("<= 100 us"),
            "empty leading buckets are skipped: {text}"
        );
        assert!(
            !text.contains("<= 10.00 ms"),
            "empty trailing buckets are skipped: {text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.render_json()).unwrap();
        assert_eq!(json["by_status"]["202"], 2);
        assert_eq!(json["latency_us"]["max"], report.latency_us.max);
    }
}
