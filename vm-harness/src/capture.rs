//! Capture of real sysfs / udev / `/dev` data from a guest, as a text manifest the
//! resolver's unit tests can rebuild a fake root from.
//!
//! Manifest format, one record per line, paths relative to `/` without the leading slash:
//!
//! ```text
//! # comment (provenance)
//! dir <path>
//! file <path> <base64 of the exact bytes, empty for an empty file>
//! link <path> <target as readlink prints it>
//! oracle scsi_id <dev/node> <stdout of scsi_id --whitelisted --replace-whitespace, or empty>
//! oracle wwid <dev/node> <contents of /sys/block/X/device/wwid or /sys/block/X/wwid, trimmed>
//! oracle lvs <dev/vg/lv> <lvs --noheadings -o uuid, trimmed>
//! ```
//!
//! Every ancestor of a recorded path is itself recorded as a `dir`. Records are sorted
//! (comments, dirs, links and files by path, oracles) and unique. A record whose value
//! is empty ends in a single space after the path or node.

use std::collections::{BTreeMap, BTreeSet};

use crate::base64;
use crate::error::{Error, Result};
use crate::host::{Host, LogicalVolume, MultipathMap};
use crate::rig::{Rig, RigBuilder};

/// The guest side of the capture (busybox ash).
pub const GUEST_SCRIPT: &str = include_str!("../guest/capture.sh");

/// Upper bound the manifest must stay under.
pub const MAX_MANIFEST_BYTES: usize = 300 * 1024;

/// One manifest record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Record {
    /// A directory.
    Dir(String),
    /// A symbolic link and its target.
    Link(String, String),
    /// A regular file and its exact bytes.
    File(String, Vec<u8>),
    /// What a tool printed for a node: (tool, node, value).
    Oracle(String, String, String),
}

impl Record {
    fn path(&self) -> &str {
        match self {
            Record::Dir(p) | Record::Link(p, _) | Record::File(p, _) => p,
            Record::Oracle(_, n, _) => n,
        }
    }

    fn render(&self) -> String {
        match self {
            Record::Dir(p) => format!("dir {p}"),
            Record::Link(p, t) => format!("link {p} {t}"),
            Record::File(p, b) => format!("file {p} {}", base64::encode(b)),
            Record::Oracle(k, n, v) => format!("oracle {k} {n} {v}"),
        }
    }
}

fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty()
        || p.starts_with('/')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || p.contains(char::is_whitespace)
    {
        return Err(format!("bad path {p:?}"));
    }
    Ok(())
}

/// Parse one non-comment line.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let (kind, rest) = line
        .split_once(' ')
        .ok_or_else(|| format!("no fields in {line:?}"))?;
    match kind {
        "dir" => {
            check_path(rest)?;
            Ok(Record::Dir(rest.to_owned()))
        }
        "link" => {
            let (p, t) = rest.split_once(' ').ok_or("link without target")?;
            check_path(p)?;
            if t.is_empty() {
                return Err("empty link target".into());
            }
            Ok(Record::Link(p.to_owned(), t.to_owned()))
        }
        "file" => {
            let (p, b) = rest.split_once(' ').unwrap_or((rest, ""));
            check_path(p)?;
            let bytes = base64::decode(b).map_err(|e| format!("{p}: {e}"))?;
            Ok(Record::File(p.to_owned(), bytes))
        }
        "oracle" => {
            let (k, rest) = rest.split_once(' ').ok_or("oracle without node")?;
            let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(k, "scsi_id" | "wwid" | "lvs") {
                return Err(format!("unknown oracle {k:?}"));
            }
            check_path(n)?;
            Ok(Record::Oracle(k.to_owned(), n.to_owned(), v.to_owned()))
        }
        _ => Err(format!("unknown record kind {kind:?}")),
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `#` lines without the `# ` prefix, in order.
    pub comments: Vec<String>,
    /// Records, sorted and unique.
    pub records: BTreeSet<Record>,
}

impl Manifest {
    /// Parse manifest text (strict: every line must be valid).
    pub fn parse(text: &str) -> Result<Self> {
        let mut m = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            if let Some(c) = line.strip_prefix('#') {
                m.comments.push(c.trim_start().to_owned());
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let r = parse_line(line).map_err(|message| Error::Manifest {
                line: i + 1,
                message,
            })?;
            m.records.insert(r);
        }
        Ok(m)
    }

    /// Add every ancestor of every path as a `dir`, and check that no path is recorded
    /// twice with different kinds or contents.
    pub fn complete(&mut self) -> Result<()> {
        // `subsystem` links point at class or bus directories (sys/class/block,
        // sys/bus/scsi); record those so the links resolve in a replayed tree.
        let targets: Vec<String> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Link(p, t) if p.ends_with("/subsystem") && p.starts_with("sys/") => {
                    let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
                    Some(resolve(dir, t))
                }
                _ => None,
            })
            .filter(|d| d.starts_with("sys/"))
            .collect();
        for d in targets {
            self.records.insert(Record::Dir(d));
        }
        let mut dirs = BTreeSet::new();
        for r in &self.records {
            if let Record::Oracle(..) = r {
                continue;
            }
            let p = r.path();
            let mut prefix = String::new();
            let parts: Vec<&str> = p.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                dirs.insert(prefix.clone());
            }
        }
        for d in dirs {
            self.records.insert(Record::Dir(d));
        }
        let mut seen: BTreeMap<(u8, &str), &Record> = BTreeMap::new();
        for r in &self.records {
            let key = match r {
                Record::Oracle(k, n, _) => (
                    if k == "scsi_id" {
                        1
                    } else if k == "wwid" {
                        2
                    } else {
                        3
                    },
                    n.as_str(),
                ),
                other => (0, other.path()),
            };
            if let Some(prev) = seen.insert(key, r) {
                return Err(Error::Manifest {
                    line: 0,
                    message: format!(
                        "conflicting records: {:?} and {:?}",
                        prev.render(),
                        r.render()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The manifest as text: comments, then dirs, links and files by path, then oracles.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.comments {
            out.push_str("# ");
            out.push_str(c);
            out.push('\n');
        }
        let mut body: Vec<&Record> = self.records.iter().collect();
        body.sort_by(|a, b| {
            let rank = |r: &Record| match r {
                Record::Dir(_) => 0,
                Record::Link(..) | Record::File(..) => 1,
                Record::Oracle(..) => 2,
            };
            (rank(a), a.path(), *a).cmp(&(rank(b), b.path(), *b))
        });
        for r in body {
            out.push_str(&r.render());
            out.push('\n');
        }
        out
    }

    /// Bytes of a recorded file.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.records.iter().find_map(|r| match r {
            Record::File(p, b) if p == path => Some(b.as_slice()),
            _ => None,
        })
    }

    /// Target of a recorded link.
    pub fn link(&self, path: &str) -> Option<&str> {
        self.records.iter().find_map(|r| match r {
            Record::Link(p, t) if p == path => Some(t.as_str()),
            _ => None,
        })
    }

    /// An oracle value.
    pub fn oracle(&self, kind: &str, node: &str) -> Option<&str> {
        self.records.iter().find_map(|r| match r {
            Record::Oracle(k, n, v) if k == kind && n == node => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether a directory is recorded.
    pub fn has_dir(&self, path: &str) -> bool {
        self.records.contains(&Record::Dir(path.to_owned()))
    }

    /// Resolve `sys/class/block/<name>` to the real device directory (relative).
    pub fn block_dir(&self, name: &str) -> Option<String> {
        let t = self.link(&format!("sys/class/block/{name}"))?;
        Some(resolve("sys/class/block", t))
    }
}

/// Join a relative link target onto the directory holding the link, normalising `..`.
pub fn resolve(link_dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link_dir.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The rig the fixture comes from: one host with udev; LUN 1 over two paths (for a
/// dm-multipath map), LUN 2 (gets an MBR with one partition), LUN 3 (gets LVM); a local
/// emulated NVMe drive with serial `DLNVME01` and a virtio-blk disk without serial.
pub fn rig_builder() -> RigBuilder {
    Rig::builder()
        .name("capture")
        .luns(3)
        .lun_paths(1, 2)
        .udev(true)
        .nvme("DLNVME01", 64)
        .virtio_disk(None, 16)
}

/// What [`prepare_scene`] built.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The map over LUN 1's two paths.
    pub mpath: MultipathMap,
    /// LUN 1's WWID in `scsi_id` form.
    pub lun1_id: String,
    /// LUN 2's disk (partitioned) and its partition.
    pub part_disk: String,
    /// Name of the partition, e.g. `sdc1`.
    pub partition: String,
    /// The LV on LUN 3.
    pub lv: LogicalVolume,
    /// LUN 3's disk.
    pub lvm_disk: String,
}

/// Volume group made on LUN 3.
pub const SCENE_VG: &str = "dlvg";
/// Logical volume made in [`SCENE_VG`].
pub const SCENE_LV: &str = "dllv";

/// A classic MBR with one Linux partition from sector 2048 to the end, and a fixed
/// disk signature (so the partition's PARTUUID is `444c4b31-01`).
pub fn mbr_one_partition(total_sectors: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&0x444c_4b31u32.to_le_bytes());
    let start: u32 = 2048;
    let count = u32::try_from(total_sectors.saturating_sub(u64::from(start))).unwrap_or(u32::MAX);
    let e = &mut s[446..462];
    e[0] = 0x00; // not bootable
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use LBA
    e[4] = 0x83; // Linux
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&count.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// Build the storage the fixture describes on host 0 of a [`rig_builder`] rig.
pub fn prepare_scene(rig: &Rig) -> Result<Scene> {
    let h = rig.host(0);
    let p0 = h.lun_disk(1, 0)?;
    let p1 = h.lun_disk(1, 1)?;
    let lun1_id = h.scsi_id(&p0)?;
    let other = h.scsi_id(&p1)?;
    if lun1_id.is_empty() || lun1_id != other {
        return Err(Error::Unexpected {
            host: h.name().into(),
            message: format!("paths of LUN 1 report scsi_id {lun1_id:?} and {other:?}"),
        });
    }
    let mpath = h
        .multipath_create(&[&lun1_id])?
        .pop()
        .ok_or_else(|| Error::Unexpected {
            host: h.name().into(),
            message: "no multipath map".into(),
        })?;

    let part_disk = h.lun_disk(2, 0)?;
    let sectors = rig.lun(2).size_mib * 2048;
    h.write_file("/tmp/mbr.bin", &mbr_one_partition(sectors))?;
    h.run_ok(&format!(
        "set -e\n\
         dd if=/tmp/mbr.bin of=/dev/{part_disk} bs=512 count=1 conv=notrunc oflag=direct 2>/dev/null\n\
         blockdev --rereadpt /dev/{part_disk}\n\
         udevadm settle --timeout=30\n\
         mke2fs -q -L dlpart /dev/{part_disk}1\n\
         udevadm trigger --action=change /sys/class/block/{part_disk}1\n\
         udevadm settle --timeout=30\n\
         test -b /dev/{part_disk}1"
    ))?;
    let lvm_disk = h.lun_disk(3, 0)?;
    let lv = h.create_lv(&lvm_disk, SCENE_VG, SCENE_LV, 16)?;
    h.run_ok("udevadm settle --timeout=30")?;
    Ok(Scene {
        mpath,
        lun1_id,
        partition: format!("{part_disk}1"),
        part_disk,
        lv,
        lvm_disk,
    })
}

/// Run the guest capture on `host` and return the completed, sorted manifest.
pub fn capture(host: &Host, provenance: &[String]) -> Result<Manifest> {
    let out = host.run_ok(GUEST_SCRIPT)?;
    let mut m = Manifest::default();
    m.comments.extend(provenance.iter().cloned());
    for (i, line) in out.lines().enumerate() {
        if let Some(c) = line.strip_prefix('#') {
            m.comments.push(c.trim_start().to_owned());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let r = parse_line(line).map_err(|message| Error::Manifest {
            line: i + 1,
            message,
        })?;
        m.records.insert(r);
    }
    m.complete()?;
    Ok(m)
}

/// Provenance comments from the host side: format, date, QEMU and tgt versions, layout.
pub fn host_provenance(rig: &Rig) -> Vec<String> {
    let first_line = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    vec![
        "disklock guest capture: real sysfs/udev/dev data from a vm-harness guest".into(),
        "format: dir <path> | file <path> <base64> | link <path> <target> | oracle <scsi_id|wwid|lvs> <node> <value>; paths relative to /".into(),
        format!("captured {} by disklock-vm-harness capture", first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        format!("host qemu: {}", first_line("qemu-system-x86_64", &["--version"])),
        format!("host tgt: {}", first_line("dpkg-query", &["-W", "-f", "${Version}", "tgt"])),
        format!("guest image {} kernel {}", rig.image().key, rig.image().kernel_release),
        "layout: LUN1 (DLSAN0001) over two paths -> dm-multipath map; LUN2 (DLSAN0002) MBR, one ext2 partition; LUN3 (DLSAN0003) LVM dlvg/dllv; NVMe serial DLNVME01; virtio-blk without serial".into(),
    ]
}

fn need(ok: bool, what: impl Into<String>, problems: &mut Vec<String>) {
    if !ok {
        problems.push(what.into());
    }
}

/// Check that a manifest describes the scene: every problem found, or `Ok`.
pub fn check(m: &Manifest, scene: &Scene, rendered_len: usize) -> Result<(), Vec<String>> {
    let mut p = Vec::new();
    need(
        rendered_len < MAX_MANIFEST_BYTES,
        format!("manifest is {rendered_len} bytes"),
        &mut p,
    );
    // multipath: both paths and the map report LUN 1's id; map's dm uuid and slaves
    for s in &scene.mpath.slaves {
        need(
            m.oracle("scsi_id", &format!("dev/{s}")) == Some(scene.lun1_id.as_str()),
            format!("scsi_id oracle of path {s}"),
            &mut p,
        );
    }
    need(
        scene.mpath.slaves.len() == 2,
        format!("map slaves {:?}", scene.mpath.slaves),
        &mut p,
    );
    match m.block_dir(&scene.mpath.dm) {
        Some(dir) => {
            let uuid = format!("mpath-{}\n", scene.lun1_id);
            need(
                m.file(&format!("{dir}/dm/uuid")) == Some(uuid.as_bytes()),
                "map dm/uuid",
                &mut p,
            );
            for s in &scene.mpath.slaves {
                need(
                    m.link(&format!("{dir}/slaves/{s}")).is_some(),
                    format!("map slave link {s}"),
                    &mut p,
                );
            }
        }
        None => p.push(format!("no sys/class/block/{} link", scene.mpath.dm)),
    }
    need(
        m.link(&format!("dev/disk/by-id/dm-uuid-mpath-{}", scene.lun1_id))
            .is_some(),
        "by-id dm-uuid-mpath link",
        &mut p,
    );
    // the two paths have the same wwid oracle, LUNs differ
    let wwids: Vec<Option<&str>> = scene
        .mpath
        .slaves
        .iter()
        .map(|s| m.oracle("wwid", &format!("dev/{s}")))
        .collect();
    need(
        wwids.len() == 2 && wwids[0].is_some() && wwids[0] == wwids[1],
        "same wwid on both paths",
        &mut p,
    );
    need(
        m.oracle("wwid", &format!("dev/{}", scene.part_disk)) != wwids.first().copied().flatten(),
        "LUN 2 wwid differs from LUN 1",
        &mut p,
    );
    // partition
    match m.block_dir(&scene.partition) {
        Some(dir) => need(
            m.file(&format!("{dir}/partition")) == Some(b"1\n"),
            "partition attribute",
            &mut p,
        ),
        None => p.push(format!("no sys/class/block/{}", scene.partition)),
    }
    // LVM
    need(
        m.oracle("lvs", &format!("dev/{SCENE_VG}/{SCENE_LV}")) == Some(scene.lv.uuid.as_str()),
        "lvs oracle",
        &mut p,
    );
    need(
        m.link(&format!("dev/{SCENE_VG}/{SCENE_LV}")).is_some(),
        "/dev/VG/LV link",
        &mut p,
    );
    need(
        m.link(&format!("dev/mapper/{SCENE_VG}-{SCENE_LV}"))
            .is_some(),
        "/dev/mapper link",
        &mut p,
    );
    match m.block_dir(&scene.lv.dm) {
        Some(dir) => need(
            m.file(&format!("{dir}/dm/uuid"))
                .is_some_and(|u| u.starts_with(b"LVM-")),
            "LV dm/uuid",
            &mut p,
        ),
        None => p.push(format!("no sys/class/block/{}", scene.lv.dm)),
    }
    // NVMe and virtio-blk
    need(
        m.link("sys/class/block/nvme0n1").is_some(),
        "nvme0n1",
        &mut p,
    );
    need(
        m.oracle("wwid", "dev/nvme0n1")
            .is_some_and(|w| !w.is_empty()),
        "nvme wwid oracle",
        &mut p,
    );
    need(m.link("sys/class/block/vda").is_some(), "vda", &mut p);
    // udev data and by-path links
    need(
        m.records
            .iter()
            .any(|r| matches!(r, Record::File(path, _) if path.starts_with("run/udev/data/b8:"))),
        "udev data of sd devices",
        &mut p,
    );
    need(
        m.records
            .iter()
            .any(|r| matches!(r, Record::Link(path, _) if path.starts_with("dev/disk/by-path/"))),
        "by-path links",
        &mut p,
    );
    if p.is_empty() { Ok(()) } else { Err(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_render_back() {
        for line in [
            "dir sys/block",
            "link sys/class/block/sda ../../devices/pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0/0:0:0:0/block/sda",
            "file sys/devices/x/size MTMxMDcyCg==",
            "file sys/devices/x/serial ",
            "oracle scsi_id dev/sda 36000000000000000000000e000000001",
            "oracle scsi_id dev/vda ",
            "oracle wwid dev/sdc t10.VMHARN  SANLUN",
            "oracle lvs dev/dlvg/dllv 1olaZY-bYgK-b38B",
        ] {
            let r = parse_line(line).unwrap();
            assert_eq!(r.render(), line);
        }
        assert_eq!(
            parse_line("file a/b").unwrap(),
            Record::File("a/b".into(), vec![])
        );
        for bad in [
            "dir /abs",
            "dir a/../b",
            "link a",
            "file a !!",
            "oracle blkid dev/sda x",
            "weird x",
            "dir a b",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn complete_adds_parents_and_rejects_conflicts() {
        let mut m = Manifest::parse(
            "# c1\nfile sys/devices/v/block/vda/size MTYK\nlink sys/class/block/vda ../../devices/v/block/vda\n\
             link sys/devices/v/subsystem ../../bus/virtio\n\
             oracle scsi_id dev/vda \nfile sys/devices/v/block/vda/size MTYK\n",
        )
        .unwrap();
        m.complete().unwrap();
        for d in [
            "sys",
            "sys/devices",
            "sys/devices/v/block/vda",
            "sys/class/block",
            "sys/class",
            "sys/bus/virtio",
        ] {
            assert!(m.has_dir(d), "{d}");
        }
        assert!(!m.has_dir("dev"), "oracle nodes are not paths in the tree");
        assert_eq!(m.block_dir("vda").unwrap(), "sys/devices/v/block/vda");
        assert_eq!(m.file("sys/devices/v/block/vda/size"), Some(&b"16\n"[..]));
        let text = m.render();
        assert!(text.starts_with("# c1\ndir sys\n"), "{text}");
        assert!(text.ends_with("oracle scsi_id dev/vda \n"), "{text}");
        assert_eq!(Manifest::parse(&text).unwrap().records, m.records);

        let mut bad = Manifest::parse("file a/b MQ==\nfile a/b Mg==\n").unwrap();
        assert!(bad.complete().is_err());
        let mut bad = Manifest::parse("link a/b x\ndir a/b\n").unwrap();
        assert!(bad.complete().is_err());
    }

    #[test]
    fn resolve_relative_targets() {
        assert_eq!(
            resolve("sys/class/block", "../../devices/a/block/sda"),
            "sys/devices/a/block/sda"
        );
        assert_eq!(resolve("dev/disk/by-id", "../../sda"), "dev/sda");
        assert_eq!(resolve("dev/dlvg", "/dev/dm-1"), "dev/dm-1");
    }

    #[test]
    fn mbr_layout() {
        let s = mbr_one_partition(131_072);
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        assert_eq!(s[446 + 4], 0x83);
        assert_eq!(u32::from_le_bytes(s[454..458].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(s[458..462].try_into().unwrap()),
            131_072 - 2048
        );
        assert!(
            s[462..510].iter().all(|&b| b == 0),
            "only one partition entry"
        );
    }
}
