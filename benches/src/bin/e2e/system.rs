//! Facts about processes and the machine, from Linux `/proc`, and CPU pinning with `taskset`.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CPU time a process (all its threads) has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // `utime` and `stime` are fields 14 and 15 of the line; the state (field 3) is fields[0].
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64))
}

/// CPU time the local MariaDB (every `mariadbd` or `mysqld` process of this machine) has used so
/// far; `None` when none runs here (a remote store).
pub fn store_cpu_time() -> Option<Duration> {
    let output = Command::new("pidof").args(["mariadbd", "mysqld"]).stderr(Stdio::null()).output().ok()?;
    let pids = String::from_utf8(output.stdout).ok()?;
    let spent: Vec<Duration> =
        pids.split_whitespace().filter_map(|pid| cpu_time(pid.parse().ok()?)).collect();
    (!spent.is_empty()).then(|| spent.into_iter().sum())
}

/// CPU time of this process (the load generator).
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time(std::process::id())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 almost everywhere).
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf").arg("CLK_TCK").stderr(Stdio::null()).output().ok();
        output.and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok()).unwrap_or(100)
    })
}

/// The peak resident set of a process (`VmHWM`), in bytes.
pub fn peak_resident_bytes(pid: u32) -> Option<u64> {
    status_kilobytes(&format!("/proc/{pid}/status"), "VmHWM:").map(|kilobytes| kilobytes * 1024)
}

/// The resident set of a process now (`VmRSS`), in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    status_kilobytes(&format!("/proc/{pid}/status"), "VmRSS:").map(|kilobytes| kilobytes * 1024)
}

fn status_kilobytes(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-minute load average: what else was running on the machine.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// True when `taskset` can pin processes here.
pub fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Pins every thread of this process (and threads it starts later) to `cores` ("1", "0,1").
pub fn pin_self(cores: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset could not pin the load generator to cores {cores}");
    Ok(())
}

/// Cores, memory and CPU model, for the report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = status_kilobytes("/proc/meminfo", "MemTotal:")
        .map_or("?".into(), |kilobytes| format!("{:.1} GiB", kilobytes as f64 / 1_048_576.0));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown CPU".into(), |(_, model)| model.trim().to_string());
    format!("{cores} cores ({model}), {memory} memory")
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", of_day / 3_600, of_day % 3_600 / 60)
}

/// `seconds` from now (negative: ago), as RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn rfc3339_in(seconds: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64);
    let at = now + seconds;
    let (days, of_day) = (at.div_euclid(86_400), at.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn day_counts_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
