//! The shared NFS lockspace: a server guest running the kernel nfsd (NFSv4.x only),
//! exporting a tmpfs that every host mounts at [`LOCKSPACE_MOUNT`], as users deploy
//! virtlockd's lockspace.

use crate::error::Result;
use crate::host::Host;
use crate::net::SUBNET;

/// Where every host has the export mounted.
pub const LOCKSPACE_MOUNT: &str = "/mnt/lockspace";
/// The exported directory on the server (a tmpfs; the NFSv4 pseudo-root, `fsid=0`).
pub const NFS_EXPORT: &str = "/srv/lockspace";
/// nfsd's NFSv4 lease time and grace time, in seconds (the kernel's minimum is 10).
pub const NFS_LEASE_SECS: u32 = 10;

/// The server guest's address on the rig network.
pub fn server_address() -> String {
    format!("{SUBNET}.1")
}

/// Address of host `i` on the rig network.
pub fn host_address(i: usize) -> String {
    format!("{SUBNET}.{}", 10 + i)
}

/// The script that starts nfsd in the server guest: lease and grace times are written
/// before nfsd starts (they cannot change while it runs), NFSv2/3 and UDP are off, so no
/// rpcbind, statd or lockd are needed; `rpc.mountd` answers the kernel's export upcalls.
pub(crate) fn server_script() -> String {
    format!(
        "set -e\n\
         mkdir -p {NFS_EXPORT} /proc/fs/nfsd\n\
         mount -t tmpfs -o mode=0777,size=16m lockspace {NFS_EXPORT}\n\
         mount -t nfsd nfsd /proc/fs/nfsd\n\
         echo {NFS_LEASE_SECS} > /proc/fs/nfsd/nfsv4leasetime\n\
         echo {NFS_LEASE_SECS} > /proc/fs/nfsd/nfsv4gracetime\n\
         echo '{NFS_EXPORT} {SUBNET}.0/24(rw,sync,no_root_squash,no_subtree_check,insecure,fsid=0)' > /etc/exports\n\
         exportfs -r\n\
         rpc.mountd --no-nfs-version 2 --no-nfs-version 3 --no-udp\n\
         rpc.nfsd --no-nfs-version 3 --no-udp 4\n\
         # a fresh server has no clients to wait for: end the grace period now\n\
         echo Y > /proc/fs/nfsd/v4_end_grace\n\
         echo \"versions: $(cat /proc/fs/nfsd/versions) lease: $(cat /proc/fs/nfsd/nfsv4leasetime) s\""
    )
}

/// The script that mounts the export on a host (NFSv4.2 over TCP, hard mount: what a
/// lockspace for virtlockd looks like).
pub(crate) fn mount_script(client_addr: &str) -> String {
    let server = server_address();
    format!(
        "set -e\n\
         mkdir -p {LOCKSPACE_MOUNT}\n\
         mount -t nfs4 -o vers=4.2,proto=tcp,hard,addr={server},clientaddr={client_addr} \
         {server}:/ {LOCKSPACE_MOUNT}\n\
         grep ' {LOCKSPACE_MOUNT} ' /proc/mounts"
    )
}

/// The NFS server guest.
#[derive(Debug)]
pub struct NfsServer {
    host: Host,
    versions: String,
}

impl NfsServer {
    /// Start nfsd on a booted guest.
    pub(crate) fn start(host: Host) -> Result<Self> {
        let versions = host.run_ok(&server_script())?.trim().to_owned();
        Ok(Self { host, versions })
    }

    /// The server guest itself (commands, console, power, network faults).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Its address, e.g. `10.77.0.1`.
    pub fn address(&self) -> String {
        server_address()
    }

    /// nfsd's enabled versions and lease time, as the server reported them at start.
    pub fn versions(&self) -> &str {
        &self.versions
    }

    /// The NFSv4 lease time in seconds.
    pub fn lease_secs(&self) -> u32 {
        NFS_LEASE_SECS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_set_lease_before_nfsd_starts() {
        let s = server_script();
        let lease = s.find("nfsv4leasetime").unwrap();
        let grace = s.find("nfsv4gracetime").unwrap();
        let nfsd = s.find("rpc.nfsd").unwrap();
        assert!(lease < nfsd && grace < nfsd, "{s}");
        assert!(s.contains("fsid=0") && s.contains("10.77.0.0/24"), "{s}");
        let m = mount_script(&host_address(1));
        assert!(
            m.contains("addr=10.77.0.1,clientaddr=10.77.0.11 10.77.0.1:/ /mnt/lockspace"),
            "{m}"
        );
    }
}
