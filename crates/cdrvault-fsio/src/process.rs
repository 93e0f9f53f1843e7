//! Telling whether a process recorded earlier still runs (Linux `/proc`):
//! a pid alone is not enough, pids are reused; with its start time (clock
//! ticks after boot) and the boot it belongs to, a recorded process is the
//! running one only if all three match.

use std::fs;
use std::path::Path;

/// A process as recorded (in the access log's `request.executing`, say)
/// so that a later process can tell whether it is still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat`
    /// field 22); `None` where `/proc` cannot tell.
    pub start_ticks: Option<u64>,
    /// The boot it belongs to (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: Option<String>,
}

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What `/proc/<pid>/stat` says: `None` if there is no such process, else
/// (state, start time).
fn stat(pid: u32) -> Option<(char, Option<u64>)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22.
    let start = fields.nth(18).and_then(|f| f.parse().ok());
    Some((state, start))
}

impl ProcessIdentity {
    /// This process.
    pub fn current() -> ProcessIdentity {
        let pid = std::process::id();
        ProcessIdentity {
            pid,
            start_ticks: stat(pid).and_then(|(_, t)| t),
            boot_id: boot_id(),
        }
    }

    /// Whether the recorded process is still running: same boot, a live
    /// process with that pid (not a zombie), started at the recorded time.
    /// Where `/proc` is not available nothing can be told, and the answer
    /// is yes (never declare a running process gone).
    pub fn is_running(&self) -> bool {
        if !Path::new("/proc/self/stat").exists() {
            return true;
        }
        if let (Some(then), Some(now)) = (&self.boot_id, boot_id()) {
            if *then != now {
                return false;
            }
        }
        match stat(self.pid) {
            None => false,
            Some(('Z' | 'X' | 'x', _)) => false,
            Some((_, start)) => match (self.start_ticks, start) {
                (Some(then), Some(now)) => then == now,
                _ => true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_finished_or_reused_one_does_not() {
        let me = ProcessIdentity::current();
        assert!(me.is_running());
        if Path::new("/proc/self/stat").exists() {
            assert!(me.start_ticks.is_some());
            // Same pid, another start: the pid was reused.
            let reused = ProcessIdentity {
                start_ticks: me.start_ticks.map(|t| t + 1),
                ..me.clone()
            };
            assert!(!reused.is_running());
            // Another boot.
            let rebooted = ProcessIdentity {
                boot_id: Some("another-boot".into()),
                ..me.clone()
            };
            assert!(!rebooted.is_running());
            // A child that has exited (and was reaped).
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            let start = stat(pid).and_then(|(_, t)| t);
            child.wait().unwrap();
            let gone = ProcessIdentity {
                pid,
                start_ticks: start,
                boot_id: me.boot_id.clone(),
            };
            assert!(!gone.is_running());
        }
    }

    #[test]
    fn a_command_name_with_parentheses_and_spaces_parses() {
        // The layout of /proc/<pid>/stat, with an awkward name.
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        let rest = &line[line.rfind(')').unwrap() + 1..];
        let mut f = rest.split_whitespace();
        assert_eq!(f.next(), Some("S"));
        assert_eq!(f.nth(18), Some("777"));
    }
}
