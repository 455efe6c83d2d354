//! The guest image (kernel + base initramfs), built once and cached by content, and the
//! small per-run overlay archive that carries the freshly built `disklock`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cpio;
use crate::error::{Error, IoContext, Result};
use crate::process::tail;

/// The image build script (bash), embedded so the cache key covers it.
pub const BUILD_SCRIPT: &str = include_str!("../guest/build-image.sh");
/// The guest `/init` (busybox ash), embedded for the same reason.
pub const GUEST_INIT: &str = include_str!("../guest/init");

/// Default cache directory when `DISKLOCK_VM_CACHE` is unset.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/disklock-vm";

/// Bumped when the layout of a cache entry changes.
const CACHE_FORMAT: &str = "disklock-vm-image 1";
const READY_FILE: &str = "READY";

/// A built guest image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The cache entry, `<cache>/image-<key>`.
    pub dir: PathBuf,
    /// Uncompressed ELF kernel (booted through its PVH entry point).
    pub vmlinux: PathBuf,
    /// Uncompressed newc cpio with the root file system.
    pub base_cpio: PathBuf,
    /// The guest kernel's release string, e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
    /// Content hash naming the entry (16 hex digits).
    pub key: String,
}

/// Whether [`Image::ensure`] found the image or had to build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// A cached entry with the same key existed.
    Reused,
    /// Built now; the build took this long.
    Built(Duration),
    /// Named by `DISKLOCK_VM_IMAGE`; not checked against the inputs.
    FromEnv,
}

/// `$DISKLOCK_VM_CACHE`, or [`DEFAULT_CACHE_DIR`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("DISKLOCK_VM_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from)
}

/// Cache key: hash of the build inputs (package versions and resolved libraries, as the
/// build script prints them), the build script and the guest init.
pub fn cache_key(inputs: &str, script: &str, init: &str) -> String {
    let mut h = Sha256::new();
    for part in [CACHE_FORMAT, inputs, script, init] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())[..16].to_owned()
}

fn write_scripts(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("build-image.sh");
    let init = dir.join("init");
    fs::write(&script, BUILD_SCRIPT).io_context(|| format!("writing {}", script.display()))?;
    fs::write(&init, GUEST_INIT).io_context(|| format!("writing {}", init.display()))?;
    Ok((script, init))
}

impl Image {
    /// Open a finished cache entry.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(READY_FILE).is_file() {
            return Err(Error::Config(format!(
                "{} is not a finished guest image (no {READY_FILE})",
                dir.display()
            )));
        }
        let kernel_release = fs::read_to_string(dir.join("kernel-release"))
            .io_context(|| format!("reading kernel-release in {}", dir.display()))?
            .trim()
            .to_owned();
        let key = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("image-"))
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            dir: dir.to_owned(),
            vmlinux: dir.join("vmlinux"),
            base_cpio: dir.join("base.cpio"),
            kernel_release,
            key,
        })
    }

    /// The image named by `DISKLOCK_VM_IMAGE` if set, else [`Image::ensure`] in
    /// [`cache_dir`]. The result is memoised for the process.
    pub fn get() -> Result<(Self, Provenance)> {
        use std::sync::Mutex;
        static MEMO: Mutex<Option<Image>> = Mutex::new(None);
        let mut memo = MEMO.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(img) = memo.as_ref() {
            return Ok((img.clone(), Provenance::Reused));
        }
        let got = match std::env::var_os("DISKLOCK_VM_IMAGE").filter(|v| !v.is_empty()) {
            Some(dir) => (Self::open(Path::new(&dir))?, Provenance::FromEnv),
            None => Self::ensure(&cache_dir())?,
        };
        *memo = Some(got.0.clone());
        Ok(got)
    }

    /// Build the image into `cache` unless an entry with the same key exists.
    ///
    /// Concurrent callers serialise on a lock file; the entry appears atomically
    /// (built under a temporary name, then renamed).
    pub fn ensure(cache: &Path) -> Result<(Self, Provenance)> {
        fs::create_dir_all(cache).io_context(|| format!("creating {}", cache.display()))?;
        let scratch = cache.join(format!("scripts-{}", std::process::id()));
        let (script, init) = write_scripts(&scratch)?;
        let result = Self::ensure_with(cache, &script, &init);
        let _ = fs::remove_dir_all(&scratch);
        result
    }

    fn ensure_with(cache: &Path, script: &Path, init: &Path) -> Result<(Self, Provenance)> {
        let script_s = script.to_string_lossy();
        let inputs = crate::process::run_tool("bash", &[&script_s, "inputs"])?;
        let key = cache_key(&inputs, BUILD_SCRIPT, GUEST_INIT);
        let dir = cache.join(format!("image-{key}"));
        if dir.join(READY_FILE).is_file() {
            mark_used(&dir);
            return Ok((Self::open(&dir)?, Provenance::Reused));
        }
        let lock_path = cache.join("build.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .io_context(|| format!("opening {}", lock_path.display()))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io {
                context: format!("locking {}", lock_path.display()),
                source: e.into(),
            })?;
        if dir.join(READY_FILE).is_file() {
            return Ok((Self::open(&dir)?, Provenance::Reused));
        }
        let started = Instant::now();
        let tmp = cache.join(format!("image-{key}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).io_context(|| format!("removing {}", tmp.display()))?;
        }
        let log = cache.join(format!("image-{key}.log"));
        let log_file =
            fs::File::create(&log).io_context(|| format!("creating {}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .io_context(|| "duplicating log fd".into())?;
        let status = Command::new("bash")
            .arg(script)
            .arg("build")
            .arg(&tmp)
            .arg(init)
            .arg(cache.join("debs"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .status()
            .io_context(|| "running the image build script".into())?;
        if !status.success() {
            return Err(Error::ImageBuild {
                tail: tail(&log, 25),
                log,
            });
        }
        fs::write(tmp.join(READY_FILE), format!("{key}\n"))
            .io_context(|| format!("finishing {}", tmp.display()))?;
        let _ = fs::rename(&log, tmp.join("build.log"));
        fs::rename(&tmp, &dir)
            .io_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        // Drop entries of other keys: they were built from inputs that no longer hold,
        // unless one was used recently (another checkout on this machine, e.g. a test run
        // of an older tree, may still be using it).
        if let Ok(entries) = fs::read_dir(cache) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("image-") && e.path() != dir && !used_recently(&e.path()) {
                    let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
                }
            }
        }
        Ok((Self::open(&dir)?, Provenance::Built(started.elapsed())))
    }

    /// Paths in the base archive (from `contents.txt`, without the leading `./`).
    pub fn contents(&self) -> Result<BTreeSet<String>> {
        let p = self.dir.join("contents.txt");
        let text = fs::read_to_string(&p).io_context(|| format!("reading {}", p.display()))?;
        Ok(text
            .lines()
            .map(|l| l.trim_start_matches("./").to_owned())
            .collect())
    }
}

/// How long an image entry of another key survives its last use.
const KEEP_UNUSED: Duration = Duration::from_secs(6 * 3600);

/// Record a use of a cache entry (the READY file's modification time).
fn mark_used(dir: &Path) {
    if let Ok(f) = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(READY_FILE))
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Whether a finished cache entry was used within [`KEEP_UNUSED`].
fn used_recently(dir: &Path) -> bool {
    fs::metadata(dir.join(READY_FILE))
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < KEEP_UNUSED))
}

/// The program's bytes with its DWARF sections removed (`objcopy --strip-debug`); the
/// program as it is when objcopy is missing or fails (it is not an ELF file, say).
fn without_debug_info(program: &Path) -> Result<Vec<u8>> {
    let out = std::env::temp_dir().join(format!(
        "disklock-vm-stripped-{}-{}",
        std::process::id(),
        program
            .file_name()
            .map_or_else(|| "program".into(), |n| n.to_string_lossy())
    ));
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(program)
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let body = if stripped {
        fs::read(&out).io_context(|| format!("reading {}", out.display()))
    } else {
        fs::read(program).io_context(|| format!("reading {}", program.display()))
    };
    let _ = fs::remove_file(&out);
    body
}

/// Shared libraries an ELF program needs, per `ldd` (empty for a static program).
pub fn needed_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .stdin(Stdio::null())
        .output()
        .io_context(|| format!("running ldd on {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(Error::Tool {
            command: format!("ldd {}", program.display()),
            status: out.status.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    parse_ldd(&text).map_err(|m| Error::Tool {
        command: format!("ldd {}", program.display()),
        status: "unresolved library".into(),
        detail: m,
    })
}

/// Parse `ldd` output into library paths; an unresolved library is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            if rest.starts_with("not found") {
                return Err(format!("{name} not found"));
            }
            if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(path));
            }
        } else if line.starts_with('/') {
            // the dynamic loader, "/lib64/ld-linux-x86-64.so.2 (0x...)"
            if let Some(path) = line.split_whitespace().next() {
                libs.push(PathBuf::from(path));
            }
        }
        // "linux-vdso.so.1 (0x...)": provided by the kernel
    }
    Ok(libs)
}

/// Where a library goes in the guest's usrmerge layout (as the base image does it).
fn guest_lib_path(lib: &Path) -> String {
    let name = lib
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("ld-linux") {
        format!("usr/lib64/{name}")
    } else {
        format!("usr/lib/x86_64-linux-gnu/{name}")
    }
}

/// Files appended to the base initramfs for one rig: the `disklock` binary and its
/// libraries, test data, scripts.
#[derive(Debug)]
pub struct Overlay {
    archive: cpio::Archive,
    base: BTreeSet<String>,
    added: BTreeSet<String>,
}

impl Overlay {
    /// An empty overlay for `image` (libraries it already has are not added again).
    pub fn new(image: &Image) -> Result<Self> {
        Ok(Self {
            archive: cpio::Archive::new(),
            base: image.contents()?,
            added: BTreeSet::new(),
        })
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
    }

    /// Add a file with the given content and permission bits.
    pub fn add_bytes(&mut self, guest_path: &str, perm: u32, body: &[u8]) {
        let p = guest_path.trim_start_matches('/').to_owned();
        self.archive.file(&p, perm, body);
        self.added.insert(p);
    }

    /// Add a host program, without its debug information, and the shared libraries `ldd`
    /// says it needs (those the base image lacks).
    ///
    /// A debug build of disklock is about 70 MB, most of it DWARF; in a guest whose root file
    /// system lives in half of its 384 MiB of RAM that leaves too little room (multipath could
    /// not write its bindings file). `objcopy --strip-debug` keeps the symbols, so backtraces
    /// still name functions.
    pub fn add_program(&mut self, host_path: &Path, guest_path: &str) -> Result<()> {
        let body = without_debug_info(host_path)?;
        self.add_bytes(guest_path, 0o755, &body);
        for lib in needed_libraries(host_path)? {
            let dest = guest_lib_path(&lib);
            if self.base.contains(&dest) || self.added.contains(&dest) {
                continue;
            }
            let body = fs::read(&lib).io_context(|| format!("reading {}", lib.display()))?;
            self.add_bytes(&dest, 0o755, &body);
        }
        Ok(())
    }

    /// Paths added so far.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.added.iter().map(String::as_str)
    }

    /// Write `base` followed by this archive to `out` (the kernel unpacks both).
    pub fn write_initrd(self, base: &Path, out: &Path) -> Result<()> {
        fs::copy(base, out)
            .io_context(|| format!("copying {} to {}", base.display(), out.display()))?;
        if self.added.is_empty() {
            return Ok(());
        }
        let data = self.archive.finish();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(out)
            .io_context(|| format!("opening {}", out.display()))?;
        // the base archive ends 512-byte aligned (GNU cpio); newc needs 4
        f.write_all(&data)
            .io_context(|| format!("appending to {}", out.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_input() {
        let k = cache_key("a", "b", "c");
        assert_eq!(k.len(), 16);
        assert_eq!(k, cache_key("a", "b", "c"));
        assert_ne!(k, cache_key("a2", "b", "c"));
        assert_ne!(k, cache_key("a", "b2", "c"));
        assert_ne!(k, cache_key("a", "b", "c2"));
        // no ambiguity from concatenation
        assert_ne!(cache_key("ab", "", "c"), cache_key("a", "b", "c"));
    }

    #[test]
    fn entries_in_use_survive_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join(READY_FILE);
        assert!(!used_recently(dir.path()), "no READY: not an entry in use");
        fs::write(&ready, "k\n").unwrap();
        let old = std::time::SystemTime::now() - KEEP_UNUSED - Duration::from_secs(60);
        fs::File::options()
            .append(true)
            .open(&ready)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!used_recently(dir.path()));
        mark_used(dir.path());
        assert!(used_recently(dir.path()));
    }

    #[test]
    fn programs_lose_their_debug_information() {
        // This test binary is a debug build: stripping must shrink it and keep it an ELF.
        let me = std::env::current_exe().unwrap();
        let full = fs::metadata(&me).unwrap().len();
        let body = without_debug_info(&me).unwrap();
        assert!(body.starts_with(b"\x7fELF"));
        assert!(
            (body.len() as u64) < full / 2,
            "{} of {full} bytes",
            body.len()
        );
        // Not an ELF file: kept as it is.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(without_debug_info(&script).unwrap(), b"#!/bin/sh\n");
    }

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libudev.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            guest_lib_path(&libs[0]),
            "usr/lib/x86_64-linux-gnu/libudev.so.1"
        );
        assert_eq!(guest_lib_path(&libs[2]), "usr/lib64/ld-linux-x86-64.so.2");
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn ldd_of_a_real_program() {
        let libs = needed_libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }

    #[test]
    fn overlay_is_appended_after_base() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("contents.txt"),
            "./usr\n./usr/lib64/ld-linux-x86-64.so.2\n",
        )
        .unwrap();
        fs::write(dir.path().join("base.cpio"), vec![0u8; 512]).unwrap();
        let img = Image {
            dir: dir.path().to_owned(),
            vmlinux: dir.path().join("vmlinux"),
            base_cpio: dir.path().join("base.cpio"),
            kernel_release: "k".into(),
            key: "0".into(),
        };
        let mut ov = Overlay::new(&img).unwrap();
        assert!(ov.is_empty());
        ov.add_program(Path::new("/bin/sh"), "usr/local/bin/sh2")
            .unwrap();
        let paths: Vec<&str> = ov.paths().collect();
        assert!(paths.contains(&"usr/local/bin/sh2"));
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        assert!(
            !paths.contains(&"usr/lib64/ld-linux-x86-64.so.2"),
            "base has the loader"
        );
        let out = dir.path().join("initrd");
        ov.write_initrd(&img.base_cpio, &out).unwrap();
        let data = fs::read(&out).unwrap();
        assert!(data[..512].iter().all(|&b| b == 0));
        assert_eq!(&data[512..518], b"070701");
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
