#!/bin/bash
# Install what disklock's QEMU SAN rig (vm-harness/) needs on a fresh Debian 12 machine.
# Idempotent and non-interactive; needs root. Always refreshes the package lists (the image
# build resolves package versions from them); installs only what is missing.
#
#   qemu-system-x86 qemu-block-extra   guests; QEMU's iSCSI client lives in qemu-block-extra
#   seabios ipxe-qemu                   firmware QEMU loads (BIOS; NIC option ROMs)
#   tgt                                 the iSCSI target (tgtd, tgtadm)
#   libiscsi-bin                        iscsi-inq and friends, for poking at the target by hand
#   busybox-static sg3-utils lvm2 dmsetup util-linux udev
#   libaio1 libjson-c5 libedit2 libsystemd0 libkmod2
#                                       copied into the guest image with their libraries
#   kmod cpio xz-utils zstd             the image build (depmod/modprobe, packing, modules)
#   libudev-dev pkg-config              building disklock itself (default feature "udev")
#
# The guest kernel, udev, multipath-tools, kpartx, liburcu8 and the NFS server userspace
# (nfs-kernel-server, nfs-common and their libraries) are not installed: the image build
# fetches their .debs with `apt-get download` (so `apt-get update` must have run, which
# this script does). The guest network (NFS lockspace, LIO target) needs no host package
# beyond qemu-system-x86: a hub thread in the test process and QEMU's built-in user-mode
# networking (libslirp, a dependency of qemu-system-x86); no bridge, tap or namespace.
set -euo pipefail

PKGS=(
  qemu-system-x86 qemu-block-extra seabios ipxe-qemu tgt libiscsi-bin
  busybox-static sg3-utils lvm2 dmsetup util-linux udev
  libaio1 libjson-c5 libedit2 libsystemd0 libkmod2
  kmod cpio xz-utils zstd
  libudev-dev pkg-config
)

if [ "$(id -u)" != 0 ]; then
  echo "vm-deps: must run as root" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  if [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
    missing+=("$p")
  fi
done

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
  echo "vm-deps: installing ${missing[*]}"
  # policy-rc.d: never start services (tgt, udev) from package scripts
  had_policy=0
  if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; fi
  if [ $had_policy = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
  fi
  set +e
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PKGS[@]}"
  rc=$?
  set -e
  if [ $had_policy = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ $rc = 0 ] || { echo "vm-deps: apt-get install failed ($rc)" >&2; exit $rc; }
fi

# Sanity: the pieces the rig calls by name.
for t in qemu-system-x86_64 tgtd tgtadm busybox sg_persist lvm dmsetup depmod modprobe cpio xz zstd dpkg-deb apt-get ldd; do
  command -v "$t" > /dev/null || { echo "vm-deps: $t still missing" >&2; exit 1; }
done
if ! ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so > /dev/null 2>&1; then
  echo "vm-deps: QEMU's iSCSI block driver (qemu-block-extra) is missing" >&2
  exit 1
fi
mkdir -p /var/run/tgtd
echo "vm-deps: ok"
