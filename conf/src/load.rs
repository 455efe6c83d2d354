//! Reading disklock.conf and a libvirt qemu-lockd.conf into a [`Config`]
//!
//! [`load`] is the only function that touches the file system. It hands a file reader to
//! [`load_with`], which does all the work and which tests drive with in-memory files.
//!
//! Order of work:
//!
//! 1. Read disklock.conf: the path given (which must exist) or
//!    [`Context::default_config_path`] (which may be missing).
//! 2. Check its entries, so that `lockd_conf` is known.
//! 3. Read the lockd configuration: the `lockd_conf` setting (which must exist; `""` means
//!    none) or [`Context::default_lockd_conf`] (which may be missing).
//! 4. Merge: disklock.conf over qemu-lockd.conf over the built-in defaults, then derive
//!    `require_lease_for_disks` from `auto_disk_leases` if no file set it.
//!
//! In each file the first occurrence of a key counts. Later ones, and keys the file may not
//! set, give [`Warning`]s; a known key with a bad value is an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::config::{Config, Context, Key, Origin, Setting, check};
use crate::error::ConfError;
use crate::grammar::{Document, Span, parse};
use crate::warning::Warning;

/// The largest configuration file accepted, in bytes. libvirt has a similar sanity cap.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;

/// The result of loading: the configuration and what was noticed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The merged configuration.
    pub config: Config,
    /// Unknown and repeated keys, in file order, disklock.conf first.
    pub warnings: Vec<Warning>,
    /// The files that were read, disklock.conf first; missing optional files are not listed.
    pub files_read: Vec<PathBuf>,
}

/// Which kind of file is being read; it decides which keys are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Disklock,
    Lockd,
}

/// The checked first occurrences of the known keys of one file, with where each value starts.
struct Layer {
    settings: BTreeMap<Key, (Setting, Origin, Span)>,
}

/// A file's content, or the error saying it does not exist.
enum Contents {
    Text(String),
    Missing(io::Error),
}

/// Loads the configuration from the file system.
///
/// `path` is the file from `--config`; it must exist. Without it the default path for `ctx`
/// is read if it exists.
pub fn load(path: Option<&Path>, ctx: &Context) -> Result<Loaded, ConfError> {
    load_with(path, ctx, read_capped)
}

/// Reads at most one byte more than [`MAX_FILE_SIZE`], enough to tell that a file is too big.
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Loads the configuration using `read` to get a file's bytes.
///
/// `read` returns an error of kind [`io::ErrorKind::NotFound`] for a missing file. It may
/// stop after [`MAX_FILE_SIZE`]` + 1` bytes; anything longer is refused anyway.
pub fn load_with<F>(path: Option<&Path>, ctx: &Context, mut read: F) -> Result<Loaded, ConfError>
where
    F: FnMut(&Path) -> io::Result<Vec<u8>>,
{
    let mut warnings = Vec::new();
    let mut files_read = Vec::new();

    let main_path = path
        .map(Path::to_path_buf)
        .or_else(|| ctx.default_config_path());
    let mut main = None;
    if let Some(main_path) = main_path {
        match read_text(&mut read, &main_path)? {
            Contents::Text(text) => {
                let layer = check_file(&main_path, &text, FileKind::Disklock, &mut warnings)?;
                files_read.push(main_path);
                main = Some(layer);
            }
            Contents::Missing(source) if path.is_some() => {
                return Err(ConfError::Io {
                    path: main_path,
                    source,
                });
            }
            Contents::Missing(_) => {}
        }
    }

    // The lockd configuration: the one disklock.conf names, which must exist, or else the
    // default for the context, which may be missing.
    let named = main
        .as_ref()
        .and_then(|layer| layer.settings.get(&Key::LockdConf));
    let lockd = match named {
        Some((Setting::OptionalPath(named), origin, span)) => {
            named.clone().map(|p| (p, Some((origin, *span))))
        }
        _ => ctx.default_lockd_conf().map(|p| (p, None)),
    };
    let mut lockd_layer = None;
    if let Some((lockd_path, named_at)) = lockd {
        match (read_text(&mut read, &lockd_path)?, named_at) {
            (Contents::Text(text), _) => {
                let layer = check_file(&lockd_path, &text, FileKind::Lockd, &mut warnings)?;
                files_read.push(lockd_path);
                lockd_layer = Some(layer);
            }
            (Contents::Missing(source), Some((Origin::File { path, line }, span))) => {
                return Err(ConfError::LockdConf {
                    path: path.clone(),
                    line: *line,
                    col: span.col,
                    lockd_path,
                    source,
                });
            }
            (Contents::Missing(_), _) => {}
        }
    }

    let mut settings = BTreeMap::new();
    for layer in [lockd_layer, main].into_iter().flatten() {
        for (key, (setting, origin, _)) in layer.settings {
            settings.insert(key, (setting, origin));
        }
    }
    let config = Config::build(ctx, settings)?;
    Ok(Loaded {
        config,
        warnings,
        files_read,
    })
}

/// Loads disklock.conf from `text`, as if read from `path`, without touching the file
/// system. A `lockd_conf` set in `text` is reported as missing; root's default lockd
/// configuration is skipped as missing.
///
/// ```
/// use disklock_conf::{load_str, Context, Key, Origin};
/// use std::path::Path;
///
/// let ctx = Context { uid: 0, ..Context::default() };
/// let loaded = load_str(Path::new("/etc/disklock/disklock.conf"), "auto_disk_leases = 0\n", &ctx)?;
/// assert!(!loaded.config.auto_disk_leases);
/// assert!(loaded.config.require_lease_for_disks);
/// assert_eq!(loaded.config.origin(Key::RequireLeaseForDisks), &Origin::Default);
/// # Ok::<(), disklock_conf::ConfError>(())
/// ```
pub fn load_str(path: &Path, text: &str, ctx: &Context) -> Result<Loaded, ConfError> {
    load_with(Some(path), ctx, |p| {
        if p == path {
            Ok(text.as_bytes().to_vec())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    })
}

/// Reads a file as UTF-8.
fn read_text<F>(read: &mut F, path: &Path) -> Result<Contents, ConfError>
where
    F: FnMut(&Path) -> io::Result<Vec<u8>>,
{
    let bytes = match read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Missing(e)),
        Err(source) => {
            return Err(ConfError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if bytes.len() > MAX_FILE_SIZE {
        return Err(ConfError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_SIZE,
        });
    }
    String::from_utf8(bytes).map(Contents::Text).map_err(|e| {
        let valid = String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
        let line = valid.matches('\n').count() + 1;
        let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfError::NotUtf8 {
            path: path.to_path_buf(),
            line,
            col,
        }
    })
}

/// Parses one file and checks the first occurrence of each key it may set.
fn check_file(
    path: &Path,
    text: &str,
    kind: FileKind,
    warnings: &mut Vec<Warning>,
) -> Result<Layer, ConfError> {
    let doc = parse(text).map_err(|e| ConfError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        col: e.col,
        kind: e.kind,
    })?;
    let mut layer = Layer {
        settings: BTreeMap::new(),
    };
    let mut found = doc.duplicate_warnings(Some(path));
    for entry in first_occurrences(&doc) {
        let warn = |message: String| Warning {
            file: Some(path.to_path_buf()),
            line: entry.span.line,
            col: entry.span.col,
            message,
        };
        let key = match Key::from_name(&entry.name) {
            Some(key) if kind == FileKind::Disklock || key.in_lockd_conf() => key,
            Some(_) => {
                found.push(warn(format!(
                    "key \"{}\" ignored, it belongs in disklock.conf, not a qemu-lockd.conf",
                    entry.name
                )));
                continue;
            }
            None => {
                found.push(warn(format!("unknown key \"{}\" ignored", entry.name)));
                continue;
            }
        };
        let setting = check(key, entry, path)?;
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: entry.span.line,
        };
        layer
            .settings
            .insert(key, (setting, origin, entry.value_span));
    }
    found.sort_by_key(|w| (w.line, w.col));
    warnings.extend(found);
    Ok(layer)
}

/// The entries that count: the first of each name, in file order.
fn first_occurrences(doc: &Document) -> impl Iterator<Item = &crate::grammar::Entry> {
    doc.entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !doc.entries[..*i].iter().any(|f| f.name == e.name))
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use crate::error::{FoundValue, Problem};
    use crate::grammar::ParseErrorKind;
    use std::collections::HashMap;

    const MAIN: &str = "/etc/disklock/disklock.conf";
    const LOCKD: &str = "/etc/libvirt/qemu-lockd.conf";

    fn root() -> Context {
        Context {
            uid: 0,
            ..Context::default()
        }
    }

    fn user() -> Context {
        Context {
            uid: 1000,
            home: Some("/home/u".into()),
            ..Context::default()
        }
    }

    /// Loads with in-memory files, returning the result and the paths that were asked for.
    fn load_files(
        path: Option<&str>,
        ctx: &Context,
        files: &[(&str, &str)],
    ) -> (Result<Loaded, ConfError>, Vec<PathBuf>) {
        let files: HashMap<PathBuf, Vec<u8>> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.as_bytes().to_vec()))
            .collect();
        let mut asked = Vec::new();
        let result = load_with(path.map(Path::new), ctx, |p| {
            asked.push(p.to_path_buf());
            files
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        });
        (result, asked)
    }

    fn ok(path: Option<&str>, ctx: &Context, files: &[(&str, &str)]) -> Loaded {
        load_files(path, ctx, files).0.unwrap()
    }

    fn fails(text: &str) -> ConfError {
        load_files(None, &root(), &[(MAIN, text)]).0.unwrap_err()
    }

    fn fails_msg(text: &str) -> String {
        fails(text).to_string()
    }

    fn file(path: &str, line: usize) -> Origin {
        Origin::File {
            path: path.into(),
            line,
        }
    }

    fn messages(loaded: &Loaded) -> Vec<String> {
        loaded.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn no_files_gives_defaults() {
        let (result, asked) = load_files(None, &root(), &[]);
        let loaded = result.unwrap();
        assert_eq!(loaded.config, Config::defaults(&root()).unwrap());
        assert!(loaded.files_read.is_empty());
        assert!(loaded.warnings.is_empty());
        assert_eq!(asked, [PathBuf::from(MAIN), PathBuf::from(LOCKD)]);
    }

    #[test]
    fn user_reads_no_lockd_conf_by_default() {
        let (result, asked) = load_files(None, &user(), &[]);
        let loaded = result.unwrap();
        assert_eq!(
            asked,
            [PathBuf::from("/home/u/.config/disklock/disklock.conf")]
        );
        assert_eq!(
            loaded.config.file_lockspace_dir,
            Path::new("/home/u/.local/state/disklock/files")
        );
        assert_eq!(loaded.config.lockd_conf, None);
    }

    #[test]
    fn explicit_config_must_exist() {
        let e = load_files(Some("/tmp/nope.conf"), &root(), &[])
            .0
            .unwrap_err();
        match &e {
            ConfError::Io { path, source } => {
                assert_eq!(path, Path::new("/tmp/nope.conf"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "/tmp/nope.conf: cannot read");
    }

    #[test]
    fn explicit_config_replaces_the_default_path() {
        let loaded = ok(
            Some("/srv/d.conf"),
            &root(),
            &[("/srv/d.conf", "auto_disk_leases = 0"), (MAIN, "garbage")],
        );
        assert!(!loaded.config.auto_disk_leases);
        assert_eq!(loaded.files_read, [PathBuf::from("/srv/d.conf")]);
    }

    #[test]
    fn unreadable_config_is_an_error() {
        let e = load_with(None, &root(), |_| {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        })
        .unwrap_err();
        assert!(
            matches!(&e, ConfError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn every_key_can_be_set() {
        let text = "\
file_lockspace_dir = \"/shared/files\"
lvm_lockspace_dir = \"/shared/lvm\"
scsi_lockspace_dir = \"/shared/scsi\"
auto_disk_leases = 0
require_lease_for_disks = 0
key_sources = [ \"path-sha256\", \"lvm-uuid\" ]
disk_lease_dir = \"/shared/sanlock\"
lockd_conf = \"\"
readonly_disk_leases = 0
persistent_reservations = 1
pr_type = \"ea\"
pr_shared_type = \"ea-ar\"
host_key = \"0xABCDEF0123456789\"
host_id = 2000
pr_exclude = [ \"3600a0b80\", \"/dev/sdz\" ]
pr_check_interval = 0
lease_io_threads = \"all\"
lease_check_interval = 3
";
        let (result, asked) = load_files(None, &root(), &[(MAIN, text)]);
        let loaded = result.unwrap();
        let c = &loaded.config;
        assert_eq!(c.file_lockspace_dir, Path::new("/shared/files"));
        assert_eq!(c.lvm_lockspace_dir, Path::new("/shared/lvm"));
        assert_eq!(c.scsi_lockspace_dir, Path::new("/shared/scsi"));
        assert!(!c.auto_disk_leases);
        assert!(!c.require_lease_for_disks);
        assert_eq!(c.key_sources, [KeySource::PathSha256, KeySource::LvmUuid]);
        assert_eq!(c.disk_lease_dir, Path::new("/shared/sanlock"));
        assert_eq!(c.lockd_conf, None);
        assert!(!c.readonly_disk_leases);
        assert!(c.persistent_reservations);
        assert_eq!(c.pr_type, "ea");
        assert_eq!(c.pr_shared_type, "ea-ar");
        assert_eq!(c.host_key, Some(0xabcd_ef01_2345_6789));
        assert_eq!(c.host_id, Some(2000));
        assert_eq!(c.pr_exclude, ["3600a0b80", "/dev/sdz"]);
        assert_eq!(c.pr_check_interval, 0);
        assert_eq!(c.lease_io_threads, "all");
        assert_eq!(c.lease_check_interval, 3);
        // `lockd_conf = ""` stops root's default qemu-lockd.conf from being read.
        assert_eq!(asked, [PathBuf::from(MAIN)]);
        for (i, key) in Key::all().enumerate() {
            assert_eq!(c.origin(key), &file(MAIN, i + 1), "{key}");
        }
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn rendered_config_loads_back() {
        let original = ok(
            None,
            &root(),
            &[(MAIN, "key_sources = ['scsi-wwid']\nauto_disk_leases = 0\n")],
        )
        .config;
        let text = crate::grammar::render(&original.to_entries()).unwrap();
        let again = ok(None, &root(), &[(MAIN, &text), (LOCKD, "")]).config;
        for key in Key::all() {
            assert_eq!(again.value(key), original.value(key), "{key}");
        }
    }

    #[test]
    fn precedence_disklock_over_lockd_over_defaults() {
        let main = "# disklock\nauto_disk_leases = 1\n\nlvm_lockspace_dir = \"/mine/lvm\"\n";
        let lockd = "auto_disk_leases = 0\nlvm_lockspace_dir = \"/lockd/lvm\"\nfile_lockspace_dir = \"/lockd/files\"\n";
        let loaded = ok(None, &root(), &[(MAIN, main), (LOCKD, lockd)]);
        let c = &loaded.config;
        assert!(c.auto_disk_leases);
        assert_eq!(c.origin(Key::AutoDiskLeases), &file(MAIN, 2));
        assert_eq!(c.lvm_lockspace_dir, Path::new("/mine/lvm"));
        assert_eq!(c.origin(Key::LvmLockspaceDir), &file(MAIN, 4));
        assert_eq!(c.file_lockspace_dir, Path::new("/lockd/files"));
        assert_eq!(c.origin(Key::FileLockspaceDir), &file(LOCKD, 3));
        assert_eq!(c.scsi_lockspace_dir, Path::new("/var/lib/disklock/scsi"));
        assert_eq!(c.origin(Key::ScsiLockspaceDir), &Origin::Default);
        // Derived from the winning auto_disk_leases.
        assert!(!c.require_lease_for_disks);
        assert_eq!(c.origin(Key::RequireLeaseForDisks), &Origin::Default);
        assert_eq!(
            loaded.files_read,
            [PathBuf::from(MAIN), PathBuf::from(LOCKD)]
        );
    }

    #[test]
    fn require_lease_follows_auto_disk_leases_unless_set() {
        let lockd_off = ok(None, &root(), &[(LOCKD, "auto_disk_leases = 0")]).config;
        assert!(!lockd_off.auto_disk_leases);
        assert!(lockd_off.require_lease_for_disks);
        let explicit = ok(
            None,
            &root(),
            &[(LOCKD, "auto_disk_leases = 0\nrequire_lease_for_disks = 0")],
        )
        .config;
        assert!(!explicit.require_lease_for_disks);
        assert_eq!(explicit.origin(Key::RequireLeaseForDisks), &file(LOCKD, 2));
        let mixed = ok(
            None,
            &root(),
            &[
                (MAIN, "auto_disk_leases = 0"),
                (LOCKD, "require_lease_for_disks = 0"),
            ],
        )
        .config;
        assert!(!mixed.require_lease_for_disks);
    }

    #[test]
    fn explicit_lockd_conf() {
        let main = "lockd_conf = \"/etc/other/lockd.conf\"";
        let loaded = ok(
            None,
            &user(),
            &[
                ("/home/u/.config/disklock/disklock.conf", main),
                ("/etc/other/lockd.conf", "scsi_lockspace_dir = \"/x/scsi\""),
            ],
        );
        assert_eq!(loaded.config.scsi_lockspace_dir, Path::new("/x/scsi"));
        assert_eq!(
            loaded.config.lockd_conf.as_deref(),
            Some(Path::new("/etc/other/lockd.conf"))
        );
        assert_eq!(loaded.files_read.len(), 2);
    }

    #[test]
    fn missing_explicit_lockd_conf_is_an_error() {
        let e = fails("\n  lockd_conf = \"/etc/libvirt/missing.conf\"");
        assert!(
            matches!(&e, ConfError::LockdConf { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert_eq!(
            e.to_string(),
            "/etc/disklock/disklock.conf:2:16: lockd_conf: cannot read /etc/libvirt/missing.conf"
        );
    }

    #[test]
    fn unreadable_default_lockd_conf_is_an_error() {
        let e = load_with(None, &root(), |p| {
            if p == Path::new(LOCKD) {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "/etc/libvirt/qemu-lockd.conf: cannot read");
    }

    #[test]
    fn errors_in_lockd_conf_name_that_file() {
        let e = load_files(None, &root(), &[(LOCKD, "auto_disk_leases = 'yes'")])
            .0
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/libvirt/qemu-lockd.conf:1:20: auto_disk_leases: expected 0 or 1, found the string \"yes\""
        );
    }

    #[test]
    fn unknown_keys_warn() {
        let main = "auto_disk_leases = 1\n  lock_manager = \"lockd\"\nfuture_key = [ 1 ]\n";
        let lockd = "key_sources = [ \"bogus\" ]\nlockd_conf = \"/loop\"\nmax_clients = 5\nauto_disk_leases = 1\n";
        let loaded = ok(None, &root(), &[(MAIN, main), (LOCKD, lockd)]);
        assert_eq!(
            messages(&loaded),
            [
                "/etc/disklock/disklock.conf:2:3: unknown key \"lock_manager\" ignored",
                "/etc/disklock/disklock.conf:3:1: unknown key \"future_key\" ignored",
                "/etc/libvirt/qemu-lockd.conf:1:1: key \"key_sources\" ignored, it belongs in disklock.conf, not a qemu-lockd.conf",
                "/etc/libvirt/qemu-lockd.conf:2:1: key \"lockd_conf\" ignored, it belongs in disklock.conf, not a qemu-lockd.conf",
                "/etc/libvirt/qemu-lockd.conf:3:1: unknown key \"max_clients\" ignored",
            ]
        );
        // Keys a qemu-lockd.conf may not set are not even checked there.
        assert_eq!(loaded.config.key_sources, KeySource::ALL);
        assert_eq!(loaded.warnings[0].file.as_deref(), Some(Path::new(MAIN)));
        assert_eq!((loaded.warnings[0].line, loaded.warnings[0].col), (2, 3));
    }

    #[test]
    fn first_duplicate_wins() {
        let main = "auto_disk_leases = 0\nkey_sources = ['lvm-uuid']\nauto_disk_leases = 1\nfoo = 1\nfoo = 2\n";
        let loaded = ok(None, &root(), &[(MAIN, main)]);
        assert!(!loaded.config.auto_disk_leases);
        assert_eq!(loaded.config.origin(Key::AutoDiskLeases), &file(MAIN, 1));
        assert_eq!(
            messages(&loaded),
            [
                "/etc/disklock/disklock.conf:3:1: duplicate key \"auto_disk_leases\" ignored, the first one at 1:1 counts",
                "/etc/disklock/disklock.conf:4:1: unknown key \"foo\" ignored",
                "/etc/disklock/disklock.conf:5:1: duplicate key \"foo\" ignored, the first one at 4:1 counts",
            ]
        );
    }

    #[test]
    fn later_duplicate_is_not_checked() {
        // libvirt never looks at the second value, so a bad one there is only a warning.
        let loaded = ok(
            None,
            &root(),
            &[(MAIN, "auto_disk_leases = 1\nauto_disk_leases = 'bad'\n")],
        );
        assert!(loaded.config.auto_disk_leases);
        assert_eq!(loaded.warnings.len(), 1);
    }

    #[test]
    fn boolean_errors() {
        assert_eq!(
            fails_msg("auto_disk_leases = 2"),
            "/etc/disklock/disklock.conf:1:20: auto_disk_leases: expected 0 or 1, found 2"
        );
        assert_eq!(
            fails_msg("\nrequire_lease_for_disks = [1]"),
            "/etc/disklock/disklock.conf:2:27: require_lease_for_disks: expected 0 or 1, found a list"
        );
        match fails("auto_disk_leases = -1") {
            ConfError::Invalid {
                path,
                line,
                col,
                key,
                problem,
            } => {
                assert_eq!(
                    (path.as_path(), line, col, key),
                    (Path::new(MAIN), 1, 20, "auto_disk_leases")
                );
                assert_eq!(
                    problem,
                    Problem::WrongType {
                        expected: "0 or 1",
                        found: FoundValue::Int(-1)
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !ok(None, &root(), &[(MAIN, "auto_disk_leases = +0")])
                .config
                .auto_disk_leases
        );
    }

    #[test]
    fn path_errors() {
        assert_eq!(
            fails_msg("file_lockspace_dir = \"var/lib/x\""),
            "/etc/disklock/disklock.conf:1:22: file_lockspace_dir: expected an absolute path, found \"var/lib/x\""
        );
        assert_eq!(
            fails_msg("scsi_lockspace_dir = \"\""),
            "/etc/disklock/disklock.conf:1:22: scsi_lockspace_dir: expected an absolute path, found \"\""
        );
        assert_eq!(
            fails_msg("disk_lease_dir = 5"),
            "/etc/disklock/disklock.conf:1:18: disk_lease_dir: expected a string with an absolute path, found 5"
        );
        assert_eq!(
            fails_msg("lockd_conf = 'qemu-lockd.conf'"),
            "/etc/disklock/disklock.conf:1:14: lockd_conf: expected an absolute path, found \"qemu-lockd.conf\""
        );
        assert_eq!(
            fails_msg("lockd_conf = 0"),
            "/etc/disklock/disklock.conf:1:14: lockd_conf: expected a string with an absolute path, or \"\", found 0"
        );
    }

    #[test]
    fn reservation_key_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "pr_type = \"we-ar\"",
                "/etc/disklock/disklock.conf:1:11: pr_type: expected one of we-ro, ea-ro, we, ea, found \"we-ar\"",
            ),
            (
                "pr_shared_type = \"we\"",
                "/etc/disklock/disklock.conf:1:18: pr_shared_type: expected one of we-ar, ea-ar, found \"we\"",
            ),
            ("pr_type = 1", "pr_type: expected a string, found 1"),
            (
                "host_key = \"0x0\"",
                "host_key: expected \"0x\" and 1 to 16 hex digits",
            ),
            (
                "host_key = \"0x\"",
                "host_key: expected \"0x\" and 1 to 16 hex digits",
            ),
            (
                "host_key = \"1234\"",
                "host_key: expected \"0x\" and 1 to 16 hex digits",
            ),
            (
                "host_key = \"0x1ffffffffffffffff\"",
                "found the string \"0x1ffffffffffffffff\"",
            ),
            ("host_key = \"0xg\"", "found the string \"0xg\""),
            ("host_key = 7", "host_key: expected a string such as"),
            (
                "host_id = 2001",
                "host_id: expected an integer from 1 to 2000, or 0 for none, found 2001",
            ),
            ("host_id = -1", "found -1"),
            ("host_id = \"1\"", "found the string \"1\""),
            (
                "pr_exclude = [ \"\" ]",
                "pr_exclude: expected a non-empty string, found the string \"\"",
            ),
            ("pr_exclude = [ 1 ]", "expected a non-empty string, found 1"),
            (
                "pr_exclude = \"sda\"",
                "pr_exclude: expected a list of strings",
            ),
            (
                "pr_check_interval = 86401",
                "expected whole seconds from 0 to 86400, found 86401",
            ),
            ("pr_check_interval = -5", "found -5"),
        ];
        for (text, want) in cases {
            let msg = fails_msg(text);
            assert!(msg.contains(want), "{text}: {msg}");
        }
        let c = ok(None, &root(), &[(MAIN, "host_key = \"\"\nhost_id = 0\n")]).config;
        assert_eq!((c.host_key, c.host_id), (None, None));
        let c = ok(None, &root(), &[(MAIN, "host_key = \"0X1\"\n")]).config;
        assert_eq!(c.host_key, Some(1));
    }

    #[test]
    fn key_source_errors() {
        assert_eq!(
            fails_msg("key_sources = [\n  \"lvm-uuid\",\n  \"wwn\",\n]"),
            "/etc/disklock/disklock.conf:3:3: key_sources: unknown key source \"wwn\", expected one of lvm-uuid, scsi-wwid, nvme-wwid, by-path-sha256, path-sha256"
        );
        assert_eq!(
            fails_msg("key_sources = [ 'scsi-wwid', 'lvm-uuid', 'scsi-wwid' ]"),
            "/etc/disklock/disklock.conf:1:42: key_sources: key source \"scsi-wwid\" is listed twice"
        );
        assert_eq!(
            fails_msg("key_sources = [ ]"),
            "/etc/disklock/disklock.conf:1:15: key_sources: the list is empty, at least one key source is needed"
        );
        assert_eq!(
            fails_msg("key_sources = \"lvm-uuid\""),
            "/etc/disklock/disklock.conf:1:15: key_sources: expected a list of key source names, found the string \"lvm-uuid\""
        );
        assert_eq!(
            fails_msg("key_sources = [ \"lvm-uuid\", 7 ]"),
            "/etc/disklock/disklock.conf:1:29: key_sources: expected a key source name, found 7"
        );
        assert_eq!(
            fails_msg("key_sources = [ [\"lvm-uuid\"] ]"),
            "/etc/disklock/disklock.conf:1:17: key_sources: expected a key source name, found a list"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = fails("auto_disk_leases = 1\nfoo bar");
        assert!(matches!(
            e,
            ConfError::Syntax {
                line: 2,
                col: 5,
                kind: ParseErrorKind::ExpectedEquals { .. },
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "/etc/disklock/disklock.conf:2:5: expected '=' after name \"foo\", found 'b'"
        );
    }

    #[test]
    fn crlf_files_load() {
        let loaded = ok(
            None,
            &root(),
            &[(
                MAIN,
                "# windows\r\nauto_disk_leases = 0\r\nkey_sources = [\r\n  'nvme-wwid',\r\n]\r\n",
            )],
        );
        assert!(!loaded.config.auto_disk_leases);
        assert_eq!(loaded.config.key_sources, [KeySource::NvmeWwid]);
        assert_eq!(loaded.config.origin(Key::KeySources), &file(MAIN, 3));
    }

    #[test]
    fn size_limit() {
        let at_limit = format!("auto_disk_leases = 0\n{}", "#".repeat(MAX_FILE_SIZE - 21));
        assert_eq!(at_limit.len(), MAX_FILE_SIZE);
        assert!(
            !ok(None, &root(), &[(MAIN, &at_limit)])
                .config
                .auto_disk_leases
        );
        let over = format!("{at_limit}\n");
        let e = load_files(None, &root(), &[(MAIN, &over)]).0.unwrap_err();
        assert!(matches!(
            e,
            ConfError::TooLarge {
                limit: MAX_FILE_SIZE,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "/etc/disklock/disklock.conf: file is larger than the limit of 1048576 bytes"
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e = load_with(None, &root(), |p| {
            if p == Path::new(MAIN) {
                Ok(b"a = 1\nb = \"\xc3\xa9\xff\"".to_vec())
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/disklock/disklock.conf:2:7: invalid utf-8"
        );
    }

    #[test]
    fn load_str_reads_nothing_else() {
        let loaded = load_str(Path::new("/x.conf"), "auto_disk_leases = 0", &root()).unwrap();
        assert_eq!(loaded.files_read, [PathBuf::from("/x.conf")]);
        assert!(matches!(
            load_str(Path::new("/x.conf"), "lockd_conf = '/y'", &root()),
            Err(ConfError::LockdConf { .. })
        ));
    }

    #[test]
    fn load_reads_real_files() {
        let dir = std::env::temp_dir().join(format!("disklock-conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("disklock.conf");
        let lockd = dir.join("qemu-lockd.conf");
        let big = dir.join("big.conf");
        std::fs::write(
            &main,
            format!(
                "lockd_conf = \"{}\"\nauto_disk_leases = 0\n",
                lockd.display()
            ),
        )
        .unwrap();
        std::fs::write(&lockd, "file_lockspace_dir = \"/nfs/files\"\n").unwrap();
        std::fs::write(&big, vec![b'#'; MAX_FILE_SIZE + 10]).unwrap();

        let loaded = load(Some(&main), &user()).unwrap();
        assert_eq!(loaded.files_read, [main.clone(), lockd.clone()]);
        assert_eq!(loaded.config.file_lockspace_dir, Path::new("/nfs/files"));
        assert!(!loaded.config.auto_disk_leases);
        assert!(matches!(
            load(Some(&big), &user()),
            Err(ConfError::TooLarge { .. })
        ));
        assert!(matches!(
            load(Some(&dir.join("absent.conf")), &user()),
            Err(ConfError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- golden files ----

    const SHIPPED_LOCKD: &str = include_str!("../testdata/qemu-lockd.conf.shipped");
    const CONFIGURED_LOCKD: &str = include_str!("../testdata/qemu-lockd.conf.configured");
    const QEMU_CONF: &str = include_str!("../testdata/qemu.conf.excerpt");
    const EXAMPLE: &str = include_str!("../disklock.conf.example");

    #[test]
    fn golden_shipped_lockd_conf_changes_nothing() {
        assert!(
            crate::grammar::parse(SHIPPED_LOCKD)
                .unwrap()
                .entries
                .is_empty()
        );
        let loaded = ok(None, &root(), &[(LOCKD, SHIPPED_LOCKD)]);
        assert_eq!(loaded.config, Config::defaults(&root()).unwrap());
        assert_eq!(loaded.files_read, [PathBuf::from(LOCKD)]);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn golden_configured_lockd_conf() {
        let loaded = ok(None, &root(), &[(LOCKD, CONFIGURED_LOCKD)]);
        let c = &loaded.config;
        assert!(c.auto_disk_leases);
        assert!(c.require_lease_for_disks);
        assert_eq!(c.origin(Key::RequireLeaseForDisks), &file(LOCKD, 6));
        assert_eq!(
            c.file_lockspace_dir,
            Path::new("/var/lib/libvirt/lockd/files")
        );
        assert_eq!(c.lvm_lockspace_dir, Path::new("/var/lib/libvirt/lockd/lvm"));
        assert_eq!(c.scsi_lockspace_dir, Path::new("/var/lib/disklock/scsi"));
        assert_eq!(
            messages(&loaded),
            [
                "/etc/libvirt/qemu-lockd.conf:12:1: unknown key \"lock_manager\" ignored",
                "/etc/libvirt/qemu-lockd.conf:13:1: unknown key \"cgroup_controllers\" ignored",
            ]
        );
    }

    #[test]
    fn golden_qemu_conf_parses() {
        use crate::grammar::Value;
        let doc = crate::grammar::parse(QEMU_CONF).unwrap();
        let names: Vec<_> = doc.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "vnc_listen",
                "security_driver",
                "security_default_confined",
                "lock_manager",
                "cgroup_controllers",
                "cgroup_device_acl",
                "max_processes",
                "max_files",
                "user",
                "group",
                "namespaces"
            ]
        );
        assert_eq!(
            doc.get("lock_manager").unwrap().value,
            Value::Str("lockd".into())
        );
        assert_eq!(
            doc.get("cgroup_controllers").unwrap().value,
            Value::List(vec![])
        );
        let acl = doc.get("cgroup_device_acl").unwrap();
        assert!(matches!(&acl.value, Value::List(items) if items.len() == 7));
        assert_eq!(acl.item_spans[3], Span { line: 16, col: 5 });
        assert_eq!(doc.get("group").unwrap().value, Value::Str("+107".into()));
        assert_eq!(doc.get("max_files").unwrap().value, Value::Int(32768));
    }

    #[test]
    fn example_file_documents_the_defaults() {
        // As shipped, every key is commented out.
        assert!(crate::grammar::parse(EXAMPLE).unwrap().entries.is_empty());
        // Uncommenting each `#key = value` line must give exactly the defaults, and every key
        // must be there.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        && rest.contains(" = ") =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        // Uncommented, `lockd_conf` names the file explicitly, so it must exist.
        let loaded = ok(None, &root(), &[(MAIN, &uncommented), (LOCKD, "")]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let defaults = Config::defaults(&root()).unwrap();
        for key in Key::all() {
            assert_eq!(loaded.config.value(key), defaults.value(key), "{key}");
            assert!(
                matches!(loaded.config.origin(key), Origin::File { .. }),
                "{key} is not in the example"
            );
        }
    }
}
