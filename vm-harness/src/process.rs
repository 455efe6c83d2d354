//! Child processes that die with their owner, run directories, and a sweep that removes
//! what an earlier, killed test process left behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// A child process that is SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Guarded {
    child: Child,
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawn `cmd` in its own process group (so a terminal's Ctrl-C reaches only us, and
    /// we decide how the child ends).
    pub(crate) fn spawn(cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| Error::Tool {
            command: format!("{cmd:?}"),
            status: "could not start".into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            child,
            status: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has ended (reaps it).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait up to `limit` for the process to end on its own.
    pub(crate) fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap. Idempotent.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run a host tool to completion; its stdout on success, [`Error::Tool`] otherwise.
pub(crate) fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            command: format!("{program} {}", args.join(" ")),
            status: "could not start".into(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed (scripts/vm-deps.sh installs it)")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(Error::Tool {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`), the
/// pair (pid, start time) names a process unambiguously.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may contain spaces
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The last `n` lines of a text file (empty if it cannot be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return String::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}

/// A per-rig directory under the run root: control sockets, console logs, LUN files.
///
/// It records the owner process and every child PID and socket file, so that
/// [`sweep_stale`] can clean up after a test process that was killed outright (a panic
/// unwinds and runs the `Drop` impls; SIGKILL does not).
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
    keep: bool,
}

const OWNER_FILE: &str = "owner";
const REGISTRY_FILE: &str = "registry";
const KEPT_FILE: &str = "kept";
const KEEP_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl RunDir {
    pub(crate) fn create(root: &Path, label: &str) -> Result<Self> {
        fs::create_dir_all(root).io_context(|| format!("creating {}", root.display()))?;
        sweep_stale(root);
        let me = std::process::id();
        let mut n = 0u32;
        let path = loop {
            let p = root.join(format!("{label}-{me}-{n}"));
            match fs::create_dir(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("creating {}", p.display()),
                        source: e,
                    });
                }
            }
        };
        let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
        fs::write(path.join(OWNER_FILE), owner)
            .io_context(|| format!("writing owner file in {}", path.display()))?;
        let keep = std::env::var_os("DISKLOCK_VM_KEEP").is_some_and(|v| v != "0");
        Ok(Self { path, keep })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that records child PIDs and stray files for [`sweep_stale`].
    pub(crate) fn registry(&self) -> Registry {
        Registry {
            file: self.path.join(REGISTRY_FILE),
        }
    }

    /// Keep the directory after the rig is dropped (set when a test fails). The sweep
    /// leaves a kept directory alone for a day.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
        let _ = fs::write(self.path.join(KEPT_FILE), "");
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("[vm] run directory kept: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Appends to a run directory's registry of child processes and stray files.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    file: PathBuf,
}

impl Registry {
    fn append(&self, line: &str) {
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Note a child process for [`sweep_stale`].
    pub(crate) fn record_pid(&self, pid: u32) {
        if let Some(t) = start_time(pid) {
            self.append(&format!("pid {pid} {t}"));
        }
    }

    /// Note a file outside the run directory that must go when the rig goes.
    pub(crate) fn record_file(&self, path: &Path) {
        self.append(&format!("file {}", path.display()));
    }
}

/// Remove run directories whose owner process is gone: SIGKILL the processes they list
/// (only if the PID still names the same process) and delete the files they list. A
/// directory kept for a failed test survives its first day.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let mut it = owner.split_whitespace();
        let (Some(pid), Some(start)) = (
            it.next().and_then(|p| p.parse::<u32>().ok()),
            it.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue; // owner alive: not ours to touch
        }
        let registry = fs::read_to_string(dir.join(REGISTRY_FILE)).unwrap_or_default();
        for line in registry.lines() {
            let parts: Vec<&str> = line.splitn(3, ' ').collect();
            match parts.as_slice() {
                ["pid", pid, start] => {
                    if let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>())
                        && start_time(pid) == Some(start)
                        && let Ok(raw) = i32::try_from(pid)
                    {
                        let p = nix::unistd::Pid::from_raw(raw);
                        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                        eprintln!("[vm] killed stale process {pid} from {}", dir.display());
                    }
                }
                ["file", rest @ ..] => {
                    let _ = fs::remove_file(rest.join(" "));
                }
                _ => {}
            }
        }
        // the registry has been acted on; a kept directory stays (for a day) for reading
        let _ = fs::remove_file(dir.join(REGISTRY_FILE));
        let kept_recently = fs::metadata(dir.join(KEPT_FILE))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < KEEP_FOR));
        if !kept_recently {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(a));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn sweep_kills_orphans_and_spares_live_owners() {
        let root = tempfile::tempdir().unwrap();
        // a "dead owner" rig dir whose child is still running
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let dead = root.path().join("dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(OWNER_FILE), "999999999 1\n").unwrap();
        let stray = root.path().join("stray.sock");
        fs::write(&stray, "").unwrap();
        fs::write(
            dead.join(REGISTRY_FILE),
            format!(
                "pid {} {}\nfile {}\n",
                child.id(),
                start_time(child.id()).unwrap(),
                stray.display()
            ),
        )
        .unwrap();
        // a failed rig's kept dir of a dead owner
        let kept = root.path().join("kept");
        fs::create_dir(&kept).unwrap();
        fs::write(kept.join(OWNER_FILE), "999999999 1\n").unwrap();
        fs::write(kept.join(KEPT_FILE), "").unwrap();
        fs::write(kept.join("host0.console.log"), "boot\n").unwrap();
        // a live rig dir (owned by us)
        let live = RunDir::create(root.path(), "live").unwrap();
        sweep_stale(root.path());
        let status = child.wait().unwrap();
        assert!(!status.success(), "orphan must have been killed");
        assert!(!dead.exists());
        assert!(!stray.exists());
        assert!(live.path().exists());
        assert!(kept.join("host0.console.log").exists(), "kept dir survives");
        drop(live);
    }

    #[test]
    fn guarded_child_is_killed_on_drop() {
        let g = Guarded::spawn(Command::new("sleep").arg("60")).unwrap();
        let pid = g.pid();
        assert!(start_time(pid).is_some());
        drop(g);
        assert!(start_time(pid).is_none(), "process {pid} still exists");
    }
}
