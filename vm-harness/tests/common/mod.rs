//! Helpers shared by the rig tests (`mod common;` in each test file).

// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

use disklock_vm_harness::{Host, Result};
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

/// With `sg_persist`: host `a` registers key 0xa on `a_dev` and reserves it Write Exclusive
/// (type 1); host `b` registers key 0xb on `b_dev` (the same LUN).
pub fn reserve_we(a: &Host, a_dev: &str, b: &Host, b_dev: &str) -> Result<()> {
    a.run_ok(&format!(
        "sg_persist -n --out --register --param-sark=0xa /dev/{a_dev}"
    ))?;
    a.run_ok(&format!(
        "sg_persist -n --out --reserve --param-rk=0xa --prout-type=1 /dev/{a_dev}"
    ))?;
    b.run_ok(&format!(
        "sg_persist -n --out --register --param-sark=0xb /dev/{b_dev}"
    ))?;
    Ok(())
}
