//! Lease files in lockspace directories: virtlockd's indirect fcntl leases, plus who holds them.
//!
//! A lease is the file `<lockspace>/<key>`, where the lockspace is a directory shared (over
//! NFS) by every host that sees the disk and the key is a validated [`DiskKey`]. Holding the
//! lease means holding a POSIX record lock (`fcntl(F_SETLK)`) on byte 0, length 1, from
//! `SEEK_SET`: a write lock for an exclusive lease, a read lock for a shared one. That is
//! byte for byte what virtlockd takes (libvirt `virlockspace.c`, `virFileLock`), so a
//! disklock lease and a virtlockd lease on the same name exclude each other.
//!
//! Why POSIX locks and not OFD or `flock(2)` locks: virtlockd uses POSIX locks, and only
//! POSIX byte-range locks go through NLM/NFSv4 to the server on every NFS setup, which is
//! what makes the lease visible on other hosts.
//!
//! The costs of POSIX locks, and how this module deals with them:
//! - They belong to the process, not the file descriptor, so two opens of one lease in one
//!   process never conflict, and closing *either* fd drops the lock. [`acquire`] therefore
//!   refuses a lease this process already holds ([`LeaseError::HeldHere`]) before it opens
//!   anything, and [`inspect`] refuses too.
//! - A lease file can be unlinked (by its last holder) between our `open` and our lock; we
//!   then hold a lock on an orphan inode. After locking, we check that the locked file
//!   still has a name and retry the whole step if it has none. (virtlockd compares the
//!   inode behind the path with its fd's; in a lockspace, where files lose their names
//!   only to `unlink` or a `rename` over them, the link count tells the same without a
//!   second path lookup, and on NFS it comes from the server: see `linked`.)
//!
//! virtlockd never reads or writes the file body, so disklock uses it to say who holds the
//! lease: one JSON [`Holder`] per line, one line per holding process. An exclusive holder
//! owns the body; shared holders on several hosts edit it under a second lock on byte 1
//! (virtlockd never touches byte 1). [`inspect`] reads the body and asks the kernel
//! (`F_GETLK`) whether the lease is locked, from any host that sees the lockspace.
//!
//! Release follows virtlockd: an exclusive lease file is unlinked before the lock is dropped;
//! a shared one only if upgrading to a write lock succeeds (nobody else holds it). A holder
//! that crashes leaves its file behind with no lock on it: that stale file is free and the
//! next [`acquire`] takes it.

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use disklock_naming::DiskKey;

use crate::output::printable;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use serde::{Deserialize, Serialize};

/// The largest lease body read back. Holder lines are a few hundred bytes; a body larger
/// than this was not written by disklock and is not trusted beyond it.
pub const MAX_BODY: u64 = 64 * 1024;

/// How often acquire starts over when the lease file is replaced under it.
const MAX_ATTEMPTS: usize = 16;

/// The byte virtlockd locks, and the byte disklock's shared holders lock to edit the body.
const LEASE_BYTE: i64 = 0;
const BODY_BYTE: i64 = 1;
/// How long a holder record edit waits for another holder's lock on [`BODY_BYTE`].
pub const BODY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Exclusive (write lock) or shared (read lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One holder, anywhere.
    Exclusive,
    /// Any number of shared holders, and no exclusive one.
    Shared,
}

impl Mode {
    /// `exclusive` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
    fn lock_type(self) -> i16 {
        match self {
            Mode::Exclusive => short(libc::F_WRLCK),
            Mode::Shared => short(libc::F_RDLCK),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a lease is held for: a process (a VM, a script) with a name and a uuid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// A name for people: a VM name, a script name.
    pub name: String,
    /// A unique id (a VM's uuid); the same uuid is the same owner.
    pub uuid: String,
    /// The process whose death releases the owner's leases.
    pub pid: u32,
}

/// One holding process, as written into the lease file body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Host name of the holder.
    pub host: String,
    /// `/etc/machine-id` of the holder's host.
    pub host_id: String,
    /// The process that holds the fcntl lock (a disklock daemon, or `disklock run`'s command).
    pub pid: u32,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Seconds since the epoch when the lease was taken.
    pub since: u64,
    /// disklock version of the holder.
    pub version: String,
    /// The disk path the lease was asked for.
    pub disk: String,
    /// Who the lease is held for.
    pub owners: Vec<Owner>,
}

/// A holder record borrowed from where its parts live (the daemon's lease table): it
/// serializes exactly as [`Holder`] does, without copying them first.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HolderRef<'a> {
    /// Host name of the holder.
    pub host: &'a str,
    /// `/etc/machine-id` of the holder's host.
    pub host_id: &'a str,
    /// The process that holds the fcntl lock.
    pub pid: u32,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Seconds since the epoch when the lease was taken.
    pub since: u64,
    /// disklock version of the holder.
    pub version: &'a str,
    /// The disk path the lease was asked for.
    pub disk: &'a str,
    /// Who the lease is held for.
    pub owners: OwnersRef<'a>,
}

/// The owners of a [`HolderRef`]: a plain list, or the daemon's shared owners.
#[derive(Debug, Clone, Copy)]
pub enum OwnersRef<'a> {
    /// Owners held by value.
    Plain(&'a [Owner]),
    /// Owners shared with the daemon's owner table.
    Shared(&'a [Arc<Owner>]),
}

impl<'a> OwnersRef<'a> {
    /// The owners, in order.
    pub fn iter(self) -> impl Iterator<Item = &'a Owner> {
        let (plain, shared): (&[Owner], &[Arc<Owner>]) = match self {
            OwnersRef::Plain(p) => (p, &[]),
            OwnersRef::Shared(s) => (&[], s),
        };
        plain.iter().chain(shared.iter().map(|o| &**o))
    }
}

impl Serialize for OwnersRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl HolderRef<'_> {
    /// The record, owned.
    pub fn to_holder(self) -> Holder {
        Holder {
            host: self.host.to_owned(),
            host_id: self.host_id.to_owned(),
            pid: self.pid,
            mode: self.mode,
            since: self.since,
            version: self.version.to_owned(),
            disk: self.disk.to_owned(),
            owners: self.owners.iter().cloned().collect(),
        }
    }
}

impl Holder {
    /// The record, borrowed.
    pub fn borrowed(&self) -> HolderRef<'_> {
        HolderRef {
            host: &self.host,
            host_id: &self.host_id,
            pid: self.pid,
            mode: self.mode,
            since: self.since,
            version: &self.version,
            disk: &self.disk,
            owners: OwnersRef::Plain(&self.owners),
        }
    }

    /// One line for people: `web1 (uuid …, pid 42) on host1, exclusive since … by pid 7`.
    /// Every text comes from a lease file any host may write: control characters are
    /// escaped, so a record cannot drive the terminal.
    pub fn describe(&self) -> String {
        let owners: Vec<String> = self
            .owners
            .iter()
            .map(|o| {
                format!(
                    "{} (uuid {}, pid {})",
                    printable(&o.name),
                    printable(&o.uuid),
                    o.pid
                )
            })
            .collect();
        let owners = if owners.is_empty() {
            "no owner".to_owned()
        } else {
            owners.join(", ")
        };
        format!(
            "{owners} on host {} (id {}), {} since {}, lock held by pid {} (disklock {})",
            printable(&self.host),
            printable(&self.host_id),
            self.mode,
            self.since,
            self.pid,
            printable(&self.version)
        )
    }
}

/// This host's name and id, for holder records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// `/proc/sys/kernel/hostname`.
    pub host: String,
    /// `/etc/machine-id`, or `""` when there is none.
    pub host_id: String,
}

impl HostIdentity {
    /// Reads this host's name and machine id.
    pub fn this_host() -> HostIdentity {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        HostIdentity {
            host: read("/proc/sys/kernel/hostname"),
            host_id: read("/etc/machine-id"),
        }
    }
}

/// The POSIX lock the kernel reports on byte 0 of a lease file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock's type.
    pub mode: Mode,
    /// The pid the kernel reports. On NFS it may be a pid on another host (or 0).
    pub pid: i32,
    /// `/proc/PID/comm` when the lockspace is not on NFS and the process is on this host.
    pub process: Option<String>,
}

/// Someone else holds the lease: an expected outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Busy {
    /// The lease file.
    pub lease: PathBuf,
    /// The holders named in the lease file (none when virtlockd holds it).
    pub holders: Vec<Holder>,
    /// The conflicting lock, when the kernel could say.
    pub lock: Option<LockInfo>,
    /// When the lease was free but the storage is reserved by another host: who holds the
    /// persistent reservation, in one line.
    pub reservation: Option<String>,
}

impl Busy {
    /// Who holds it, in one line.
    pub fn describe(&self) -> String {
        if let Some(r) = &self.reservation {
            return r.clone();
        }
        if !self.holders.is_empty() {
            let h: Vec<String> = self.holders.iter().map(Holder::describe).collect();
            let kernel = match &self.lock {
                Some(l) => format!("; the kernel's lock owner: pid {}", l.pid),
                None => String::new(),
            };
            return format!("held by {} (as the lease file says{kernel})", h.join("; "));
        }
        match &self.lock {
            Some(l) => format!(
                "held {} by pid {}{} with no disklock holder record (virtlockd or another tool)",
                l.mode,
                l.pid,
                l.process
                    .as_deref()
                    .map(|p| format!(" ({})", printable(p)))
                    .unwrap_or_default()
            ),
            None => "held by a process that left no holder record".to_owned(),
        }
    }
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Acquired<L> {
    /// The lease is ours.
    Held(L),
    /// Someone else holds it.
    Busy(Busy),
}

/// What [`Lease::release`] did with the lease file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The file was removed (we were its last holder).
    Unlinked,
    /// The file stays: other shared holders remain, or it was already replaced.
    Kept,
}

/// Why a lease could not be used. Busy is not an error: see [`Acquired::Busy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lockspace directory could not be created.
    #[error("cannot create lockspace directory {dir}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The lockspace path exists but is not a directory.
    #[error("lockspace {dir} is not a directory")]
    NotDir {
        /// The path.
        dir: PathBuf,
    },
    /// Other local users could tamper with the lockspace's lease files.
    #[error(
        "lockspace {dir} is not safe: {why}; other users could rename, plant or lock lease files (chmod go-w, or chmod +t, and chown it to this user)"
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The lockspace is on a read-only file system.
    #[error("lockspace {dir} is on a read-only file system")]
    ReadOnly {
        /// The directory.
        dir: PathBuf,
    },
    /// The lockspace directory (or a directory above it) was replaced by a symbolic link
    /// after it was first resolved; it is never followed.
    #[error("lockspace {dir} is now reached through a symbolic link; refusing to follow it")]
    DirSymlink {
        /// The directory, as it was resolved.
        dir: PathBuf,
    },
    /// The lease file is a symbolic link (someone replaced it); it is never followed.
    #[error("lease file {path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The lease file.
        path: PathBuf,
    },
    /// The lease file is a directory, FIFO, device or socket.
    #[error("lease file {path} is not a regular file")]
    NotRegular {
        /// The lease file.
        path: PathBuf,
    },
    /// The lease file has other names (a hard link planted in the lockspace, perhaps to a
    /// file elsewhere): writing a holder record would write into that file.
    #[error(
        "lease file {path} has {links} links (a hard link to another file?); refusing to write to it"
    )]
    Linked {
        /// The lease file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// The lease file on a local file system belongs to another user, who could have
    /// planted it.
    #[error(
        "lease file {path} belongs to uid {uid}, not to this process's uid {euid}; refusing to use it"
    )]
    ForeignOwner {
        /// The lease file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Ours.
        euid: u32,
    },
    /// The file system does not do POSIX locks (ENOLCK: NFS without a lock manager).
    #[error(
        "lockspace {dir} is on a file system without POSIX locks (fcntl F_SETLK: ENOLCK; on NFS, is the lock manager running?)"
    )]
    NoLocks {
        /// The lockspace directory.
        dir: PathBuf,
    },
    /// The lease was taken but the disk's persistent reservation could not be (or not be
    /// given back).
    #[error("persistent reservation of {disk}: {reason}")]
    Reservation {
        /// The disk (its device name).
        disk: String,
        /// What failed, one line.
        reason: String,
    },
    /// This process already holds the lease; opening it again would drop that lock.
    #[error("lease {path} is already held by this process")]
    HeldHere {
        /// The lease file.
        path: PathBuf,
    },
    /// Another process kept the holder record's lock (byte 1) longer than
    /// [`BODY_LOCK_WAIT`]; the record was not changed. The lease itself is unaffected.
    #[error("lease file {path}: its holder record is locked by another process; not updated")]
    BodyBusy {
        /// The lease file.
        path: PathBuf,
    },
    /// The lease file kept being replaced between open and lock.
    #[error("lease file {path} kept being replaced while it was locked")]
    Unstable {
        /// The lease file.
        path: PathBuf,
    },
    /// Another I/O failure on the lease file.
    #[error("cannot {op} lease file {path}")]
    Io {
        /// What was being done: open, lock, read, write, remove, stat.
        op: &'static str,
        /// The lease file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl LeaseError {
    /// Whether only the holder record failed (the lease itself is fine): a full or
    /// over-quota lockspace, or another process on the record's lock.
    pub fn is_record_only(&self) -> bool {
        match self {
            LeaseError::BodyBusy { .. } => true,
            LeaseError::Io {
                op: "write",
                source,
                ..
            } => matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            _ => false,
        }
    }
}

/// Canonical paths of the leases this process holds: a second open of one of them must
/// never happen (closing it would drop the lock). The path is shared with the [`Lease`].
static HELD: Mutex<Option<HashSet<PathBytes>>> = Mutex::new(None);

/// A path hashed and compared as its bytes. `Path`'s own `Hash` walks its components, at
/// several times the cost, to treat `a//b` and `a/b` alike; the paths kept here are built
/// one way only (a canonical directory joined with a key).
#[derive(Debug, Clone)]
struct PathBytes(Arc<Path>);

impl PathBytes {
    fn bytes(&self) -> &[u8] {
        self.0.as_os_str().as_bytes()
    }
}

impl PartialEq for PathBytes {
    fn eq(&self, other: &PathBytes) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for PathBytes {}

impl std::hash::Hash for PathBytes {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.bytes().hash(h);
    }
}

// Lookups by `&[u8]`: the same `Hash` and `Eq` as the slice's.
impl std::borrow::Borrow<[u8]> for PathBytes {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

fn held_insert(path: &Arc<Path>) -> bool {
    let mut g = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    g.get_or_insert_with(HashSet::new)
        .insert(PathBytes(path.clone()))
}

fn held_remove(path: &Path) {
    let mut g = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = g.as_mut() {
        s.remove(path.as_os_str().as_bytes());
    }
}

fn is_held_here(path: &Path) -> bool {
    let g = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    g.as_ref()
        .is_some_and(|s| s.contains(path.as_os_str().as_bytes()))
}

/// A held lease: owns the fd whose fcntl lock is the lease. Dropping it drops the lock and
/// leaves the file (as a crash would); [`Lease::release`] also removes the file when it may.
#[derive(Debug)]
pub struct Lease {
    /// The lockspace it is in: the file is removed through this directory's fd.
    space: Arc<Space>,
    file: Option<File>,
    path: Arc<Path>,
    dev: u64,
    ino: u64,
    mode: Mode,
    /// Host id and pid of the holder record this process writes, to find its line again.
    /// The host id is the same for every lease of a process: shared (see [`host_id`]).
    me: (Arc<str>, u32),
    /// A new exclusive lease whose holder record is not written yet
    /// ([`acquire_deferring_body`], [`Lease::write_pending`]).
    body_pending: bool,
}

/// The host id, shared by the leases that record it (a daemon holds up to 100,000).
fn host_id(id: &str) -> Arc<str> {
    static LAST: Mutex<Option<Arc<str>>> = Mutex::new(None);
    let mut g = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    match g.as_ref() {
        Some(a) if **a == *id => a.clone(),
        _ => {
            let a: Arc<str> = Arc::from(id);
            *g = Some(a.clone());
            a
        }
    }
}

/// `fcntl(F_SETLK)` on the lease byte. Tests make it fail with an errno of their choice on
/// this thread: no file system here answers ENOLCK (NFS without a lock manager does).
fn set_lease_lock(file: &File, l_type: i16) -> nix::Result<()> {
    #[cfg(test)]
    if let Some(e) = FAIL_LOCK.with(std::cell::Cell::get) {
        return Err(e);
    }
    fcntl(file, FcntlArg::F_SETLK(&flock(l_type, LEASE_BYTE))).map(drop)
}

#[cfg(test)]
thread_local! {
    static FAIL_LOCK: std::cell::Cell<Option<Errno>> = const { std::cell::Cell::new(None) };
}

/// `F_RDLCK`, `F_WRLCK`, `F_UNLCK` and `SEEK_SET` for the `short` fields of `struct flock`
/// (0, 1, 2 and 0 on Linux).
pub fn short(v: libc::c_int) -> i16 {
    i16::try_from(v).unwrap_or_else(|_| unreachable!("fcntl constant {v} fits a short"))
}

fn flock(l_type: i16, start: i64) -> libc::flock {
    libc::flock {
        l_type,
        l_whence: short(libc::SEEK_SET),
        l_start: start,
        l_len: 1,
        l_pid: 0,
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LeaseError {
    let path = path.to_path_buf();
    move |source| LeaseError::Io { op, path, source }
}

fn errno_err(op: &'static str, path: &Path, e: Errno) -> LeaseError {
    LeaseError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from_raw_os_error(e as i32),
    }
}

/// An open lockspace directory. Every operation on its lease files goes through this fd
/// (`openat`, `fstatat`, `unlinkat`), so a lockspace renamed or swapped for a symbolic link
/// after it was opened cannot redirect a lease elsewhere.
#[derive(Debug)]
pub struct Space {
    /// Its canonical path, for messages and the held set.
    dir: PathBuf,
    fd: std::os::fd::OwnedFd,
    /// Device and inode of the opened directory.
    id: (u64, u64),
}

impl Space {
    /// Opens the canonical directory `dir` refusing any symbolic link on the way (a
    /// directory swapped for one since it was first resolved), and checks that it is a
    /// directory nobody else can tamper with ([`trusted_dir`]).
    fn open(dir: &Path) -> Result<Space, LeaseError> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let opened = match nix::fcntl::openat2(nix::fcntl::AT_FDCWD, dir, how) {
            // Kernels before 5.6: the last component at least must not be a link.
            Err(Errno::ENOSYS) => nix::fcntl::open(
                dir,
                flags | OFlag::O_NOFOLLOW,
                nix::sys::stat::Mode::empty(),
            ),
            other => other,
        };
        let fd = opened.map_err(|e| match e {
            Errno::ELOOP => LeaseError::DirSymlink { dir: dir.into() },
            Errno::ENOTDIR => LeaseError::NotDir { dir: dir.into() },
            e => LeaseError::CreateDir {
                dir: dir.into(),
                source: e.into(),
            },
        })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| LeaseError::CreateDir {
            dir: dir.into(),
            source: e.into(),
        })?;
        trusted_dir(dir, st.st_mode, st.st_uid)?;
        Ok(Space {
            dir: dir.into(),
            fd,
            id: (st.st_dev, st.st_ino),
        })
    }

    /// Whether the directory is still the one at its path: `Ok(false)` when it was removed or
    /// another directory took its place (open it again), [`LeaseError::DirSymlink`] when a
    /// symbolic link leads elsewhere. Every acquire asks, so that all processes sharing the
    /// lockspace keep meeting in the same directory.
    fn current(&self) -> Result<bool, LeaseError> {
        // The common case in one syscall: the path (its last component not followed) is
        // still the directory we hold open. Then everyone who resolves the path meets us
        // in it, whatever led there. Anything else is looked at the slow way below, which
        // tells a symbolic link from a replaced or removed directory.
        if let Ok(st) = nix::sys::stat::lstat(&self.dir)
            && (st.st_dev, st.st_ino) == self.id
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        {
            return Ok(true);
        }
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let now = match nix::fcntl::openat2(nix::fcntl::AT_FDCWD, &self.dir, how) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => {
                return Err(LeaseError::DirSymlink {
                    dir: self.dir.clone(),
                });
            }
            // No openat2 (kernel < 5.6): this check is skipped; the fd still pins the
            // directory that was opened.
            Err(Errno::ENOSYS) => return Ok(true),
            Err(_) => return Ok(false),
        };
        Ok(nix::sys::stat::fstat(&now).is_ok_and(|st| (st.st_dev, st.st_ino) == self.id))
    }

    /// Metadata of the entry `name` (not following a link), `None` if there is none.
    fn stat(&self, name: &Path) -> Result<Option<nix::sys::stat::FileStat>, Errno> {
        match nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Lockspace directories already opened, by the path they were configured as: a daemon takes
/// many leases in few lockspaces, and each check costs several syscalls.
/// A list: there are a handful, and comparing bytes beats hashing a path.
static PREPARED: Mutex<Vec<(PathBuf, Arc<Space>)>> = Mutex::new(Vec::new());

/// The canonical path each configured lockspace resolved to the first time, kept for the
/// process's life: a lockspace that vanished is opened again at the same place, never by
/// following whatever the configured path points to by then.
static RESOLVED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// The lease file's directory, for messages about the lockspace.
fn dir_of(path: &Path) -> PathBuf {
    path.parent().unwrap_or(path).to_path_buf()
}

fn prepared(dir: &Path) -> Result<Arc<Space>, LeaseError> {
    let cached = PREPARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(d, _)| d.as_os_str() == dir.as_os_str())
        .map(|(_, sp)| sp.clone());
    if let Some(sp) = cached {
        if sp.current()? {
            return Ok(sp);
        }
        forget_prepared(dir);
    }
    let known = RESOLVED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(d, _)| d.as_os_str() == dir.as_os_str())
        .map(|(_, c)| c.clone());
    let canon = match known {
        Some(c) => {
            create_dir(&c)?;
            c
        }
        None => {
            let c = prepare_dir(dir)?;
            RESOLVED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((dir.to_path_buf(), c.clone()));
            c
        }
    };
    let space = Arc::new(Space::open(&canon)?);
    let mut g = PREPARED.lock().unwrap_or_else(PoisonError::into_inner);
    g.retain(|(d, _)| d.as_os_str() != dir.as_os_str());
    g.push((dir.to_path_buf(), space.clone()));
    Ok(space)
}

fn forget_prepared(dir: &Path) {
    PREPARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(d, _)| d.as_os_str() != dir.as_os_str());
}

/// Creates the lockspace directory (0700) if it is missing.
fn create_dir(dir: &Path) -> Result<(), LeaseError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LeaseError::NotDir { dir: dir.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EROFS) => LeaseError::ReadOnly { dir: dir.into() },
                _ => LeaseError::CreateDir {
                    dir: dir.into(),
                    source: e,
                },
            }),
        Err(e) => Err(LeaseError::CreateDir {
            dir: dir.into(),
            source: e,
        }),
    }
}

/// Creates the lockspace directory (0700) if it is missing and returns its canonical path,
/// once it is known to be safe ([`trusted_dir`]).
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, LeaseError> {
    create_dir(dir)?;
    let canon = std::fs::canonicalize(dir).map_err(|source| LeaseError::CreateDir {
        dir: dir.into(),
        source,
    })?;
    let m = std::fs::symlink_metadata(&canon).map_err(|source| LeaseError::CreateDir {
        dir: dir.into(),
        source,
    })?;
    trusted_dir(&canon, m.mode(), m.uid())?;
    Ok(canon)
}

/// Refuses a lockspace directory that other local users could tamper with (rename, plant
/// or lock lease files): one writable by group or others without the sticky bit, or one
/// owned by another uid. On NFS the owner and mode are the server's (root squash maps
/// uids), so there it is a warning, not a refusal.
fn trusted_dir(dir: &Path, mode: u32, uid: u32) -> Result<(), LeaseError> {
    let euid = nix::unistd::geteuid().as_raw();
    let why = if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        Some(format!(
            "it is writable by {} (mode {:04o}) without the sticky bit",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        ))
    } else if uid != euid {
        Some(format!("it belongs to uid {uid}, not to uid {euid}"))
    } else {
        None
    };
    let Some(why) = why else { return Ok(()) };
    if on_nfs(dir) {
        tracing::warn!(event = "lockspace-unsafe", dir = %dir.display(), "lockspace {}: {why}; on NFS the server decides, so it is used, but other users may be able to tamper with lease files", dir.display());
        return Ok(());
    }
    Err(LeaseError::UnsafeDir {
        dir: dir.into(),
        why,
    })
}

/// Takes the lease `<dir>/<key>` in `mode`, writing `holder` into its body.
///
/// `dir` is created (0700) if missing. Never blocks on the lock: a held lease is
/// [`Acquired::Busy`], with whatever the file and the kernel say about its holder.
pub fn acquire(
    dir: &Path,
    key: &DiskKey,
    mode: Mode,
    holder: &Holder,
) -> Result<Acquired<Lease>, LeaseError> {
    acquire_with(dir, key, mode, &holder.borrowed(), false)
}

/// [`acquire`], except that the holder record of a new exclusive lease file is left for
/// [`Lease::write_pending`]: the daemon answers first and writes it right after. Until then
/// the file is empty, which readers take as a holder not recorded yet; a shared lease's
/// record is written at once (its body is edited under a lock other holders wait for).
pub fn acquire_deferring_body(
    dir: &Path,
    key: &DiskKey,
    mode: Mode,
    holder: &HolderRef<'_>,
) -> Result<Acquired<Lease>, LeaseError> {
    acquire_with(dir, key, mode, holder, true)
}

fn acquire_with(
    dir: &Path,
    key: &DiskKey,
    mode: Mode,
    holder: &HolderRef<'_>,
    defer: bool,
) -> Result<Acquired<Lease>, LeaseError> {
    let given = dir;
    let space = prepared(given)?;
    // The key has no '/', NUL, '.'/'..' and is at most NAME_MAX bytes (DiskKey's invariant),
    // so this names a file directly inside the lockspace.
    let path: Arc<Path> = Arc::from(space.dir.join(key.as_str()));
    if !held_insert(&path) {
        return Err(LeaseError::HeldHere {
            path: path.to_path_buf(),
        });
    }
    let mut result = acquire_at(&space, &path, mode, holder, defer);
    // The opened directory is gone (removed): open it again at the same place (a symbolic
    // link there now is refused).
    if let Err(LeaseError::Io {
        op: "open", source, ..
    }) = &result
        && source.kind() == io::ErrorKind::NotFound
    {
        forget_prepared(given);
        held_remove(&path);
        let space = prepared(given)?;
        let again: Arc<Path> = Arc::from(space.dir.join(key.as_str()));
        if !held_insert(&again) {
            return Err(LeaseError::HeldHere {
                path: again.to_path_buf(),
            });
        }
        result = acquire_at(&space, &again, mode, holder, defer);
        if !matches!(result, Ok(Acquired::Held(_))) {
            held_remove(&again);
        }
        return result;
    }
    if !matches!(result, Ok(Acquired::Held(_))) {
        held_remove(&path);
    }
    result
}

fn acquire_at(
    space: &Arc<Space>,
    shared: &Arc<Path>,
    mode: Mode,
    holder: &HolderRef<'_>,
    defer: bool,
) -> Result<Acquired<Lease>, LeaseError> {
    let path: &Path = shared;
    for _ in 0..MAX_ATTEMPTS {
        let file = open_lease(space, path, true)?;
        match set_lease_lock(&file, mode.lock_type()) {
            Ok(()) => {}
            Err(Errno::EAGAIN | Errno::EACCES) => {
                let meta = file.metadata().map_err(io_err("stat", path))?;
                if !meta.file_type().is_file() {
                    return Err(LeaseError::NotRegular { path: path.into() });
                }
                return Ok(Acquired::Busy(busy(&file, path)));
            }
            Err(Errno::ENOLCK) => {
                return Err(LeaseError::NoLocks {
                    dir: space.dir.clone(),
                });
            }
            Err(e) => return Err(errno_err("lock", path, e)),
        }
        // Is the inode we locked still the one at the path? Its last holder may have
        // unlinked it (and someone else recreated it) between our open and our lock.
        let Some(meta) = linked(&file, path)? else {
            // Closing `file` drops the lock on the orphan inode; start over.
            drop(file);
            continue;
        };
        if !meta.file_type().is_file() {
            return Err(LeaseError::NotRegular { path: path.into() });
        }
        // Before anything is written: the file must be a lease file and nothing else.
        trusted_file(&meta, &file, path)?;
        let mut lease = Lease {
            space: space.clone(),
            file: Some(file),
            path: shared.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            mode,
            me: (host_id(holder.host_id), holder.pid),
            body_pending: false,
        };
        // One rule on every path (daemon, daemonless run; exclusive, shared): the lock is
        // what excludes, so a holder record that cannot be written (a full lockspace, the
        // record's lock held elsewhere) does not fail the acquire; it is logged, and
        // readers see "no holder record". A new (empty) file needs no truncation.
        let written = if mode == Mode::Exclusive && meta.len() == 0 {
            if defer {
                lease.body_pending = true;
                Ok(())
            } else {
                lease.write_new_body(holder)
            }
        } else {
            lease.write_holder(holder)
        };
        if let Err(e) = written {
            if !e.is_record_only() {
                // `lease` drops: the lock goes and the file stays (a stale, free lease
                // file), which is never a lost or phantom lock.
                return Err(e);
            }
            tracing::warn!(event = "holder-not-updated", lease = %path.display(), error = %crate::exit::chain_std(&e), "lease {} held without a holder record", path.display());
        }
        return Ok(Acquired::Held(lease));
    }
    Err(LeaseError::Unstable { path: path.into() })
}

/// The locked lease file's metadata while it still has a name, `None` once it has none: in
/// a lockspace a lease file loses its name only to `unlink` (by its last holder) or to a
/// `rename` over it, and is never linked elsewhere, so a file with links left is still the
/// one at its path. This asks the file, not the path: no second lookup, and on NFS a
/// granted lock has just invalidated the client's cached attributes of this file, where a
/// path lookup could still be answered from a cached name. A file handle the NFS server no
/// longer knows (`ESTALE`: removed on another host) has no name either.
fn linked(file: &File, path: &Path) -> Result<Option<std::fs::Metadata>, LeaseError> {
    match file.metadata() {
        Ok(m) if m.nlink() > 0 => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESTALE) => Ok(None),
        Err(e) => Err(LeaseError::Io {
            op: "stat",
            path: path.into(),
            source: e,
        }),
    }
}

/// Refuses a locked lease file that is not safe to write: one with more than one link (a
/// hard link planted in the lockspace: its body is another file's content), or, on a local
/// file system, one owned by another uid (planted by another user). On NFS the owner is the
/// server's to map (root squash, other hosts' daemons), so only the link count counts.
fn trusted_file(meta: &std::fs::Metadata, file: &File, path: &Path) -> Result<(), LeaseError> {
    if meta.nlink() != 1 {
        return Err(LeaseError::Linked {
            path: path.into(),
            links: meta.nlink(),
        });
    }
    let euid = euid();
    let nfs = || {
        nix::sys::statfs::fstatfs(file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NFS_SUPER_MAGIC)
    };
    if meta.uid() != euid && !nfs() {
        return Err(LeaseError::ForeignOwner {
            path: path.into(),
            uid: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// This process's effective uid, read once: disklock never changes it, and every acquire
/// compares a lease file's owner with it.
fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

/// Opens the lease file `path` (its name in `space`), creating it (0600) when `create`.
/// Never follows a symbolic link; O_NONBLOCK: a FIFO planted there must not hang us.
fn open_lease(space: &Space, path: &Path, create: bool) -> Result<File, LeaseError> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if create {
        flags |= OFlag::O_CREAT;
    }
    let name = Path::new(path.file_name().unwrap_or_default());
    nix::fcntl::openat(
        &space.fd,
        name,
        flags,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map(File::from)
    .map_err(|e| match e {
        Errno::ELOOP => LeaseError::Symlink { path: path.into() },
        Errno::EROFS => LeaseError::ReadOnly {
            dir: space.dir.clone(),
        },
        Errno::EISDIR | Errno::ENXIO => LeaseError::NotRegular { path: path.into() },
        e => LeaseError::Io {
            op: "open",
            path: path.into(),
            source: e.into(),
        },
    })
}

/// What the lease file and the kernel say about a lease we could not take.
fn busy(file: &File, path: &Path) -> Busy {
    Busy {
        lease: path.to_path_buf(),
        holders: read_holders(file).unwrap_or_default(),
        lock: lock_info(file, path),
        reservation: None,
    }
}

fn lock_info(file: &File, path: &Path) -> Option<LockInfo> {
    let mut fl = flock(short(libc::F_WRLCK), LEASE_BYTE);
    fcntl(file, FcntlArg::F_GETLK(&mut fl)).ok()?;
    let mode = match i32::from(fl.l_type) {
        libc::F_WRLCK => Mode::Exclusive,
        libc::F_RDLCK => Mode::Shared,
        _ => return None,
    };
    let process = if on_nfs(path) || fl.l_pid <= 0 {
        None
    } else {
        std::fs::read_to_string(format!("/proc/{}/comm", fl.l_pid))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    Some(LockInfo {
        mode,
        pid: fl.l_pid,
        process,
    })
}

/// Whether the lockspace `dir` (as configured) is on a file system known to live on this
/// host (ext2/3/4, XFS, Btrfs, F2FS, tmpfs, ramfs, overlayfs): its lease I/O answers at memory or
/// disk speed. Anything else — NFS, CIFS, a cluster or FUSE file system, one not known here
/// — may wait on another machine. Asks the opened directory (`fstatfs`), so on a hung
/// network file system this call itself may hang: make it where that stalls nothing else.
pub fn on_local_fs(dir: &Path) -> Result<bool, LeaseError> {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, FsType, OVERLAYFS_SUPER_MAGIC,
        TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    // ramfs (an initramfs root), from linux/magic.h.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let space = prepared(dir)?;
    let st = nix::sys::statfs::fstatfs(&space.fd).map_err(|e| LeaseError::CreateDir {
        dir: space.dir.clone(),
        source: e.into(),
    })?;
    let local = [
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        F2FS_SUPER_MAGIC,
        TMPFS_MAGIC,
        RAMFS_MAGIC,
        OVERLAYFS_SUPER_MAGIC,
    ];
    Ok(local.contains(&st.filesystem_type()))
}

fn on_nfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NFS_SUPER_MAGIC)
}

fn read_body(file: &File) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut r = file.take(MAX_BODY);
    // Read from offset 0 whatever the fd's position: `take` over `&File` reads from the
    // current position, which is always 0 here (we only ever use positional writes).
    r.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_holders(mut file: &File) -> io::Result<Vec<Holder>> {
    use std::io::Seek as _;
    file.seek(io::SeekFrom::Start(0))?;
    Ok(parse_holders(&read_body(file)?))
}

/// The holder records in a lease body; lines that are not disklock's are skipped.
pub fn parse_holders(body: &str) -> Vec<Holder> {
    body.lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// One holder record as its line.
fn render_one(holder: &HolderRef<'_>) -> Vec<u8> {
    let mut line = Vec::with_capacity(512);
    // Serializing plain data cannot fail.
    let _ = serde_json::to_writer(&mut line, holder);
    line.push(b'\n');
    line
}

fn render_holders(holders: &[Holder]) -> String {
    let mut s = String::new();
    for h in holders {
        // Serializing plain data to a String cannot fail.
        if let Ok(line) = serde_json::to_string(h) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

impl Lease {
    /// The lease file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> &File {
        // `file` is only taken in Drop and by `release_with`, which consume the lease.
        self.file
            .as_ref()
            .unwrap_or_else(|| unreachable!("lease file taken before drop"))
    }

    /// Writes `holder` if [`acquire_deferring_body`] left the record unwritten and nothing
    /// was written since.
    pub fn write_pending(&mut self, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        if !std::mem::take(&mut self.body_pending) {
            return Ok(());
        }
        self.write_new_body(holder)
    }

    /// The first record of a new exclusive lease: the file was empty when locked, and only
    /// its holder writes it, so no truncation.
    fn write_new_body(&self, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        self.file()
            .write_all_at(&render_one(holder), 0)
            .map_err(io_err("write", &self.path))
    }

    /// Writes (or rewrites) this process's holder record into the lease body.
    pub fn write_holder(&mut self, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        // This record replaces any still pending.
        self.body_pending = false;
        let file = self.file();
        match self.mode {
            Mode::Exclusive => write_body(file, &self.path, render_one(holder)),
            Mode::Shared => self.edit_shared_body(|hs| {
                hs.retain(|h| !same_process(h, holder));
                hs.push(holder.to_holder());
            }),
        }
    }

    /// Shared holders on several hosts edit the body under a write lock on byte 1, which
    /// virtlockd never takes. Holders keep it for one rewrite, so it is tried a few times
    /// over at most [`BODY_LOCK_WAIT`] and then given up ([`LeaseError::BodyBusy`]): a
    /// process (or a dead NFS host) sitting on byte 1 must never stall the daemon, and the
    /// record is only information (the lock on byte 0 is what excludes).
    fn edit_shared_body(&self, edit: impl FnOnce(&mut Vec<Holder>)) -> Result<(), LeaseError> {
        let file = self.file();
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(200);
        loop {
            match fcntl(
                file,
                FcntlArg::F_SETLK(&flock(short(libc::F_WRLCK), BODY_BYTE)),
            ) {
                Ok(_) => break,
                Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => {
                    if start.elapsed() >= BODY_LOCK_WAIT {
                        return Err(LeaseError::BodyBusy {
                            path: self.path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(20));
                }
                Err(Errno::ENOLCK) => {
                    return Err(LeaseError::NoLocks {
                        dir: dir_of(&self.path),
                    });
                }
                Err(e) => return Err(errno_err("lock", &self.path, e)),
            }
        }
        let result = read_holders(file)
            .map_err(io_err("read", &self.path))
            .and_then(|mut hs| {
                edit(&mut hs);
                write_body(file, &self.path, render_holders(&hs))
            });
        // Unlocking a range we hold cannot conflict; an error here would leave only the
        // body lock, which goes with the fd.
        let _ = fcntl(
            file,
            FcntlArg::F_SETLK(&flock(short(libc::F_UNLCK), BODY_BYTE)),
        );
        result
    }

    /// Keeps the lease (its fd and so its lock) across `execve`: the new program holds it.
    pub fn keep_across_exec(&self) -> Result<(), LeaseError> {
        fcntl(self.file(), FcntlArg::F_SETFD(FdFlag::empty()))
            .map(drop)
            .map_err(|e| errno_err("keep open", &self.path, e))
    }

    /// Releases the lease. An exclusive lease file is removed first (so that a waiting
    /// acquirer notices its inode is gone); a shared one only when upgrading to exclusive
    /// succeeds, i.e. no other host or process holds it. The lock is dropped in any case,
    /// also when an error is returned (the file then stays behind, stale and free).
    pub fn release(self) -> Result<Released, LeaseError> {
        self.release_with(drop)
    }

    /// [`Lease::release`], handing the fd of a file it removed to `close` instead of closing
    /// it here: its lock then guards an inode no path leads to, so closing it may wait (the
    /// daemon closes it once it is idle). Any other fd is closed here, as by `release`.
    pub fn release_with(mut self, close: impl FnOnce(File)) -> Result<Released, LeaseError> {
        let file = self.file();
        let last = match self.mode {
            Mode::Exclusive => true,
            Mode::Shared => set_lease_lock(file, short(libc::F_WRLCK)).is_ok(),
        };
        if last {
            let released = self.unlink_if_ours();
            if let Ok(Released::Unlinked) = released
                && let Some(file) = self.file.take()
            {
                // A new open of the path makes a new file: the path is free already.
                held_remove(&self.path);
                close(file);
            }
            released
        } else {
            let (host_id, pid) = &self.me;
            self.edit_shared_body(|hs| hs.retain(|h| !(*h.host_id == **host_id && h.pid == *pid)))?;
            Ok(Released::Kept)
        }
        // `self` drops here: the fd closes and the lock goes.
    }

    /// Why this lease is no longer what others see at its path, if it is not: its lockspace
    /// directory was replaced or removed, or its file was removed or replaced (another
    /// process or host can then take the disk while we hold a lock on a file nobody opens).
    /// `None` while it is still the one at its path. An error says the check itself failed.
    pub fn lost_why(&self) -> Result<Option<&'static str>, LeaseError> {
        // Only a definite answer counts as lost (an owner may be killed for it): the path
        // leads to another inode, or to none. Any other error is a failed check.
        match nix::sys::stat::lstat(&self.space.dir) {
            Ok(st) if (st.st_dev, st.st_ino) == self.space.id => {}
            Ok(_) => return Ok(Some("its lockspace directory was replaced")),
            Err(Errno::ENOENT | Errno::ENOTDIR) => {
                return Ok(Some("its lockspace directory was removed"));
            }
            Err(e) => return Err(errno_err("stat", &self.space.dir, e)),
        }
        Ok(match self.at_its_name()? {
            Some(true) => None,
            Some(false) => Some("another file took the lease file's name"),
            None => Some("the lease file was removed"),
        })
    }

    /// What is at the lease file's name in its lockspace: the very inode we locked
    /// (`Some(true)`: same device and inode; one we hold open is never reused), another file
    /// (`Some(false)`), or nothing (`None`).
    fn at_its_name(&self) -> Result<Option<bool>, LeaseError> {
        match self.space.stat(self.name()) {
            Ok(st) => Ok(st.map(|st| st.st_dev == self.dev && st.st_ino == self.ino)),
            Err(e) => Err(errno_err("stat", &self.path, e)),
        }
    }

    /// The lease file's name in its lockspace.
    fn name(&self) -> &Path {
        Path::new(self.path.file_name().unwrap_or_default())
    }

    /// Removes the lease file if it is still the one at its path; we hold the lock on it, so
    /// nobody else following the lockspace's rules removes or replaces it meanwhile.
    ///
    /// "Still the one at its path" is asked of the path: the name must lead to the very
    /// inode we locked (device and inode number; an inode we hold open is never reused, so a
    /// match also means our file still has that name), or the file there is someone else's
    /// (ours was renamed away and another process created and locked a new one) and stays. What
    /// is left is the instant between that look and the unlink; it is harmless because only
    /// a process that may rename files in the lockspace can use it, and the lockspace
    /// admits no writer but its owner (or, with the sticky bit, no renaming of another
    /// user's files): see ARCHITECTURE.md, invariant 10.
    fn unlink_if_ours(&self) -> Result<Released, LeaseError> {
        if self.at_its_name()? != Some(true) {
            return Ok(Released::Kept);
        }
        match nix::unistd::unlinkat(
            &self.space.fd,
            self.name(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => Ok(Released::Unlinked),
            Err(Errno::ENOENT) => Ok(Released::Kept),
            Err(e) => Err(errno_err("remove", &self.path, e)),
        }
    }
}

/// The identity of a lease this process held and handed on to another (the command that
/// `disklock run` becomes): enough for [`release_after_exit`] to release it once that
/// process has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldElsewhere {
    /// The lease file.
    pub path: PathBuf,
    /// Device and inode of the file that was locked: only that inode is ever removed.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The mode it was held in.
    pub mode: Mode,
    /// Host id of the holder record to drop when other shared holders remain.
    pub host_id: String,
    /// Pid of that holder record (the exited process).
    pub pid: u32,
}

impl Lease {
    /// What [`release_after_exit`] needs to release this lease after its holder exited.
    pub fn held_elsewhere(&self) -> HeldElsewhere {
        HeldElsewhere {
            path: self.path.to_path_buf(),
            dev: self.dev,
            ino: self.ino,
            mode: self.mode,
            host_id: self.me.0.to_string(),
            pid: self.me.1,
        }
    }
}

/// Releases a lease whose holding process has exited (the kernel dropped its lock), with the
/// daemon's last-release rule: the file is removed only when an exclusive lock on it can be
/// taken now (nobody else took the lease meanwhile) and it is still the inode that was held;
/// otherwise a shared holder's record is removed from the body and the file stays.
///
/// Must be called by a process that does not hold the lease itself (checked: `HeldHere`).
pub fn release_after_exit(held: &HeldElsewhere) -> Result<Released, LeaseError> {
    let path: Arc<Path> = Arc::from(held.path.as_path());
    if !held_insert(&path) {
        return Err(LeaseError::HeldHere {
            path: held.path.clone(),
        });
    }
    let result = release_after_exit_at(held, &path);
    held_remove(&path);
    result
}

fn release_after_exit_at(held: &HeldElsewhere, shared: &Arc<Path>) -> Result<Released, LeaseError> {
    let path = &held.path;
    // The lockspace as the holder opened it (a canonical path): no link on the way.
    let space = match Space::open(&dir_of(path)) {
        Ok(s) => Arc::new(s),
        Err(LeaseError::DirSymlink { .. }) => return Ok(Released::Kept),
        Err(LeaseError::CreateDir { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Released::Kept);
        }
        Err(e) => return Err(e),
    };
    let file = match open_lease(&space, path, false) {
        Ok(f) => f,
        // Gone (someone took it over and released it) or replaced by a symlink: not ours.
        Err(LeaseError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Released::Kept);
        }
        Err(LeaseError::Symlink { .. }) => return Ok(Released::Kept),
        Err(e) => return Err(e),
    };
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if meta.dev() != held.dev || meta.ino() != held.ino {
        return Ok(Released::Kept);
    }
    let lease = Lease {
        space,
        file: Some(file),
        path: shared.clone(),
        dev: held.dev,
        ino: held.ino,
        mode: Mode::Shared,
        me: (Arc::from(held.host_id.as_str()), held.pid),
        body_pending: false,
    };
    match set_lease_lock(lease.file(), short(libc::F_WRLCK)) {
        // Nobody holds it: remove it (only if it is still the inode at the path), then the
        // lock goes with the fd.
        Ok(()) => lease.unlink_if_ours(),
        Err(Errno::EAGAIN | Errno::EACCES) => {
            if held.mode == Mode::Shared {
                // Other shared holders remain: take our record out of the body.
                let (host_id, pid) = (&held.host_id, held.pid);
                lease.edit_shared_body(|hs| {
                    hs.retain(|h| !(h.host_id == *host_id && h.pid == pid));
                })?;
            }
            // Exclusive: someone took the free lease over already; it is theirs now.
            Ok(Released::Kept)
        }
        Err(Errno::ENOLCK) => Err(LeaseError::NoLocks { dir: dir_of(path) }),
        Err(e) => Err(errno_err("lock", path, e)),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Close first, then forget: until the fd is closed the path must stay marked as
        // held, or another thread could open it and lose its lock to our close.
        drop(self.file.take());
        held_remove(&self.path);
    }
}

fn same_process(a: &Holder, b: &HolderRef<'_>) -> bool {
    a.host_id == b.host_id && a.host == b.host && a.pid == b.pid
}

fn write_body(file: &File, path: &Path, body: impl AsRef<[u8]>) -> Result<(), LeaseError> {
    file.set_len(0).map_err(io_err("write", path))?;
    file.write_all_at(body.as_ref(), 0)
        .map_err(io_err("write", path))
}

/// What a lease file says, read without taking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// The lease file.
    pub lease: PathBuf,
    /// Whether the file exists.
    pub exists: bool,
    /// The lock on byte 0, if any: no lock means the lease is free (a stale file).
    pub lock: Option<LockInfo>,
    /// The holder records in the body (possibly stale when there is no lock).
    pub holders: Vec<Holder>,
}

/// Reads a lease file and asks the kernel whether it is locked, without taking it.
///
/// Must not be used on a lease this process holds (closing our fd would drop that lock);
/// that is refused with [`LeaseError::HeldHere`].
pub fn inspect(path: &Path) -> Result<Inspection, LeaseError> {
    if is_held_here(path) {
        return Err(LeaseError::HeldHere { path: path.into() });
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Inspection {
                lease: path.into(),
                exists: false,
                lock: None,
                holders: Vec::new(),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LeaseError::Symlink { path: path.into() });
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    if !file.metadata().map_err(io_err("stat", path))?.is_file() {
        return Err(LeaseError::NotRegular { path: path.into() });
    }
    let holders = read_holders(&file).map_err(io_err("read", path))?;
    let lock = lock_info(&file, path);
    Ok(Inspection {
        lease: path.into(),
        exists: true,
        lock,
        holders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32, mode: Mode) -> Holder {
        Holder {
            host: "h".into(),
            host_id: "id".into(),
            pid,
            mode,
            since: 1,
            version: "0".into(),
            disk: "/d".into(),
            owners: vec![Owner {
                name: "vm".into(),
                uuid: "u".into(),
                pid,
            }],
        }
    }

    fn key(s: &str) -> DiskKey {
        DiskKey::new(s).unwrap()
    }

    /// Acquires a lease that must be free.
    fn held(dir: &Path, k: &str, mode: Mode, h: &Holder) -> Lease {
        match acquire(dir, &key(k), mode, h).unwrap() {
            Acquired::Held(lease) => lease,
            Acquired::Busy(_) => panic!("busy"),
        }
    }

    #[test]
    fn a_lockspace_on_a_local_file_system_is_local() {
        // The temp directory is on a local file system on the machines that run this (the
        // other case, NFS, is in the rig: vm-harness/tests/nfs_stall.rs).
        let dir = tempfile::tempdir().unwrap();
        let ls = dir.path().join("ls");
        assert!(on_local_fs(&ls).unwrap(), "{}", ls.display());
        let magic = nix::sys::statfs::statfs(dir.path())
            .unwrap()
            .filesystem_type();
        assert!(
            [
                nix::sys::statfs::TMPFS_MAGIC,
                nix::sys::statfs::EXT4_SUPER_MAGIC,
                nix::sys::statfs::XFS_SUPER_MAGIC,
                nix::sys::statfs::BTRFS_SUPER_MAGIC
            ]
            .contains(&magic),
            "the test machine's temp dir is on {magic:?}"
        );
    }

    #[test]
    fn a_borrowed_record_is_the_same_json_as_the_owned_one() {
        let mut h = holder(7, Mode::Shared);
        h.owners.push(Owner {
            name: "b \"quoted\"\n".into(),
            uuid: "u-2".into(),
            pid: 9,
        });
        let owned = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::to_string(&h.borrowed()).unwrap(), owned);
        let shared: Vec<Arc<Owner>> = h.owners.iter().cloned().map(Arc::new).collect();
        let r = HolderRef {
            owners: OwnersRef::Shared(&shared),
            ..h.borrowed()
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), owned);
        assert_eq!(r.to_holder(), h);
        assert_eq!(render_one(&r), format!("{owned}\n").into_bytes());
    }

    #[test]
    fn deferred_body_is_written_once_and_never_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let h = holder(std::process::id(), Mode::Exclusive);
        let Acquired::Held(mut lease) =
            acquire_deferring_body(dir.path(), &key("k1"), Mode::Exclusive, &h.borrowed()).unwrap()
        else {
            panic!("busy")
        };
        let body = || std::fs::read_to_string(dir.path().join("k1")).unwrap();
        assert_eq!(body(), "", "not written yet");
        lease.write_pending(&h.borrowed()).unwrap();
        assert_eq!(parse_holders(&body()), vec![h.clone()]);
        // Written once: a second call writes nothing (the file is left as it is).
        std::fs::write(dir.path().join("k1"), "x").unwrap();
        lease.write_pending(&h.borrowed()).unwrap();
        assert_eq!(body(), "x");
        lease.release().unwrap();

        // A record written meanwhile replaces the pending one.
        let Acquired::Held(mut lease) =
            acquire_deferring_body(dir.path(), &key("k2"), Mode::Exclusive, &h.borrowed()).unwrap()
        else {
            panic!("busy")
        };
        let mut newer = h.clone();
        newer.since = 99;
        lease.write_holder(&newer.borrowed()).unwrap();
        lease.write_pending(&h.borrowed()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("k2")).unwrap();
        assert_eq!(parse_holders(&text), vec![newer]);
        lease.release().unwrap();

        // The plain acquire writes at once.
        let lease = held(dir.path(), "k3", Mode::Exclusive, &h);
        let text = std::fs::read_to_string(dir.path().join("k3")).unwrap();
        assert_eq!(parse_holders(&text), vec![h]);
        lease.release().unwrap();
    }

    #[test]
    fn a_locked_file_counts_as_at_its_path_while_it_has_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let f = File::create(&path).unwrap();
        let m = linked(&f, &path).unwrap().expect("named");
        assert_eq!(m.ino(), std::fs::metadata(&path).unwrap().ino());
        // Renamed over (what a second `rename` into the lockspace would do): no name left.
        let other = dir.path().join("other");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(linked(&f, &path).unwrap().is_none());
        // Unlinked: no name either.
        let g = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(linked(&g, &path).unwrap().is_none());
    }

    #[test]
    fn release_leaves_a_file_that_replaced_the_lease_file() {
        let dir = tempfile::tempdir().unwrap();
        let h = holder(std::process::id(), Mode::Exclusive);
        let lease = held(dir.path(), "k1", Mode::Exclusive, &h);
        // Someone removes the held file by hand and another holder creates its own.
        let path = dir.path().join("k1");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"theirs\n").unwrap();
        assert_eq!(lease.release().unwrap(), Released::Kept);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"theirs\n",
            "not ours to remove"
        );
        // And a file removed by hand and not replaced: nothing to remove.
        let lease = held(dir.path(), "k2", Mode::Exclusive, &h);
        std::fs::remove_file(dir.path().join("k2")).unwrap();
        assert_eq!(lease.release().unwrap(), Released::Kept);
    }

    #[test]
    fn a_lease_knows_when_it_is_lost() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("ls");
        let h = holder(std::process::id(), Mode::Exclusive);
        let removed = held(&dir, "k1", Mode::Exclusive, &h);
        let replaced = held(&dir, "k2", Mode::Exclusive, &h);
        let kept = held(&dir, "k3", Mode::Exclusive, &h);
        assert_eq!(kept.lost_why().unwrap(), None);
        std::fs::remove_file(dir.join("k1")).unwrap();
        std::fs::remove_file(dir.join("k2")).unwrap();
        std::fs::write(dir.join("k2"), b"").unwrap();
        assert_eq!(
            removed.lost_why().unwrap(),
            Some("the lease file was removed")
        );
        assert_eq!(
            replaced.lost_why().unwrap(),
            Some("another file took the lease file's name")
        );
        assert_eq!(kept.lost_why().unwrap(), None);
        // The whole lockspace moved away: everyone else now meets in another directory.
        std::fs::rename(&dir, top.path().join("moved")).unwrap();
        assert_eq!(
            kept.lost_why().unwrap(),
            Some("its lockspace directory was removed")
        );
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            kept.lost_why().unwrap(),
            Some("its lockspace directory was replaced")
        );
    }

    #[test]
    fn release_with_hands_over_only_a_removed_files_fd() {
        let dir = tempfile::tempdir().unwrap();
        let h = holder(std::process::id(), Mode::Exclusive);
        let lease = held(dir.path(), "k1", Mode::Exclusive, &h);
        let mut handed = None;
        assert_eq!(
            lease.release_with(|f| handed = Some(f)).unwrap(),
            Released::Unlinked
        );
        // The path is free for a new lease while the old fd is still open.
        let fd = handed.expect("fd handed over");
        let again = held(dir.path(), "k1", Mode::Exclusive, &h);
        drop(fd);
        // Closing the old fd did not drop the new lease's lock (another inode). An OFD lock
        // query sees this process's own fcntl locks, as another process would.
        let other = File::open(dir.path().join("k1")).unwrap();
        let mut fl = flock(short(libc::F_WRLCK), 0);
        fcntl(&other, FcntlArg::F_OFD_GETLK(&mut fl)).unwrap();
        assert_eq!(fl.l_type, short(libc::F_WRLCK), "still locked");
        assert!(is_held_here(again.path()));
        again.release().unwrap();

        // A shared lease kept (another holder) closes its fd itself.
        let s = holder(std::process::id(), Mode::Shared);
        let shared = held(dir.path(), "k2", Mode::Shared, &s);
        let path = dir.path().join("k2");
        // Another holder's read lock (an OFD lock: it conflicts with ours although this
        // process owns both) makes this holder not the last.
        let other = File::open(&path).unwrap();
        fcntl(
            &other,
            FcntlArg::F_OFD_SETLK(&flock(short(libc::F_RDLCK), 0)),
        )
        .unwrap();
        let mut handed = false;
        let kept = shared.release_with(|_| handed = true).unwrap();
        assert_eq!(kept, Released::Kept);
        assert!(!handed);
        assert!(!is_held_here(&path));
    }

    #[test]
    fn acquire_writes_holder_and_release_unlinks() {
        let dir = tempfile::tempdir().unwrap();
        let ls = dir.path().join("a/b");
        let h = holder(std::process::id(), Mode::Exclusive);
        let Acquired::Held(lease) = acquire(&ls, &key("k1"), Mode::Exclusive, &h).unwrap() else {
            panic!("busy in an empty lockspace")
        };
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&ls).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let meta = std::fs::metadata(lease.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let body = std::fs::read_to_string(lease.path()).unwrap();
        assert_eq!(parse_holders(&body), vec![h.clone()]);
        // A second acquire in the same process is refused before anything is opened.
        assert!(matches!(
            acquire(&ls, &key("k1"), Mode::Shared, &h),
            Err(LeaseError::HeldHere { .. })
        ));
        assert!(matches!(
            inspect(lease.path()),
            Err(LeaseError::HeldHere { .. })
        ));
        let path = lease.path().to_path_buf();
        assert_eq!(lease.release().unwrap(), Released::Unlinked);
        assert!(!path.exists());
        // Free again, and inspect of a missing file says so.
        assert!(!inspect(&path).unwrap().exists);
    }

    #[test]
    fn symlinked_lease_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("k2")).unwrap();
        let e = acquire(
            dir.path(),
            &key("k2"),
            Mode::Exclusive,
            &holder(1, Mode::Exclusive),
        )
        .unwrap_err();
        assert!(matches!(e, LeaseError::Symlink { .. }), "{e:?}");
        assert!(
            e.to_string()
                .ends_with("k2 is a symbolic link; refusing to follow it")
        );
        assert!(matches!(
            inspect(&dir.path().join("k2")),
            Err(LeaseError::Symlink { .. })
        ));
    }

    #[test]
    fn non_regular_lease_and_lockspace_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("k3")).unwrap();
        let e = acquire(
            dir.path(),
            &key("k3"),
            Mode::Exclusive,
            &holder(1, Mode::Exclusive),
        )
        .unwrap_err();
        assert!(matches!(e, LeaseError::NotRegular { .. }), "{e:?}");
        nix::unistd::mkfifo(&dir.path().join("k4"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = acquire(
            dir.path(),
            &key("k4"),
            Mode::Exclusive,
            &holder(1, Mode::Exclusive),
        )
        .unwrap_err();
        assert!(matches!(e, LeaseError::NotRegular { .. }), "{e:?}");
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let e = acquire(
            &file,
            &key("k"),
            Mode::Exclusive,
            &holder(1, Mode::Exclusive),
        )
        .unwrap_err();
        assert!(matches!(e, LeaseError::NotDir { .. }), "{e:?}");
        let e = acquire(
            &file.join("sub"),
            &key("k"),
            Mode::Exclusive,
            &holder(1, Mode::Exclusive),
        )
        .unwrap_err();
        assert!(matches!(e, LeaseError::CreateDir { .. }), "{e:?}");
    }

    #[test]
    fn a_lockspace_swapped_at_run_time_is_never_followed() {
        // Issue 15, 3: the lockspace is renamed away and a symbolic link put in its place:
        // no lease is created through it, nor in the renamed directory.
        let tmp = tempfile::tempdir().unwrap();
        let ls = tmp.path().join("ls");
        let h = holder(std::process::id(), Mode::Exclusive);
        held(&ls, "k1", Mode::Exclusive, &h).release().unwrap();
        std::fs::rename(&ls, tmp.path().join("ls.moved")).unwrap();
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &ls).unwrap();
        let e = acquire(&ls, &key("k2"), Mode::Exclusive, &h).unwrap_err();
        assert!(matches!(e, LeaseError::DirSymlink { .. }), "{e:?}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let entries = |d: &str| std::fs::read_dir(tmp.path().join(d)).unwrap().count();
        assert_eq!((entries("elsewhere"), entries("ls.moved")), (0, 0));
        // A plain directory put back in its place is the lockspace again.
        std::fs::remove_file(&ls).unwrap();
        std::fs::create_dir(&ls).unwrap();
        let lease = held(&ls, "k3", Mode::Exclusive, &h);
        assert!(ls.join("k3").exists() && lease.path() == ls.join("k3"));
        assert_eq!(entries("ls.moved"), 0);
    }

    #[test]
    fn stale_lease_file_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let stale = holder(999_999, Mode::Exclusive);
        std::fs::write(dir.path().join("k5"), render_holders(&[stale])).unwrap();
        let i = inspect(&dir.path().join("k5")).unwrap();
        assert!(i.exists && i.lock.is_none() && i.holders.len() == 1);
        let h = holder(std::process::id(), Mode::Exclusive);
        let Acquired::Held(lease) = acquire(dir.path(), &key("k5"), Mode::Exclusive, &h).unwrap()
        else {
            panic!("a stale lease file must be free")
        };
        // The stale record is replaced by ours.
        let body = std::fs::read_to_string(lease.path()).unwrap();
        assert_eq!(parse_holders(&body), vec![h]);
        lease.release().unwrap();
    }

    #[test]
    fn shared_body_keeps_one_line_per_process() {
        let dir = tempfile::tempdir().unwrap();
        // Another host's shared holder, already recorded.
        let other = Holder {
            host: "other".into(),
            ..holder(7, Mode::Shared)
        };
        std::fs::write(
            dir.path().join("k6"),
            render_holders(std::slice::from_ref(&other)),
        )
        .unwrap();
        let mut h = holder(std::process::id(), Mode::Shared);
        let mut lease = held(dir.path(), "k6", Mode::Shared, &h);
        h.owners.push(Owner {
            name: "vm2".into(),
            uuid: "u2".into(),
            pid: 3,
        });
        lease.write_holder(&h.borrowed()).unwrap();
        let body = std::fs::read_to_string(lease.path()).unwrap();
        assert_eq!(parse_holders(&body), vec![other, h]);
        // Nobody else holds a lock, so the upgrade succeeds and the file goes.
        assert_eq!(lease.release().unwrap(), Released::Unlinked);
    }

    /// No file system on the test machines answers ENOLCK (NFS without a lock manager
    /// does), so the lock call fails through the test seam.
    #[test]
    fn enolck_is_a_clear_error_and_leaves_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        let ls = std::fs::canonicalize(dir.path()).unwrap().join("ls");
        let h = holder(std::process::id(), Mode::Exclusive);
        FAIL_LOCK.with(|f| f.set(Some(Errno::ENOLCK)));
        let e = acquire(&ls, &key("k7"), Mode::Exclusive, &h).unwrap_err();
        FAIL_LOCK.with(|f| f.set(None));
        assert!(
            matches!(&e, LeaseError::NoLocks { dir } if *dir == ls),
            "{e:?}"
        );
        let msg = crate::exit::chain_std(&e);
        assert_eq!(
            msg,
            format!(
                "lockspace {} is on a file system without POSIX locks (fcntl F_SETLK: ENOLCK; on NFS, is the lock manager running?)",
                ls.display()
            )
        );
        assert!(!msg.contains('\n'));
        // Nothing is held: no lock, not marked held here, and the lease is free to take.
        let path = ls.join("k7");
        assert!(!is_held_here(&path));
        assert_eq!(inspect(&path).unwrap().lock, None);
        let Acquired::Held(lease) = acquire(&ls, &key("k7"), Mode::Exclusive, &h).unwrap() else {
            panic!("busy after a failed acquire")
        };
        assert_eq!(lease.release().unwrap(), Released::Unlinked);
    }

    #[test]
    fn holder_lines_parse_leniently() {
        let h = holder(5, Mode::Shared);
        let body = format!(
            "garbage\n{}\n\n{{\"x\":1}}\n",
            serde_json::to_string(&h).unwrap()
        );
        assert_eq!(parse_holders(&body), vec![h.clone()]);
        assert!(
            h.describe()
                .contains("vm (uuid u, pid 5) on host h (id id), shared since 1")
        );
        let b = Busy {
            lease: "/l".into(),
            holders: vec![],
            lock: Some(LockInfo {
                mode: Mode::Exclusive,
                pid: 42,
                process: Some("virtlockd".into()),
            }),
            reservation: None,
        };
        assert_eq!(
            b.describe(),
            "held exclusive by pid 42 (virtlockd) with no disklock holder record (virtlockd or another tool)"
        );
    }
}
