//! The other SAN: the kernel's SCSI target (LIO) in a guest, configured through configfs
//! by a shell script (no targetcli), exporting iblock LUNs over iSCSI. The guest's
//! port 3260 is forwarded from 127.0.0.1 by QEMU user-mode networking (restricted: the
//! guest reaches nothing), so the hosts' QEMU iSCSI clients connect to it exactly as
//! they connect to tgtd. LIO implements full SPC-4 persistent reservations: PREEMPT AND
//! ABORT, APTPL (PTPL_C=1) and READ FULL STATUS.

use std::net::{Ipv4Addr, SocketAddr};

use crate::error::Result;
use crate::host::Host;
use crate::target::{LUN_PRODUCT, LUN_REVISION, LUN_VENDOR, Lun};

/// Which SAN target a rig uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetKind {
    /// tgtd on the host (fast; no PREEMPT AND ABORT, APTPL or READ FULL STATUS).
    #[default]
    Tgt,
    /// LIO in a guest (full SPC-4 PR; costs one more boot).
    Lio,
}

/// The serial of the virtio-blk disk backing `lun` in the LIO guest.
pub(crate) fn backing_serial(lun: u32) -> String {
    format!("dllio{lun}")
}

/// The configfs script: one iblock backstore per LUN with a fixed identity, one iSCSI
/// target with one TPG, a portal on 0.0.0.0:3260, an ACL (with every LUN mapped) per
/// initiator, no authentication.
pub(crate) fn configfs_script(iqn: &str, luns: &[Lun], initiators: &[String]) -> String {
    let mut s = String::from(
        "set -e\n\
         T=/sys/kernel/config/target\n\
         grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config\n\
         dev_for() { for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = \"$1\" ] && { echo /dev/${d##*/}; return 0; }; done; echo \"no disk with serial $1\" >&2; return 1; }\n\
         opt() { [ -e \"$2\" ] && echo \"$1\" > \"$2\"; return 0; }\n",
    );
    s.push_str(&format!("TPG=$T/iscsi/{iqn}/tpgt_1\n"));
    for lun in luns {
        let n = lun.number;
        s.push_str(&format!(
            "D=$T/core/iblock_{n}/lun{n}\n\
             mkdir -p $D\n\
             echo \"udev_path=$(dev_for {serial})\" > $D/control\n\
             echo 1 > $D/enable\n\
             echo {unit} > $D/wwn/vpd_unit_serial\n\
             opt {LUN_VENDOR} $D/wwn/vendor_id\n\
             opt {LUN_PRODUCT} $D/wwn/product_id\n\
             opt {LUN_REVISION} $D/wwn/revision\n\
             mkdir -p $TPG/lun/lun_{n}\n\
             ln -s $D $TPG/lun/lun_{n}/backstore\n",
            serial = backing_serial(n),
            unit = lun.serial,
        ));
    }
    s.push_str(
        "mkdir $TPG/np/0.0.0.0:3260\n\
         echo 0 > $TPG/attrib/authentication\n\
         echo 0 > $TPG/attrib/generate_node_acls\n",
    );
    for init in initiators {
        for lun in luns {
            let n = lun.number;
            s.push_str(&format!(
                "mkdir -p $TPG/acls/{init}/lun_{n}\n\
                 ln -s $TPG/lun/lun_{n} $TPG/acls/{init}/lun_{n}/mapped\n"
            ));
        }
    }
    s.push_str(
        "echo 1 > $TPG/enable\n\
         i=0; until netstat -ltn | grep -q ':3260 '; do [ $i -ge 100 ] && { echo 'portal not listening' >&2; exit 1; }; usleep 50000; i=$((i + 1)); done\n\
         cat /sys/kernel/config/target/version\n",
    );
    s
}

/// A LIO target running in its own guest.
#[derive(Debug)]
pub struct LioTarget {
    host: Host,
    iqn: String,
    port: u16,
    luns: Vec<Lun>,
    version: String,
}

impl LioTarget {
    /// Configure LIO on a booted guest.
    pub(crate) fn start(
        host: Host,
        iqn: String,
        port: u16,
        luns: Vec<Lun>,
        initiators: &[String],
    ) -> Result<Self> {
        let version = host
            .run_ok(&configfs_script(&iqn, &luns, initiators))?
            .trim()
            .to_owned();
        Ok(Self {
            host,
            iqn,
            port,
            luns,
            version,
        })
    }

    /// The target guest (commands, console, power).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The forwarded portal, `127.0.0.1:<port>`.
    pub fn portal(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The target's IQN.
    pub fn iqn(&self) -> &str {
        &self.iqn
    }

    /// The exported LUNs (numbered from 1; there is no LUN 0).
    pub fn luns(&self) -> &[Lun] {
        &self.luns
    }

    /// `iscsi://` URL of a LUN, as QEMU's iSCSI client takes it.
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{}/{lun}", self.port, self.iqn)
    }

    /// LIO's version line (`/sys/kernel/config/target/version`).
    pub fn version(&self) -> &str {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn configfs_script_gives_each_lun_its_identity_and_acls() {
        let luns = vec![
            Lun::new(1, Path::new("/x"), 64),
            Lun::new(2, Path::new("/x"), 64),
        ];
        let inits = vec!["iqn.x:host0".to_owned(), "iqn.x:host1".to_owned()];
        let s = configfs_script("iqn.t:san", &luns, &inits);
        for want in [
            "TPG=$T/iscsi/iqn.t:san/tpgt_1",
            "echo DLSAN0001 > $D/wwn/vpd_unit_serial",
            "echo DLSAN0002 > $D/wwn/vpd_unit_serial",
            "$(dev_for dllio2)",
            "ln -s $TPG/lun/lun_2 $TPG/acls/iqn.x:host1/lun_2/mapped",
            "mkdir $TPG/np/0.0.0.0:3260",
            "echo 1 > $TPG/enable",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        // identity before export: the serial cannot change once the LUN is linked
        assert!(s.find("vpd_unit_serial").unwrap() < s.find("ln -s $D").unwrap());
    }
}
