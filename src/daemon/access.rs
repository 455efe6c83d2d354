//! What a client that is not root may take a lease on: a disk it could open itself.
//!
//! The daemon runs as root and can open anything; a client with the socket opened to it
//! (a widened socket mode, group access) must not lease what it could not touch, nor learn
//! from the daemon's answers whether a path it cannot reach exists. [`may_open`] decides as
//! the kernel would for the client, from permission bits: search permission on every
//! directory on the way (symlinks followed) and read, or read and write, on what the path
//! names. POSIX ACLs, capabilities and security modules are not consulted: an ACL that
//! grants the client more is not honoured (it is refused), and one that takes from it what
//! the bits give is not seen.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use disklock_naming::SysRoot;

/// Permission bits of one class (owner, group, other).
pub const READ: u32 = 0o4;
/// See [`READ`].
pub const WRITE: u32 = 0o2;
/// See [`READ`].
pub const SEARCH: u32 = 0o1;

/// Who a client is, for file permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Effective uid (SO_PEERCRED).
    pub uid: u32,
    /// Effective gid (SO_PEERCRED).
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Creds {
    /// A client's credentials: uid and gid from SO_PEERCRED, supplementary groups from
    /// `/proc/PID/status` of the process that connected. A process gone meanwhile has none
    /// (it may then be refused what only a group would give it).
    pub fn of_peer(uid: u32, gid: u32, pid: Option<i32>) -> Creds {
        let groups = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .map(|s| groups_of(&s))
            .unwrap_or_default();
        Creds { uid, gid, groups }
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the permission bits of a file with this mode, owner and group grant all of
    /// `want` ([`READ`], [`WRITE`], [`SEARCH`]) to these credentials: the owner's bits if
    /// the uid owns it, else the group's if one of the groups does, else the others'.
    pub fn allows(&self, mode: u32, uid: u32, gid: u32, want: u32) -> bool {
        let class = if uid == self.uid {
            mode >> 6
        } else if self.in_group(gid) {
            mode >> 3
        } else {
            mode
        };
        class & want == want
    }

    fn allows_file(&self, m: &std::fs::Metadata, want: u32) -> bool {
        self.allows(m.mode(), m.uid(), m.gid(), want)
    }
}

/// The supplementary groups in the text of `/proc/PID/status` (its `Groups:` line).
fn groups_of(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process with `creds` could open `path` (absolute, inside `root`) for `want`:
/// it may search every directory the lookup goes through, following symlinks as the kernel
/// does, and what the path names grants it `want`. False as well for a path that does not
/// exist, so that the answer says nothing about what the client cannot reach.
pub fn may_open(root: &SysRoot, path: &Path, creds: &Creds, want: u32) -> bool {
    let searchable =
        |dir: &Path| std::fs::metadata(root.real(dir)).is_ok_and(|m| creds.allows_file(&m, SEARCH));
    root.canonicalize_searching(path, searchable)
        .ok()
        .and_then(|canon| std::fs::metadata(root.real(canon)).ok())
        .is_some_and(|m| creds.allows_file(&m, want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn permission_classes() {
        let c = Creds {
            uid: 1000,
            gid: 100,
            groups: vec![6, 27],
        };
        // Owner: the owner's bits only, even where the group's would give more.
        assert!(c.allows(0o600, 1000, 0, READ | WRITE));
        assert!(!c.allows(0o060, 1000, 100, READ));
        // Group, primary or supplementary.
        assert!(c.allows(0o640, 0, 100, READ));
        assert!(c.allows(0o660, 0, 6, READ | WRITE));
        assert!(!c.allows(0o640, 0, 6, WRITE));
        // Others.
        assert!(c.allows(0o604, 0, 42, READ));
        assert!(!c.allows(0o640, 0, 42, READ));
        assert!(c.allows(0o711, 0, 0, SEARCH));
        assert!(!c.allows(0o700, 0, 0, SEARCH));
    }

    #[test]
    fn groups_from_proc_status() {
        let status = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGroups:\t6 27 1000 \nNgid:\t0\n";
        assert_eq!(groups_of(status), vec![6, 27, 1000]);
        assert_eq!(groups_of("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(groups_of("Name:\tx\n"), Vec::<u32>::new());
        let me = Creds::of_peer(0, 0, Some(i32::try_from(std::process::id()).unwrap()));
        let mine = groups_of(&std::fs::read_to_string("/proc/self/status").unwrap());
        assert_eq!(me.groups, mine);
    }

    /// The walk as another user: files owned by this process's uid, seen by a uid that is
    /// not it and in none of its groups (the others' bits apply).
    #[test]
    fn may_open_walks_as_the_client() {
        let t = tempfile::tempdir().unwrap();
        let root = SysRoot::new(t.path());
        let other = Creds {
            uid: nix::unistd::geteuid().as_raw() + 4242,
            gid: nix::unistd::getegid().as_raw() + 4242,
            groups: vec![],
        };
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(root.real(p), std::fs::Permissions::from_mode(m)).unwrap();
        };
        std::fs::create_dir_all(root.real("/open/closed")).unwrap();
        std::fs::write(root.real("/open/rw.img"), b"").unwrap();
        std::fs::write(root.real("/open/ro.img"), b"").unwrap();
        std::fs::write(root.real("/open/closed/rw.img"), b"").unwrap();
        std::os::unix::fs::symlink("closed/rw.img", root.real("/open/via-closed")).unwrap();
        std::os::unix::fs::symlink("/open/rw.img", root.real("/open/closed/back")).unwrap();
        mode("/", 0o755);
        mode("/open", 0o755);
        mode("/open/closed", 0o700);
        mode("/open/rw.img", 0o666);
        mode("/open/ro.img", 0o644);
        mode("/open/closed/rw.img", 0o666);
        let may = |p: &str, want: u32| may_open(&root, Path::new(p), &other, want);
        assert!(may("/open/rw.img", READ | WRITE));
        assert!(may("/open/ro.img", READ));
        assert!(!may("/open/ro.img", READ | WRITE));
        // A directory it cannot search hides what is in it, reached directly or by a link.
        assert!(!may("/open/closed/rw.img", READ));
        assert!(!may("/open/via-closed", READ));
        assert!(!may("/open/closed/back", READ));
        // Nothing there is the same answer.
        assert!(!may("/open/none.img", READ));
        assert!(!may("/none/x.img", READ));
        // Its owner may.
        let me = Creds {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: vec![],
        };
        assert!(may_open(
            &root,
            Path::new("/open/via-closed"),
            &me,
            READ | WRITE
        ));
    }
}
