//! The root directory the resolver reads through, and symlink resolution inside it.
//!
//! Every file the resolver reads — `/sys`, `/run/udev/data`, `/dev` — is reached through a
//! [`SysRoot`]. On a host it is `/`; tests point it at a fake tree in a temporary directory, and
//! a container can point it at the host's tree mounted elsewhere. Paths *inside* the root are
//! absolute (`/dev/sdb`) and are what users see in output and what keys are hashed from.
//!
//! [`SysRoot::canonicalize`] follows symlinks the way the kernel does, but an absolute link
//! target stays inside the root, so a fake tree behaves like a real one. It also names the exact
//! component that failed, which `std::fs::canonicalize` does not.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Linux gives up after this many symlinks in one lookup (`MAXSYMLINKS` in `fs/namei.c`).
pub const MAX_SYMLINKS: usize = 40;

/// Why a path could not be resolved inside the root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// A component does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The first missing path, inside the root.
        path: PathBuf,
    },
    /// A symlink points at something that does not exist.
    #[error("broken symlink {} -> {}", link.display(), target.display())]
    BrokenSymlink {
        /// The last symlink that was followed.
        link: PathBuf,
        /// What it points at, as `readlink` prints it.
        target: PathBuf,
    },
    /// More than [`MAX_SYMLINKS`] symlinks, usually a loop.
    #[error("too many levels of symbolic links (a symlink loop?) at {}", path.display())]
    Loop {
        /// The symlink at which the walk gave up.
        path: PathBuf,
    },
    /// A component in the middle of the path is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending component, inside the root.
        path: PathBuf,
    },
    /// The walk may not look up names in this directory (see
    /// [`SysRoot::canonicalize_searching`]).
    #[error("{}: no search permission", dir.display())]
    NoSearch {
        /// The directory, inside the root.
        dir: PathBuf,
    },
    /// Any other I/O failure (permission denied, I/O error).
    #[error("{}", path.display())]
    Io {
        /// The path being examined, inside the root.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The directory that stands for `/` for everything the resolver reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        Self::host()
    }
}

impl SysRoot {
    /// The real root of this host.
    pub fn host() -> Self {
        SysRoot {
            root: PathBuf::from("/"),
        }
    }

    /// A tree below `dir` that looks like a root file system (`dir/sys`, `dir/dev`, `dir/run`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SysRoot { root: dir.into() }
    }

    /// The directory that stands for `/`.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Whether this is the host's own `/`.
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The real path of `inner`, an absolute path inside the root.
    pub fn real(&self, inner: impl AsRef<Path>) -> PathBuf {
        let inner = inner.as_ref();
        let rel = inner.strip_prefix("/").unwrap_or(inner);
        if rel.as_os_str().is_empty() {
            return self.root.clone();
        }
        self.root.join(rel)
    }

    /// The inside-the-root form of a real path, if it lies under the root.
    pub fn inner(&self, real: &Path) -> Option<PathBuf> {
        let rel = real.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// Whether `path` names a regular file reached without any symlink, so that
    /// [`canonicalize`](Self::canonicalize) would return `path` itself: the root is the
    /// host's, `path` is absolute and plain (no empty, `.` or `..` component, no trailing
    /// `/`), and one `openat2(RESOLVE_NO_SYMLINKS)` of it (`O_PATH`: no side effect on any
    /// file type) finds, by `fstat`, a regular file. The lookup is atomic, so the answer is
    /// the walk's answer at one instant — 3 syscalls where the walk takes one `lstat` per
    /// component. False whenever that cannot be shown (a symlink anywhere on the path, a
    /// kernel before 5.6, any error): the caller then walks.
    pub fn is_plain_regular_file(&self, path: &Path) -> bool {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        if !self.is_host() || !is_plain(path.as_os_str().as_bytes()) {
            return false;
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how)
            .and_then(nix::sys::stat::fstat)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    }

    /// Resolves `path` (absolute, inside the root) to the canonical path of what it names,
    /// following symlinks (absolute targets stay inside the root) and `..` physically.
    /// The final component may be any file type; it must exist.
    pub fn canonicalize(&self, path: &Path) -> Result<PathBuf, WalkError> {
        self.canonicalize_searching(path, |_| true)
    }

    /// [`canonicalize`](Self::canonicalize), asking `may_search` about each directory
    /// (inside the root) before a name is looked up in it, `..` included: a directory it
    /// refuses ends the walk with [`WalkError::NoSearch`]. With a check of a user's search
    /// permission, this walks the path as the kernel would for that user.
    pub fn canonicalize_searching(
        &self,
        path: &Path,
        mut may_search: impl FnMut(&Path) -> bool,
    ) -> Result<PathBuf, WalkError> {
        let mut todo: VecDeque<OsString> = components(path).collect();
        let mut done = PathBuf::from("/");
        let mut hops = 0usize;
        let mut last_link: Option<(PathBuf, PathBuf)> = None;
        while let Some(comp) = todo.pop_front() {
            if !may_search(&done) {
                return Err(WalkError::NoSearch { dir: done });
            }
            if comp == ".." {
                done.pop();
                continue;
            }
            let candidate = done.join(&comp);
            let real = self.real(&candidate);
            let meta = match std::fs::symlink_metadata(&real) {
                Ok(m) => m,
                Err(e) => {
                    return Err(match e.raw_os_error() {
                        Some(libc::ENOENT) => match last_link.take() {
                            Some((link, target)) => WalkError::BrokenSymlink { link, target },
                            None => WalkError::NotFound { path: candidate },
                        },
                        Some(libc::ENOTDIR) => WalkError::NotADirectory { path: done },
                        _ => WalkError::Io {
                            path: candidate,
                            source: e,
                        },
                    });
                }
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(WalkError::Loop { path: candidate });
                }
                let target = std::fs::read_link(&real).map_err(|source| WalkError::Io {
                    path: candidate.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    done = PathBuf::from("/");
                }
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(c);
                }
                last_link = Some((candidate, target));
                continue;
            }
            if !todo.is_empty() && !meta.is_dir() {
                return Err(WalkError::NotADirectory { path: candidate });
            }
            done = candidate;
            if todo.is_empty() {
                last_link = None;
            }
        }
        Ok(done)
    }
}

/// Whether an absolute path is spelled as its canonical form would be: `/` and then
/// non-empty components other than `.` and `..`, separated by single slashes, no trailing
/// slash (`/` itself is not plain: it is no file).
fn is_plain(p: &[u8]) -> bool {
    let Some(rest) = p.strip_prefix(b"/") else {
        return false;
    };
    !rest.is_empty()
        && rest
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// The normal and `..` components of a path; `.` and the root are dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(s) => Some(s.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// The last component of a path as UTF-8, for kernel device names (always ASCII).
pub(crate) fn file_name_str(path: &Path) -> Option<&str> {
    path.file_name().and_then(OsStr::to_str)
}

/// Whether `bytes` contains a NUL, which no path can.
pub(crate) fn has_nul(bytes: &OsStr) -> bool {
    bytes.as_bytes().contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Each directory a name is looked up in is asked about, in walk order, symlinks and
    /// `..` followed; one refused ends the walk there.
    #[test]
    fn a_searching_walk_asks_about_every_directory() {
        let (_t, r) = tree();
        symlink("../../sdb", r.real("/dev/disk/by-id/wwn-1")).unwrap();
        let mut asked = Vec::new();
        let canon = r
            .canonicalize_searching(Path::new("/dev/disk/by-id/wwn-1"), |d| {
                asked.push(d.to_path_buf());
                true
            })
            .unwrap();
        assert_eq!(canon, Path::new("/dev/sdb"));
        let asked: Vec<&str> = asked.iter().map(|p| p.to_str().unwrap()).collect();
        // The link leads to ../../sdb: `..` is looked up in by-id, then in disk, and sdb in
        // /dev.
        assert_eq!(
            asked,
            [
                "/",
                "/dev",
                "/dev/disk",
                "/dev/disk/by-id",
                "/dev/disk/by-id",
                "/dev/disk",
                "/dev"
            ]
        );
        let e = r
            .canonicalize_searching(Path::new("/dev/disk/by-id/wwn-1"), |d| {
                d != Path::new("/dev/disk")
            })
            .unwrap_err();
        assert!(
            matches!(&e, WalkError::NoSearch { dir } if dir == Path::new("/dev/disk")),
            "{e}"
        );
        assert_eq!(
            r.canonicalize(Path::new("/dev/disk/by-id/wwn-1")).unwrap(),
            canon
        );
    }

    fn tree() -> (tempfile::TempDir, SysRoot) {
        let t = tempfile::tempdir().unwrap();
        let r = SysRoot::new(t.path());
        std::fs::create_dir_all(r.real("/dev/disk/by-id")).unwrap();
        std::fs::create_dir_all(r.real("/dev/mapper")).unwrap();
        std::fs::write(r.real("/dev/sdb"), b"").unwrap();
        (t, r)
    }

    #[test]
    fn plain_spellings() {
        for p in ["/a", "/a/b.img", "/dev/shm/x y", "/a/.b", "/a/..b"] {
            assert!(is_plain(p.as_bytes()), "{p}");
        }
        for p in [
            "", "/", "a/b", "//a", "/a//b", "/a/", "/a/.", "/a/..", "/./a", "/a/../b", "/..",
        ] {
            assert!(!is_plain(p.as_bytes()), "{p}");
        }
    }

    /// The fast check agrees with the walk: true only where `canonicalize` returns the path
    /// itself and it names a regular file; any symlink on the way, at the end or in the
    /// middle, makes it false (and a re-pointed or newly planted symlink is seen at once).
    #[test]
    fn plain_regular_file_only_without_symlinks() {
        let t = tempfile::tempdir().unwrap();
        // The host root: real paths, with any symlink in the temp dir's own path resolved.
        let base = std::fs::canonicalize(t.path()).unwrap();
        let host = SysRoot::host();
        let p = |rel: &str| base.join(rel);
        std::fs::create_dir_all(p("d")).unwrap();
        std::fs::create_dir_all(p("e")).unwrap();
        std::fs::write(p("d/x.img"), b"").unwrap();
        std::fs::write(p("e/x.img"), b"").unwrap();
        symlink(p("d/x.img"), p("link.img")).unwrap();
        symlink(p("d"), p("ld")).unwrap();
        nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fast = |rel: &str| host.is_plain_regular_file(&p(rel));
        assert!(fast("d/x.img"));
        assert_eq!(host.canonicalize(&p("d/x.img")).unwrap(), p("d/x.img"));
        // A symlink at the end or in the middle, a directory, a fifo, nothing: the walk.
        assert!(!fast("link.img"));
        assert!(!fast("ld/x.img"));
        assert!(!fast("d"));
        assert!(!fast("fifo"));
        assert!(!fast("d/none.img"));
        assert!(!fast("d/x.img/"));
        assert!(!fast("e/../d/x.img"));
        // A directory replaced by a symlink to another one: no longer plain.
        std::fs::rename(p("d"), p("d0")).unwrap();
        symlink(p("e"), p("d")).unwrap();
        assert!(!fast("d/x.img"));
        assert_eq!(host.canonicalize(&p("d/x.img")).unwrap(), p("e/x.img"));
        // Another root: always the walk.
        assert!(!SysRoot::new(&base).is_plain_regular_file(&p("e/x.img")));
        assert!(host.is_plain_regular_file(&p("e/x.img")));
    }

    #[test]
    fn relative_and_absolute_links_stay_inside() {
        let (_t, r) = tree();
        symlink("../../sdb", r.real("/dev/disk/by-id/rel")).unwrap();
        symlink("/dev/sdb", r.real("/dev/disk/by-id/abs")).unwrap();
        symlink("/dev/disk/by-id/abs", r.real("/dev/mapper/chain")).unwrap();
        for p in [
            "/dev/disk/by-id/rel",
            "/dev/disk/by-id/abs",
            "/dev/mapper/chain",
            "/dev/./disk/../sdb",
        ] {
            assert_eq!(
                r.canonicalize(Path::new(p)).unwrap(),
                Path::new("/dev/sdb"),
                "{p}"
            );
        }
        assert_eq!(
            r.canonicalize(Path::new("/../../dev/sdb")).unwrap(),
            Path::new("/dev/sdb")
        );
    }

    #[test]
    fn errors_name_the_component() {
        let (_t, r) = tree();
        symlink("../../sdz", r.real("/dev/disk/by-id/broken")).unwrap();
        symlink("loop2", r.real("/dev/mapper/loop1")).unwrap();
        symlink("loop1", r.real("/dev/mapper/loop2")).unwrap();
        match r.canonicalize(Path::new("/dev/disk/by-id/broken")) {
            Err(WalkError::BrokenSymlink { link, target }) => {
                assert_eq!(link, Path::new("/dev/disk/by-id/broken"));
                assert_eq!(target, Path::new("../../sdz"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.canonicalize(Path::new("/dev/mapper/loop1")),
            Err(WalkError::Loop { .. })
        ));
        match r.canonicalize(Path::new("/dev/nope/x")) {
            Err(WalkError::NotFound { path }) => assert_eq!(path, Path::new("/dev/nope")),
            other => panic!("{other:?}"),
        }
        match r.canonicalize(Path::new("/dev/sdb/x")) {
            Err(WalkError::NotADirectory { path }) => assert_eq!(path, Path::new("/dev/sdb")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn real_and_inner_are_inverse() {
        let r = SysRoot::new("/tmp/x");
        assert_eq!(r.real("/dev/sdb"), Path::new("/tmp/x/dev/sdb"));
        assert_eq!(
            r.inner(Path::new("/tmp/x/dev/sdb")).unwrap(),
            Path::new("/dev/sdb")
        );
        assert_eq!(SysRoot::host().real("/dev/sdb"), Path::new("/dev/sdb"));
        assert!(r.inner(Path::new("/elsewhere")).is_none());
    }
}
