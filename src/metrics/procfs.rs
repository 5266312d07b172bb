//! The standard `process_*` metrics (what Prometheus' process collector exports),
//! read from `/proc/self` at scrape time. Where `/proc` cannot be read (not Linux, a
//! restricted sandbox) the affected metrics are left out rather than reported as 0.

use crate::metrics::Families;

/// The fields of `/proc/self/stat` the metrics need (proc(5)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size (vsize), in bytes.
    pub virtual_bytes: u64,
    /// Resident set size (rss), in pages.
    pub resident_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time (`btime` of `/proc/stat`), in Unix seconds.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

/// The soft limit on open files.
fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Adds the process metrics to a scrape.
pub fn write(out: &mut Families) {
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    {
        out.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            &[],
            stat.cpu_ticks as f64 / ticks,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &[],
            stat.virtual_bytes as f64,
        );
        if let Some(page) = sysconf(libc::_SC_PAGESIZE) {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                (stat.resident_pages * page) as f64,
            );
        }
        if let Some(boot) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_boot_time)
        {
            out.gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                &[],
                boot as f64 + stat.start_ticks as f64 / ticks,
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            dir.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            &[],
            max as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may choose.
        let text = "4242 (clu ster) dns) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 104857600 2048 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 175,
                start_ticks: 123456,
                virtual_bytes: 104857600,
                resident_pages: 2048,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn boot_time_comes_from_btime() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reports_sane_values() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("no /proc: process metrics not checked");
            return;
        }
        let mut f = Families::default();
        write(&mut f);
        let text = f.render();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        // Started within the last day, not in the future (a tick of rounding allowed).
        assert!(start <= now + 1.0 && start > now - 86_400.0, "start {start}, now {now}");
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
