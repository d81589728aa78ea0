//! Measurements of the target process (`/proc/<pid>`) and of the samples the clients took,
//! rendered as a table (stderr) and JSON.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// CPU time and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux ABI in use).
pub const TICKS_PER_SECOND: f64 = 100.0;

impl ProcSample {
    /// Reads `/proc/<pid>/stat` (fields 14 and 15) and `/proc/<pid>/status` (VmRSS).
    pub fn read(pid: u32) -> Result<ProcSample> {
        let base = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read_to_string(base.join("stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name (field 2) may hold spaces; fields count from after its ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .context("short stat")?
                .parse::<u64>()
                .context("stat field")
        };
        let cpu_ticks = field(14)? + field(15)?;
        let status = std::fs::read_to_string(base.join("status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .context("no VmRSS")?
            .parse()?;
        Ok(ProcSample { cpu_ticks, rss_kib })
    }

    /// CPU seconds from `self` to `later`.
    pub fn cpu_seconds_until(&self, later: &ProcSample) -> f64 {
        later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / TICKS_PER_SECOND
    }
}

/// p50/p99/max of a sample set, in the samples' unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; sorts `samples`.
    pub fn of(samples: &mut [f64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Percentiles {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Prints `rows` as an aligned two-column table on stderr (stdout carries the JSON).
pub fn print_table(title: &str, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    eprintln!("== {title}");
    for (k, v) in rows {
        eprintln!("  {k:<width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn reads_our_own_process() {
        let s = ProcSample::read(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        // Burn a little CPU so the counter moves (ticks are 10 ms).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let later = ProcSample::read(std::process::id()).unwrap();
        assert!(s.cpu_seconds_until(&later) > 0.0);
    }
}
