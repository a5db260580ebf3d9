//! Server processes the benchmark starts, and what `/proc` says about them.
//!
//! Every server under test runs as a child process — a `manifold-bench
//! serve-…` subcommand or the `demo-provider` binary — so its peak resident
//! memory (`VmHWM`) and CPU time are its own and not mixed with the load
//! generator's. A child announces itself with one line on stdout,
//! `<name> listening on <addr>` (optionally followed by `pid <pid>` when a
//! wrapper such as `perf record` sits between), and stops when its stdin
//! closes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Linux reports CPU time in `/proc/<pid>/stat` in units of `USER_HZ`, which
/// the kernel fixes at 100 for user space whatever its internal tick rate.
const USER_HZ: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{name} could not be started: {reason}")]
    Spawn { name: String, reason: String },
    #[error("{name} did not announce its address within {seconds} s")]
    Silent { name: String, seconds: u64 },
    #[error("{name} exited before listening")]
    Exited { name: String },
    #[error("{name} announced an address that is not one: {line}")]
    BadAnnouncement { name: String, line: String },
}

/// CPU time (user + system, all threads) of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// CPU time of this process so far.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time(std::process::id())
}

/// `utime + stime` in ticks from the text of `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields after its closing parenthesis: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time all processes of the machine have used so far (busy time over
/// all CPUs from `/proc/stat`: everything but idle and I/O wait).
pub fn machine_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_busy_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&index| ticks.get(index).copied().unwrap_or(0))
        .sum();
    Some(busy)
}

/// Peak resident set size of process `pid`, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib_field(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// Bytes process `pid` has caused to be written to storage so far
/// (`write_bytes` of `/proc/<pid>/io`).
pub fn disk_written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Reads `<name> listening on <addr>[ pid <pid>]`.
pub fn parse_announcement(line: &str) -> Option<(SocketAddr, Option<u32>)> {
    let (_, rest) = line.split_once(" listening on ")?;
    let mut words = rest.split_whitespace();
    let addr = words.next()?.parse().ok()?;
    let pid = match (words.next(), words.next()) {
        (Some("pid"), Some(pid)) => Some(pid.parse().ok()?),
        _ => None,
    };
    Some((addr, pid))
}

/// A server child process.
pub struct ServerProcess {
    pub name: String,
    pub addr: SocketAddr,
    /// The process that serves: the child itself, or the one it announced.
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    /// Starts `program` and waits up to `patience` for its announcement.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        patience: Duration,
    ) -> Result<ServerProcess, ProcessError> {
        let mut child = Command::new(program)
            .args(args)
            // Servers under load must not spend time logging at info level
            // (unless asked to, for a diagnosis).
            .env(
                "RUST_LOG",
                // The notifier's start-up warning that OTPs go to a development
                // outbox is expected here: the benchmark reads codes from it.
                std::env::var("MANIFOLD_BENCH_SERVER_LOG")
                    .unwrap_or_else(|_| "warn,manifold_notify=error".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| ProcessError::Spawn {
                name: name.to_owned(),
                reason: format!("{}: {error}", program.display()),
            })?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(ProcessError::Exited {
                name: name.to_owned(),
            });
        };
        let (lines, first) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout).lines();
            let _ = lines.send(reader.next());
            // Keep draining, so the child never blocks on a full pipe.
            for _ in reader {}
        });
        let line = match first.recv_timeout(patience) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::Exited {
                    name: name.to_owned(),
                });
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::Silent {
                    name: name.to_owned(),
                    seconds: patience.as_secs(),
                });
            }
        };
        let Some((addr, pid)) = parse_announcement(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProcessError::BadAnnouncement {
                name: name.to_owned(),
                line,
            });
        };
        Ok(ServerProcess {
            name: name.to_owned(),
            addr,
            pid: pid.unwrap_or_else(|| child.id()),
            child,
            stdin,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid)
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid)
    }

    /// Closes stdin (a `manifold-bench serve-…` child then shuts down
    /// gracefully) and waits up to `grace`; kills what is still running then.
    pub fn stop(mut self, grace: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Reached only when `stop` was not called (an error path): never
        // leave a server running behind the benchmark.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Bytes allocated on disk under `dir` (blocks, not apparent sizes: sled
/// files can be sparse).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_a_stat_line_whose_name_has_spaces() {
        let stat =
            "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 52 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(783));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_figures_are_readable() {
        assert!(own_cpu_time().is_some());
        assert!(disk_written(std::process::id()).is_some());
        let rss = peak_rss(std::process::id()).expect("VmHWM is reported");
        assert!(rss > 0);
    }

    #[test]
    fn busy_ticks_of_proc_stat() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 50 2 25 4500 20 1 1 0 0 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert!(machine_cpu_time().is_some());
    }

    #[test]
    fn kib_fields_of_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t  1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(1234));
        assert_eq!(parse_kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn announcements_with_and_without_a_pid() {
        assert_eq!(
            parse_announcement("demo-provider listening on 127.0.0.1:4100"),
            Some(("127.0.0.1:4100".parse().unwrap(), None))
        );
        assert_eq!(
            parse_announcement("switch listening on 127.0.0.1:80 pid 77"),
            Some(("127.0.0.1:80".parse().unwrap(), Some(77)))
        );
        assert_eq!(parse_announcement("starting"), None);
        assert_eq!(parse_announcement("x listening on nowhere"), None);
    }
}
