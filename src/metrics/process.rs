//! The standard `process_*` metrics, collected on scrape. Written here rather than taken
//! from the prometheus crate, whose `process_cpu_seconds_total` counts whole seconds only
//! (kernel ticks divided down): a relay that idles at a few milliseconds a minute showed
//! as a flat 0. CPU time comes from `getrusage` (microseconds), the rest from `/proc`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

pub struct ProcessCollector {
    cpu: Counter,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> prometheus::Result<Self> {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))?;
        let gauge = |name: &str, help: &str| Gauge::with_opts(Opts::new(name, help));
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.")?;
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )?;
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        let descs = [
            cpu.desc(),
            resident.desc(),
            virtual_memory.desc(),
            open_fds.desc(),
            max_fds.desc(),
            start_time.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let collector = Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            descs,
        };
        // Under ProcSubset=pid (the unit's) /proc/stat is hidden; the collector is made
        // as the relay starts, so now is within milliseconds of the truth.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        collector
            .start_time
            .set(start_time_seconds().unwrap_or(now));
        Ok(collector)
    }
}

/// User + system CPU time of the whole process, in seconds (microsecond resolution).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as f64 }
}

/// (virtual, resident) bytes from `/proc/self/statm`.
fn memory() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut pages = statm.split_whitespace().map(|n| n.parse::<f64>().ok());
    let (size, resident) = (pages.next()??, pages.next()??);
    Some((size * page_size(), resident * page_size()))
}

fn max_fds() -> Option<f64> {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur as f64)
}

/// Field 22 of `/proc/self/stat` (clock ticks after boot) plus `btime` of `/proc/stat`.
fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(boot + ticks / hz)
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = cpu_seconds();
        // A counter only goes up; concurrent scrapes may race, the larger value wins.
        let delta = now - self.cpu.get();
        if delta > 0.0 {
            self.cpu.inc_by(delta);
        }
        if let Some((size, resident)) = memory() {
            self.virtual_memory.set(size);
            self.resident.set(resident);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as f64);
        }
        if let Some(max) = max_fds() {
            self.max_fds.set(max);
        }
        [
            self.cpu.collect(),
            self.resident.collect(),
            self.virtual_memory.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.start_time.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_has_sub_second_resolution_and_the_rest_is_read() {
        let collector = ProcessCollector::new().unwrap();
        // Burn a little CPU: well under a second, but visible.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let families = collector.collect();
        let value = |name: &str| {
            let family = families.iter().find(|f| f.name() == name).unwrap();
            let metric = &family.get_metric()[0];
            if name.ends_with("_total") {
                metric.get_counter().get_value()
            } else {
                metric.get_gauge().get_value()
            }
        };
        let cpu = value("process_cpu_seconds_total");
        assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start > now - 3600.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }
}
