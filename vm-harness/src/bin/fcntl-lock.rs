//! A tiny POSIX (fcntl) record locker for the rig's guests, taking the lock virtlockd
//! takes on a lease file: a write lock on byte 0, length 1.
//!
//! ```text
//! fcntl-lock FILE          F_SETLK; on success print "locked <pid>" and hold it until killed
//! fcntl-lock --wait FILE   F_SETLKW (block until granted), then hold it the same way
//! fcntl-lock --try FILE    F_SETLK and exit at once: 0 granted (and released), 1 busy
//! ```
//!
//! Exit codes: 0 granted (`--try`), 1 busy (EAGAIN or EACCES), 2 any other error.
//! The file is created if missing.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hold,
    Wait,
    Try,
}

fn usage() -> ExitCode {
    eprintln!("usage: fcntl-lock [--try | --wait] FILE");
    ExitCode::from(2)
}

/// A write lock on byte 0, length 1.
fn byte_zero() -> Result<libc::flock, std::num::TryFromIntError> {
    Ok(libc::flock {
        l_type: libc::c_short::try_from(libc::F_WRLCK)?,
        l_whence: libc::c_short::try_from(libc::SEEK_SET)?,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, path) = match args.as_slice() {
        [p] if !p.starts_with("--") => (Mode::Hold, p),
        [m, p] if m == "--try" => (Mode::Try, p),
        [m, p] if m == "--wait" => (Mode::Wait, p),
        _ => return usage(),
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fcntl-lock: open {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(lk) = byte_zero() else {
        eprintln!("fcntl-lock: lock constants do not fit struct flock");
        return ExitCode::from(2);
    };
    let arg = if mode == Mode::Wait {
        FcntlArg::F_SETLKW(&lk)
    } else {
        FcntlArg::F_SETLK(&lk)
    };
    match fcntl(file.as_fd(), arg) {
        Ok(_) => {}
        Err(e @ (Errno::EAGAIN | Errno::EACCES)) => {
            println!("busy {}", e.desc());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("fcntl-lock: F_SETLK {path}: {e}");
            return ExitCode::from(2);
        }
    }
    println!("locked {}", std::process::id());
    let _ = std::io::stdout().flush();
    if mode == Mode::Try {
        return ExitCode::SUCCESS; // closing the file releases the lock
    }
    loop {
        std::thread::park();
    }
}
