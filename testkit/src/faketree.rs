//! Fake sysfs, udev and `/dev` trees for tests and benchmarks.
//!
//! Two ways to build one under a directory that then serves as a [`disklock_naming::SysRoot`]:
//! - [`TreeBuilder`]'s device helpers lay out the same files and relative symlinks the kernel
//!   does (`/sys/dev/block/MAJ:MIN`, `/sys/class/block/NAME`, `device/vpd_pg83`, `dm/uuid`…);
//! - [`TreeBuilder::apply_manifest`] replays a capture of a real machine made by the vm-harness
//!   (`naming/tests/fixtures/*.txt`): `dir P`, `file P BASE64`, `link P TARGET`, `oracle …` and
//!   `#` comment lines, paths relative to `/`.
//!
//! Device nodes need `mknod`, which needs root: [`TreeBuilder::block_node`] says so plainly when
//! it cannot make one.

use std::io;
use std::path::{Component, Path, PathBuf};

use disklock_naming::DevNo;

/// Identity of a real device, for tests: LUN 1 of tgt 1.0.85 (`scsi_id=disklock-lun-0001`,
/// vendor `VMHARN`, product `SANLUN`) as a Debian 6.1 QEMU guest saw it; bytes from
/// `naming/tests/fixtures/guest-capture.txt`.
pub mod captured {
    /// `/sys/block/sda/device/vpd_pg83`: a T10 vendor designator padded with NULs, NAA 3, NAA 6.
    pub const TGT_LUN1_PG83: &[u8] = &[
        0x00, 0x83, 0x00, 0x48, 0x02, 0x01, 0x00, 0x24, b'd', b'i', b's', b'k', b'l', b'o', b'c',
        b'k', b'-', b'l', b'u', b'n', b'-', b'0', b'0', b'0', b'1', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x03, 0x00, 0x08, 0x30, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x01, 0x01, 0x03, 0x00, 0x10, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x00,
        0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];
    /// What `scsi_id --whitelisted --replace-whitespace` printed for it.
    pub const TGT_LUN1_WWID: &str = "3600000000000000d00000c0000000001";
    /// LVM LV observed in the same kind of guest: `lvs -o uuid` and `dm/uuid`
    /// (shared/reference/test-rig.md §7.6).
    pub const LV_UUID: &str = "1olaZY-bYgK-b38B-Knxc-5Mbw-eh5D-DeEMyO";
    /// The DM uuid of [`LV_UUID`].
    pub const LV_DM_UUID: &str =
        "LVM-9xS5S9GnwIHdBe1Vj4n9Vpff2QYWefeP1olaZYbYgKb38BKnxc5Mbweh5DDeEMyO";
}

/// Builds files under a root directory. Inner paths are absolute (`/sys/block/sda`).
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    root: PathBuf,
}

/// An `oracle` line of a capture: what a real tool printed for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oracle {
    /// The tool (`scsi_id`, `lvs`, `wwid`).
    pub tool: String,
    /// The device path it was run on.
    pub device: String,
    /// What it printed (trimmed); empty when it printed nothing.
    pub output: String,
}

/// A malformed capture line.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The line does not fit the format.
    #[error("line {line}: {why}")]
    Bad {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Writing the tree failed.
    #[error("line {line}: writing {}", path.display())]
    Io {
        /// 1-based line number.
        line: usize,
        /// The real path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl TreeBuilder {
    /// A builder writing below `root` (which should exist and be empty).
    pub fn new(root: impl Into<PathBuf>) -> TreeBuilder {
        TreeBuilder { root: root.into() }
    }

    /// The real path of an inner path.
    pub fn real(&self, inner: &str) -> PathBuf {
        self.root.join(inner.trim_start_matches('/'))
    }

    /// Creates a directory and its parents.
    pub fn dir(&self, inner: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.real(inner))
    }

    /// Writes a file, creating parents.
    pub fn file(&self, inner: &str, bytes: &[u8]) -> io::Result<()> {
        let p = self.real(inner);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, bytes)
    }

    /// Makes a symlink at `inner` with `target` verbatim, creating parents.
    pub fn link(&self, inner: &str, target: &str) -> io::Result<()> {
        let p = self.real(inner);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::os::unix::fs::symlink(target, p)
    }

    /// Makes a symlink at `inner` pointing at inner path `to` by a relative target, as sysfs
    /// and udev do.
    pub fn rel_link(&self, inner: &str, to: &str) -> io::Result<()> {
        self.link(inner, &relative(inner, to))
    }

    /// Makes a block device node (needs root: `mknod`).
    pub fn block_node(&self, inner: &str, devno: DevNo) -> io::Result<()> {
        let p = self.real(inner);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        mknod(&p, libc::S_IFBLK, devno)
    }

    /// Makes a character device node (needs root).
    pub fn char_node(&self, inner: &str, devno: DevNo) -> io::Result<()> {
        let p = self.real(inner);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        mknod(&p, libc::S_IFCHR, devno)
    }

    /// A block device's sysfs directory `dir` (inner), with `dev` and the three links to it.
    /// Partitions (`parent` set) are linked from `/sys/class/block` only, like the kernel.
    fn block_dir(&self, dir: &str, name: &str, devno: DevNo, whole: bool) -> io::Result<()> {
        self.file(&format!("{dir}/dev"), format!("{devno}\n").as_bytes())?;
        self.rel_link(&format!("/sys/dev/block/{devno}"), dir)?;
        self.rel_link(&format!("/sys/class/block/{name}"), dir)?;
        if whole {
            self.rel_link(&format!("/sys/block/{name}"), dir)?;
        }
        Ok(())
    }

    /// A SCSI disk at H:C:T:L behind a virtio-scsi controller, with optional VPD pages and the
    /// INQUIRY vendor/model as sysfs pads them. Returns the inner sysfs directory.
    #[allow(clippy::too_many_arguments)]
    pub fn scsi_disk(
        &self,
        name: &str,
        devno: DevNo,
        hctl: (u32, u32, u32, u32),
        pg83: Option<&[u8]>,
        pg80: Option<&[u8]>,
        vendor: &str,
        model: &str,
    ) -> io::Result<String> {
        let (h, c, t, l) = hctl;
        let sdev = format!(
            "/sys/devices/pci0000:00/0000:00:02.0/virtio0/host{h}/target{h}:{c}:{t}/{h}:{c}:{t}:{l}"
        );
        let dir = format!("{sdev}/block/{name}");
        self.block_dir(&dir, name, devno, true)?;
        self.rel_link(&format!("{dir}/device"), &sdev)?;
        self.rel_link(&format!("{sdev}/subsystem"), "/sys/bus/scsi")?;
        self.dir("/sys/bus/scsi")?;
        self.file(&format!("{sdev}/type"), b"0\n")?;
        self.file(
            &format!("{sdev}/vendor"),
            format!("{vendor:<8}\n").as_bytes(),
        )?;
        self.file(
            &format!("{sdev}/model"),
            format!("{model:<16}\n").as_bytes(),
        )?;
        if let Some(p) = pg83 {
            self.file(&format!("{sdev}/vpd_pg83"), p)?;
        }
        if let Some(p) = pg80 {
            self.file(&format!("{sdev}/vpd_pg80"), p)?;
        }
        Ok(dir)
    }

    /// Partition `n` of the whole device whose inner sysfs directory is `parent_dir`.
    pub fn partition(
        &self,
        parent_dir: &str,
        name: &str,
        devno: DevNo,
        n: u32,
    ) -> io::Result<String> {
        let dir = format!("{parent_dir}/{name}");
        self.block_dir(&dir, name, devno, false)?;
        self.file(&format!("{dir}/partition"), format!("{n}\n").as_bytes())?;
        Ok(dir)
    }

    /// A device-mapper device `dm-N` with its name, uuid and slaves (kernel names).
    pub fn dm(
        &self,
        name: &str,
        devno: DevNo,
        dm_name: &str,
        uuid: &str,
        slaves: &[&str],
    ) -> io::Result<String> {
        let dir = format!("/sys/devices/virtual/block/{name}");
        self.block_dir(&dir, name, devno, true)?;
        self.file(&format!("{dir}/dm/name"), format!("{dm_name}\n").as_bytes())?;
        self.file(&format!("{dir}/dm/uuid"), format!("{uuid}\n").as_bytes())?;
        self.dir(&format!("{dir}/slaves"))?;
        for s in slaves {
            self.rel_link(
                &format!("{dir}/slaves/{s}"),
                &format!("/sys/class/block/{s}"),
            )?;
        }
        Ok(dir)
    }

    /// An NVMe namespace with its `wwid` attribute.
    pub fn nvme(&self, name: &str, devno: DevNo, wwid: &str) -> io::Result<String> {
        let ctrl = name.split('n').take(2).collect::<Vec<_>>().join("n");
        let dir = format!("/sys/devices/pci0000:00/0000:00:04.0/nvme/{ctrl}/{name}");
        self.block_dir(&dir, name, devno, true)?;
        self.file(&format!("{dir}/wwid"), format!("{wwid}\n").as_bytes())?;
        Ok(dir)
    }

    /// A virtio-blk disk: no VPD, no wwid.
    pub fn virtio(&self, name: &str, devno: DevNo) -> io::Result<String> {
        let dir = format!("/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/{name}");
        self.block_dir(&dir, name, devno, true)?;
        self.rel_link(
            &format!("{dir}/device"),
            "/sys/devices/pci0000:00/0000:00:05.0/virtio2",
        )?;
        Ok(dir)
    }

    /// A udev database record for `devno`.
    pub fn udev_db(&self, devno: DevNo, text: &str) -> io::Result<()> {
        self.file(&format!("/run/udev/data/b{devno}"), text.as_bytes())
    }

    /// A `/dev/disk/by-path/NAME` link to `/dev/KERNEL`.
    pub fn by_path(&self, name: &str, kernel: &str) -> io::Result<()> {
        self.rel_link(
            &format!("/dev/disk/by-path/{name}"),
            &format!("/dev/{kernel}"),
        )
    }

    /// Replays a capture manifest; returns its oracle lines.
    pub fn apply_manifest(&self, text: &str) -> Result<Vec<Oracle>, ManifestError> {
        let mut oracles = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |why: &str| ManifestError::Bad {
                line,
                why: why.to_owned(),
            };
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let (kind, rest) = raw.split_once(' ').ok_or_else(|| bad("no space"))?;
            let io_err = |path: PathBuf| move |source| ManifestError::Io { line, path, source };
            match kind {
                "dir" => {
                    let p = inner_path(rest).ok_or_else(|| bad("unsafe path"))?;
                    self.dir(&p).map_err(io_err(self.real(&p)))?;
                }
                "file" => {
                    let (p, b64) = rest.split_once(' ').unwrap_or((rest, ""));
                    let p = inner_path(p).ok_or_else(|| bad("unsafe path"))?;
                    let bytes = base64_decode(b64).ok_or_else(|| bad("bad base64"))?;
                    self.file(&p, &bytes).map_err(io_err(self.real(&p)))?;
                }
                "link" => {
                    let (p, target) = rest.split_once(' ').ok_or_else(|| bad("no target"))?;
                    let p = inner_path(p).ok_or_else(|| bad("unsafe path"))?;
                    match self.link(&p, target) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        r => r.map_err(io_err(self.real(&p)))?,
                    }
                }
                "oracle" => {
                    let mut it = rest.splitn(3, ' ');
                    let tool = it.next().unwrap_or_default().to_owned();
                    let device = it.next().ok_or_else(|| bad("oracle without device"))?;
                    oracles.push(Oracle {
                        tool,
                        device: device.to_owned(),
                        output: it.next().unwrap_or("").trim().to_owned(),
                    });
                }
                _ => return Err(bad("unknown record kind")),
            }
        }
        Ok(oracles)
    }
}

/// A manifest path as an inner path, refusing `..` so a capture cannot write outside the root.
fn inner_path(p: &str) -> Option<String> {
    let path = Path::new(p);
    if p.is_empty() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    Some(format!("/{}", p.trim_start_matches('/')))
}

/// The relative symlink target from the link at inner path `from` to inner path `to`.
pub fn relative(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = from.trim_matches('/').split('/').collect();
    let from_dir = &from_dir[..from_dir.len().saturating_sub(1)];
    let to: Vec<&str> = to.trim_matches('/').split('/').collect();
    let common = from_dir.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from_dir.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

fn mknod(p: &Path, kind: libc::mode_t, devno: DevNo) -> io::Result<()> {
    let dev = libc::makedev(devno.major, devno.minor);
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::from_bits_truncate(kind),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mknod {} failed ({e}); device nodes need root", p.display()),
        )
    })
}

/// Standard base64 (RFC 4648, padding optional); `None` on anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
        }
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn relative_targets_match_sysfs() {
        assert_eq!(
            relative("/sys/dev/block/8:0", "/sys/devices/pci0000:00/x/block/sda"),
            "../../devices/pci0000:00/x/block/sda"
        );
        assert_eq!(
            relative("/sys/block/sda", "/sys/devices/x/block/sda"),
            "../devices/x/block/sda"
        );
        assert_eq!(relative("/dev/disk/by-path/p", "/dev/sda"), "../../sda");
    }

    #[test]
    fn manifest_refuses_escapes() {
        let t = tempfile::tempdir().unwrap();
        let b = TreeBuilder::new(t.path());
        assert!(b.apply_manifest("file ../x Zm9v\n").is_err());
        assert!(b.apply_manifest("frob x\n").is_err());
        let o = b
            .apply_manifest(
                "# c\ndir sys/x\nfile sys/x/a Zm9v\nlink sys/y x\noracle scsi_id /dev/sda 36000\n",
            )
            .unwrap();
        assert_eq!(std::fs::read(t.path().join("sys/y/a")).unwrap(), b"foo");
        assert_eq!(o[0].output, "36000");
    }
}
