//! The configuration and resolver every command starts from.

use std::path::PathBuf;

use anyhow::Context as _;
use disklock_conf::{Config, Context, KeySource, Loaded};
use disklock_naming::{LockspaceKind, Resolver, Source, SysRoot};
use disklock_scsi::pr::PrType;

/// How long a client waits for the daemon unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a command needs: the checked configuration and a resolver built from it.
pub struct Settings {
    pub config: Config,
    pub resolver: Resolver,
    pub cwd: PathBuf,
    /// The configuration files that were read, disklock.conf first.
    pub files_read: Vec<PathBuf>,
    /// The daemon's socket: `--socket`, else the default for this user (`None` for a user
    /// without XDG_RUNTIME_DIR).
    pub socket: Option<PathBuf>,
    /// How long a client waits for the daemon (`--timeout`): to connect, to send, to reply.
    pub timeout: std::time::Duration,
    /// `pr_type`, parsed: the reservation type of an exclusive disk.
    pub pr_exclusive: PrType,
    /// `pr_shared_type`, parsed: the reservation type a shared disk joins.
    pub pr_shared: PrType,
    /// `lease_io_threads = "all"`: every lockspace's lease I/O runs on threads of its own
    /// (else only that of lockspaces not on a local file system).
    pub lease_io_all: bool,
}

impl Settings {
    /// [`Settings::load`] for programs without the CLI's arguments (the rig's benchmark): a
    /// configuration file (default: the usual search), a sysfs/dev root (default: this
    /// host) and a socket (default: this user's); clients wait [`DEFAULT_TIMEOUT`].
    pub fn load_from(
        config_file: Option<&std::path::Path>,
        sysroot: Option<&std::path::Path>,
        socket: Option<PathBuf>,
    ) -> anyhow::Result<Settings> {
        let ctx = Context {
            uid: nix::unistd::geteuid().as_raw(),
            home: env_path("HOME"),
            xdg_state_home: env_path("XDG_STATE_HOME"),
            xdg_config_home: env_path("XDG_CONFIG_HOME"),
        };
        let Loaded {
            config,
            warnings,
            files_read,
        } = disklock_conf::load(config_file, &ctx).context("cannot load the configuration")?;
        for w in &warnings {
            eprintln!("disklock: warning: {w}");
        }
        tracing::debug!(files = ?files_read, "configuration loaded");
        let order: Vec<Source> = config.key_sources.iter().map(|&k| source_of(k)).collect();
        let root = match sysroot {
            Some(dir) => {
                if !dir.is_dir() {
                    anyhow::bail!("--sysroot {}: not a directory", dir.display());
                }
                SysRoot::new(dir)
            }
            None => SysRoot::host(),
        };
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let socket = socket.or_else(|| default_socket(ctx.uid, env_path("XDG_RUNTIME_DIR")));
        let pr_type = |name: &str, text: &str| -> anyhow::Result<PrType> {
            text.parse()
                .map_err(|e| anyhow::anyhow!("{name} = {text:?}: {e}"))
        };
        let pr_exclusive = pr_type("pr_type", &config.pr_type)?;
        let pr_shared = pr_type("pr_shared_type", &config.pr_shared_type)?;
        let lease_io_all = lease_io_all(&config.lease_io_threads)?;
        Ok(Settings {
            lease_io_all,
            pr_exclusive,
            pr_shared,
            resolver: Resolver::new(root, &order),
            config,
            cwd,
            files_read,
            socket,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The daemon's socket, or why there is none.
    pub fn socket(&self) -> anyhow::Result<&std::path::Path> {
        self.socket.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no daemon socket: XDG_RUNTIME_DIR is not set; pass --socket PATH")
        })
    }

    /// The lockspace directory that holds leases named by `kind`.
    pub fn lockspace(&self, kind: LockspaceKind) -> &std::path::Path {
        match kind {
            LockspaceKind::File => &self.config.file_lockspace_dir,
            LockspaceKind::Lvm => &self.config.lvm_lockspace_dir,
            LockspaceKind::Scsi => &self.config.scsi_lockspace_dir,
        }
    }
}

/// `lease_io_threads`, parsed: whether every lockspace gets lease I/O threads.
fn lease_io_all(text: &str) -> anyhow::Result<bool> {
    match text {
        "auto" => Ok(false),
        "all" => Ok(true),
        other => anyhow::bail!("lease_io_threads = {other:?}: expected \"auto\" or \"all\""),
    }
}

/// The configuration names the sources; the resolver owns their meaning.
fn source_of(k: KeySource) -> Source {
    match k {
        KeySource::LvmUuid => Source::LvmUuid,
        KeySource::ScsiWwid => Source::ScsiWwid,
        KeySource::NvmeWwid => Source::NvmeWwid,
        KeySource::ByPathSha256 => Source::ByPathSha256,
        KeySource::PathSha256 => Source::PathSha256,
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The socket a daemon listens on when none is named: `/run/disklock/disklock.sock` for
/// root, `$XDG_RUNTIME_DIR/disklock/disklock.sock` for other users.
pub fn default_socket(uid: u32, xdg_runtime_dir: Option<PathBuf>) -> Option<PathBuf> {
    if uid == 0 {
        return Some(PathBuf::from("/run/disklock/disklock.sock"));
    }
    xdg_runtime_dir
        .filter(|d| d.is_absolute())
        .map(|d| d.join("disklock").join("disklock.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_defaults() {
        assert_eq!(
            default_socket(0, Some("/run/user/0".into())),
            Some(PathBuf::from("/run/disklock/disklock.sock"))
        );
        assert_eq!(
            default_socket(1000, Some("/run/user/1000".into())),
            Some(PathBuf::from("/run/user/1000/disklock/disklock.sock"))
        );
        assert_eq!(default_socket(1000, Some("relative".into())), None);
        assert_eq!(default_socket(1000, None), None);
    }

    /// Every `lease_io_threads` value the configuration accepts parses; nothing else does.
    #[test]
    fn every_lease_io_value_conf_accepts_parses() {
        let parsed: Vec<bool> = disklock_conf::LEASE_IO_THREADS
            .iter()
            .map(|v| lease_io_all(v).unwrap_or_else(|e| panic!("{v}: {e}")))
            .collect();
        assert_eq!(parsed, [false, true]);
        assert!(lease_io_all("some").is_err());
    }

    /// Every reservation type name the configuration accepts parses, into the family its
    /// key promises: exclusive types are single-holder, shared types all-registrants.
    #[test]
    fn every_type_name_conf_accepts_parses() {
        for name in disklock_conf::PR_TYPES {
            let t: PrType = name
                .parse()
                .unwrap_or_else(|e| panic!("pr_type {name}: {e}"));
            assert!(!t.all_registrants(), "{name}");
            assert_eq!(t.short(), *name);
        }
        for name in disklock_conf::PR_SHARED_TYPES {
            let t: PrType = name
                .parse()
                .unwrap_or_else(|e| panic!("pr_shared_type {name}: {e}"));
            assert!(t.all_registrants(), "{name}");
            assert_eq!(t.short(), *name);
        }
    }
}
