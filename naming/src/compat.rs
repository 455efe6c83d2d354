//! The lease names other lock managers would use for the same disk.
//!
//! **virtlockd** (libvirt's `lockd` plugin, `lock_driver_lockd.c`) picks one name per disk path
//! in a fixed order: when the path starts with `/dev` and `lvm_lockspace_dir` is set, the LV UUID
//! that `lvs` prints (if the path is an LV); else, when the path starts with `/dev` and
//! `scsi_lockspace_dir` is set, the WWID `scsi_id` prints (if the device answers SG_IO); else,
//! when `file_lockspace_dir` is set, the SHA-256 of the path string **exactly as written**
//! (no symlink resolution); else the path itself in the "direct" lockspace (the lock is taken on
//! the node). disklock reproduces the `lvs` and `scsi_id` answers from sysfs: `scsi_id` on a
//! partition reports the whole disk's WWID, and on a device-mapper device with one underlying
//! device it reports that device's (dm passes SG_IO through), so virtlockd gives every LV of a
//! single-PV volume group the *same* scsi name. disklock's own keys avoid both traps.
//!
//! **libvirt's sanlock plugin** names a disk's lease by the MD5 of the path string as written,
//! in `disk_lease_dir`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::key::{md5_hex, sha256_hex};
use crate::resolve::{ResolveError, Resolver};

/// The lockspace directories of a `qemu-lockd.conf`; `None` means unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct LockdDirs<'a> {
    /// `file_lockspace_dir`.
    pub file: Option<&'a Path>,
    /// `lvm_lockspace_dir`.
    pub lvm: Option<&'a Path>,
    /// `scsi_lockspace_dir`.
    pub scsi: Option<&'a Path>,
}

/// How a compatibility name was derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompatSource {
    /// virtlockd's `lvs -o uuid` answer.
    LvmUuid,
    /// virtlockd's `scsi_id` answer.
    ScsiWwid,
    /// SHA-256 of the literal path (virtlockd's file lockspace).
    LiteralSha256,
    /// The literal path in virtlockd's direct lockspace.
    Direct,
    /// MD5 of the literal path (libvirt's sanlock plugin).
    LiteralMd5,
}

/// A lease name in another lock manager's scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatName {
    /// The resource name.
    pub key: String,
    /// How it was derived.
    pub source: CompatSource,
    /// The lockspace directory; `None` for virtlockd's direct lockspace.
    pub lockspace: Option<PathBuf>,
    /// The file that carries the lock.
    pub lease: PathBuf,
}

/// The name virtlockd would give the disk written as `literal` in a domain XML.
/// Resolution failures fall through to the next rule, as failing `lvs`/`scsi_id` runs do.
pub fn virtlockd(
    resolver: &Resolver,
    literal: &OsStr,
    cwd: &Path,
    dirs: LockdDirs<'_>,
) -> Result<CompatName, ResolveError> {
    let bytes = literal.as_bytes();
    let in_dev = bytes.starts_with(b"/dev");
    if in_dev && (dirs.lvm.is_some() || dirs.scsi.is_some()) {
        let devno = resolver
            .resolve_path(literal, cwd)
            .ok()
            .and_then(|r| r.block.map(|b| b.devno));
        if let (Some(devno), Some(dir)) = (devno, dirs.lvm)
            && let Some(uuid) = resolver.lv_uuid(devno)?
        {
            return Ok(named(uuid, CompatSource::LvmUuid, dir));
        }
        if let (Some(devno), Some(dir)) = (devno, dirs.scsi)
            && let Some(wwid) = resolver.scsi_wwid_as_scsi_id(devno)?
        {
            return Ok(named(wwid, CompatSource::ScsiWwid, dir));
        }
    }
    // Validate like any input, but the file name needs no existing file.
    resolver.absolute(literal, cwd)?;
    if let Some(dir) = dirs.file {
        return Ok(named(sha256_hex(bytes), CompatSource::LiteralSha256, dir));
    }
    Ok(CompatName {
        key: literal.to_string_lossy().into_owned(),
        source: CompatSource::Direct,
        lockspace: None,
        lease: PathBuf::from(literal),
    })
}

/// The lease libvirt's sanlock plugin would use for the disk written as `literal`.
pub fn sanlock(literal: &OsStr, disk_lease_dir: &Path) -> CompatName {
    named(
        md5_hex(literal.as_bytes()),
        CompatSource::LiteralMd5,
        disk_lease_dir,
    )
}

fn named(key: String, source: CompatSource, dir: &Path) -> CompatName {
    CompatName {
        lease: dir.join(&key),
        key,
        source,
        lockspace: Some(dir.to_path_buf()),
    }
}
