//! Helpers shared by the rig tests (`mod common;` in each test file).

// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

/// The `disklock` binary to put into the guests: `$DISKLOCK_BIN`, else the workspace's
/// debug build (vm-harness/run-tests.sh builds it first).
pub fn disklock_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DISKLOCK_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/disklock");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --bin disklock` or set DISKLOCK_BIN",
        p.display()
    );
    p
}

/// Prints the test's wall time when dropped (also when the test fails).
pub struct TestTimer {
    name: &'static str,
    started: Instant,
}

impl TestTimer {
    pub fn start(name: &'static str) -> Self {
        disklock_vm_harness::note(format!("test {name}: start"));
        Self {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for TestTimer {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "FAILED"
        } else {
            "done"
        };
        disklock_vm_harness::note(format!(
            "test {}: {outcome} in {:.2} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        ));
    }
}

/// The `fcntl-lock` helper of this crate (cargo builds it for the integration tests).
pub fn fcntl_lock_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fcntl-lock"))
}
