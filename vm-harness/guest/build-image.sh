#!/bin/bash
# Guest image for disklock's vm-harness: an uncompressed ELF kernel plus an uncompressed
# newc cpio holding a small usrmerge root file system.
#
#   build-image.sh inputs
#       Print the build inputs (package versions, resolved host libraries), one per line.
#       The Rust side hashes this together with this script and the guest /init to name
#       the cache entry, so a change of any of them rebuilds the image.
#   build-image.sh build OUT_DIR INIT DEB_CACHE
#       Build into OUT_DIR (must not exist): vmlinux, base.cpio, kernel-release, inputs.txt,
#       contents.txt. Debian packages that are not installed on the host (the kernel,
#       udev, multipath-tools, kpartx, liburcu8) are fetched with `apt-get download` into
#       DEB_CACHE and unpacked with `dpkg -x`; nothing is installed.
#
# Host tools copied into the guest (with their libraries, found by ldd): static busybox,
# sg3-utils, lvm2, dmsetup and a few util-linux tools. Needs: apt-get, dpkg, kmod
# (depmod, modprobe), cpio, xz-utils, zstd (see scripts/vm-deps.sh).
set -euo pipefail
export LC_ALL=C

KERNEL_META=linux-image-amd64
DEB_PKGS="udev multipath-tools kpartx liburcu8"
# The NFS server's userspace (exportfs, rpc.mountd, rpc.nfsd) and every library it needs,
# fetched rather than taken from the host so the image does not depend on what the host has.
NFS_DEBS="nfs-kernel-server nfs-common libwrap0 libnfsidmap1 libtirpc3 libtirpc-common libnsl2
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2"
DEB_PKGS="$DEB_PKGS $(echo $NFS_DEBS)"
HOST_PKGS="busybox-static sg3-utils lvm2 dmsetup util-linux libc6 libudev1 libblkid1 libdevmapper1.02.1 libaio1 libjson-c5 libedit2 libsystemd0 libkmod2"
# sg3-utils: every program of the package is small; copy them all.
LVM_CMDS="pvcreate pvs pvscan pvdisplay pvremove pvchange pvck vgcreate vgs vgchange vgscan
  vgdisplay vgremove vgextend vgreduce vgrename vgimportclone vgck lvcreate lvs lvchange
  lvdisplay lvremove lvextend lvresize lvrename lvscan lvmdevices"
UTIL_LINUX="/usr/bin/lsblk /usr/sbin/blkid /usr/bin/partx /usr/sbin/wipefs"
# Loaded by /init at every boot, in dependency order.
BASE_MODULES="virtio_pci virtio_scsi sd_mod sg virtio_console virtio_blk nvme dm_mod
  dm_multipath dm_round_robin dm_service_time dm_queue_length scsi_dh_alua crc32c_generic"
# Optional groups, loaded when the kernel command line says dl.mods=GROUP,...
GROUP_net="virtio_net"
GROUP_nfs="nfsv4"
GROUP_nfsd="nfsd"
GROUP_lio="target_core_mod target_core_iblock target_core_file iscsi_target_mod"
MODULE_GROUPS="net nfs nfsd lio"

die() { echo "build-image: $*" >&2; exit 1; }

kernel_pkg() {
  apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
host_bins() {
  echo /bin/busybox /usr/sbin/lvm /usr/sbin/dmsetup $UTIL_LINUX
  dpkg -L sg3-utils | grep -E '^/usr/bin/[^/]+$'
}

cmd_inputs() {
  local kp p v
  kp=$(kernel_pkg)
  [ -n "$kp" ] || die "cannot resolve the package behind $KERNEL_META (run apt-get update)"
  # one apt-cache call for all candidates (each call costs most of a second)
  # shellcheck disable=SC2086
  apt-cache policy "$kp" $DEB_PKGS 2>/dev/null | awk -v kp="$kp" '
    /^[^ ].*:$/ {pkg=substr($1, 1, length($1)-1)}
    /Candidate:/ {print (pkg==kp ? "kernel" : "deb"), pkg, $2}' > "${TMPDIR:-/tmp}/dl-inputs.$$"
  for p in "$kp" $DEB_PKGS; do
    v=$(awk -v p="$p" '$2==p {print $3}' "${TMPDIR:-/tmp}/dl-inputs.$$")
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then
      rm -f "${TMPDIR:-/tmp}/dl-inputs.$$"; die "no installable candidate for $p (run apt-get update)"
    fi
  done
  awk '$1=="kernel"' "${TMPDIR:-/tmp}/dl-inputs.$$"
  for p in $DEB_PKGS; do awk -v p="$p" '$2==p' "${TMPDIR:-/tmp}/dl-inputs.$$"; done
  rm -f "${TMPDIR:-/tmp}/dl-inputs.$$"
  for p in $HOST_PKGS; do
    v=$(dpkg-query -W -f '${Version}' "$p" 2>/dev/null) || die "host package $p is not installed (scripts/vm-deps.sh)"
    echo "host $p $v"
  done
  # Resolved library files (their names carry versions) of the host tools.
  # shellcheck disable=SC2046
  { ldd $(host_bins) 2>/dev/null || true; } | awk '/=> \// {print $3}' | xargs -r readlink -f | sort -u | sed 's/^/lib /'
}

# ---------------------------------------------------------------------------------------
deb_file() { # DEB_CACHE PKG VERSION -> the file apt-get download makes (or would make)
  # apt-get download names files PKG_VERSION_ARCH.deb with ':' encoded as %3a
  local base="${2}_${3//:/%3a}"
  if [ -s "$1/${base}_all.deb" ]; then echo "${base}_all.deb"; else echo "${base}_amd64.deb"; fi
}
fetch_debs() { # DEB_CACHE PKG=VERSION...
  local cache=$1; shift
  local want=() spec p v f
  mkdir -p "$cache"
  for spec in "$@"; do
    p=${spec%%=*}; v=${spec#*=}
    f=$(deb_file "$cache" "$p" "$v")
    [ -s "$cache/$f" ] || want+=("$p=$v")
  done
  if [ ${#want[@]} -gt 0 ]; then
    echo "downloading: ${want[*]}"
    # apt drops privileges to _apt; make the directory writable for it (else it warns).
    chown _apt "$cache" 2>/dev/null || true
    (cd "$cache" && timeout 600 apt-get download -q "${want[@]}") || die "apt-get download failed"
  fi
  local keep=()
  for spec in "$@"; do
    p=${spec%%=*}; v=${spec#*=}
    f=$(deb_file "$cache" "$p" "$v")
    [ -s "$cache/$f" ] || die "missing $cache/$f after download"
    keep+=("$f")
  done
  # Drop other versions of the packages we use, so the cache does not grow forever.
  for spec in "$@"; do
    p=${spec%%=*}
    for f in "$cache/${p}_"*.deb; do
      [ -e "$f" ] || continue
      case " ${keep[*]} " in *" $(basename "$f") "*) ;; *) rm -f "$f";; esac
    done
  done
}

cmd_build() {
  local out=$1 init=$2 debcache=$3
  [ ! -e "$out" ] || die "$out exists"
  [ -f "$init" ] || die "no init script at $init"
  local t0=$SECONDS
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local work="$out/work"
  mkdir -p "$work"

  cmd_inputs > "$out/inputs.txt"
  local kp kver specs=() p v
  kp=$(awk '$1=="kernel" {print $2}' "$out/inputs.txt")
  kver=${kp#linux-image-}
  specs+=("$kp=$(awk '$1=="kernel" {print $3}' "$out/inputs.txt")")
  for p in $DEB_PKGS; do
    v=$(awk -v p="$p" '$1=="deb" && $2==p {print $3}' "$out/inputs.txt")
    specs+=("$p=$v")
  done
  fetch_debs "$debcache" "${specs[@]}"
  echo "[$((SECONDS - t0))s] packages ready"

  local spec f
  for spec in "${specs[@]}"; do
    p=${spec%%=*}; v=${spec#*=}
    f="$debcache/$(deb_file "$debcache" "$p" "$v")"
    if [ "$p" = "$kp" ]; then dpkg -x "$f" "$work/kernel"; else dpkg -x "$f" "$work/extra"; fi
  done
  depmod -b "$work/kernel" "$kver"
  echo "[$((SECONDS - t0))s] unpacked $kp ($kver)"

  # ---- root file system (usrmerge layout) ----
  local R="$work/root"
  mkdir -p "$R"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64,local/bin} \
           "$R"/{dev,proc,sys,run,tmp,etc/lvm,etc/multipath,etc/udev/rules.d,root,mnt}
  ln -s usr/bin "$R/bin"; ln -s usr/sbin "$R/sbin"
  ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"

  local LIBPATH="$work/extra/lib:$work/extra/usr/lib/x86_64-linux-gnu"
  copy_libs() { # ELF...
    local lib name
    { LD_LIBRARY_PATH=$LIBPATH ldd "$@" 2>/dev/null || true; } | awk '
      /not found/ {print "MISSING " $1; next}
      /=> \// {print $3}
      /^\t\/.*ld-linux/ {print $1}' | sort -u | while read -r lib; do
      case $lib in MISSING*) die "unresolved library ${lib#MISSING } for $*";; esac
      name=$(basename "$lib")
      case $name in
        ld-linux-x86-64.so.2) [ -e "$R/usr/lib64/$name" ] || cp -L "$lib" "$R/usr/lib64/$name";;
        *) [ -e "$R/usr/lib/x86_64-linux-gnu/$name" ] || cp -L "$lib" "$R/usr/lib/x86_64-linux-gnu/$name";;
      esac
    done
  }
  put() { # SRC DST-in-guest [MODE]
    mkdir -p "$(dirname "$R$2")"
    cp -L "$1" "$R$2"
    chmod "${3:-0755}" "$R$2"
    if file_is_elf "$R$2"; then copy_libs "$1"; fi
  }
  file_is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

  # busybox first, then real tools over the applet names they share
  cp /bin/busybox "$R/usr/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do
    [ -e "$R/usr/bin/$a" ] || ln -s busybox "$R/usr/bin/$a"
  done
  local b
  for b in $(dpkg -L sg3-utils | grep -E '^/usr/bin/[^/]+$'); do
    rm -f "$R/usr/bin/$(basename "$b")"; put "$b" "/usr/bin/$(basename "$b")"
  done
  put /usr/sbin/lvm /usr/sbin/lvm
  for a in $LVM_CMDS; do ln -sf lvm "$R/usr/sbin/$a"; done
  put /usr/sbin/dmsetup /usr/sbin/dmsetup
  for b in $UTIL_LINUX; do
    [ -e "$b" ] || continue
    rm -f "$R/usr/bin/$(basename "$b")" "$R/usr/sbin/$(basename "$b")"
    put "$b" "$b"
  done

  # udev (from the downloaded package)
  local X="$work/extra"
  put "$X/bin/udevadm" /usr/bin/udevadm
  mkdir -p "$R/usr/lib/systemd" "$R/usr/lib/udev/rules.d"
  ln -s ../../bin/udevadm "$R/usr/lib/systemd/systemd-udevd"
  put "$X/lib/udev/scsi_id" /usr/lib/udev/scsi_id
  put "$X/lib/udev/ata_id" /usr/lib/udev/ata_id
  local r
  for r in 50-udev-default 60-block 60-persistent-storage; do
    cp "$X/lib/udev/rules.d/$r.rules" "$R/usr/lib/udev/rules.d/"
  done
  # device-mapper and LVM rules of the host's dmsetup and lvm2 (/dev/mapper, /dev/VG/LV,
  # by-id dm-name-/dm-uuid- links, udev cookie completion)
  for r in 55-dm 56-lvm 60-persistent-storage-dm 95-dm-notify; do
    [ -e "/lib/udev/rules.d/$r.rules" ] && cp "/lib/udev/rules.d/$r.rules" "$R/usr/lib/udev/rules.d/"
  done

  # multipath-tools and kpartx (from the downloaded packages)
  for b in multipath multipathd mpathpersist kpartx; do put "$X/sbin/$b" "/usr/sbin/$b"; done
  mkdir -p "$R/usr/lib/multipath"
  for f in "$X"/lib/multipath/*.so; do put "$f" "/usr/lib/multipath/$(basename "$f")" 0644; done
  put "$X/lib/udev/kpartx_id" /usr/lib/udev/kpartx_id
  for r in 56-dm-mpath 60-multipath 56-dm-parts 60-kpartx 68-del-part-nodes; do
    cp "$X/lib/udev/rules.d/$r.rules" "$R/usr/lib/udev/rules.d/"
  done

  # NFS server userspace (from the downloaded packages): NFSv4 only, so no rpcbind, statd
  # or lockd helpers; nfsd's exports come from exportfs + rpc.mountd.
  for b in exportfs rpc.mountd rpc.nfsd; do put "$X/usr/sbin/$b" "/usr/sbin/$b"; done
  cp "$X/etc/netconfig" "$R/etc/netconfig"
  mkdir -p "$R/var/lib/nfs/v4recovery" "$R/var/lib/nfs/rpc_pipefs" "$R/etc/exports.d" \
    "$R/srv" "$R/var/target/pr" "$R/var/target/alua"
  : > "$R/var/lib/nfs/etab"; : > "$R/var/lib/nfs/rmtab"; : > "$R/etc/exports"
  printf '%s\n' '127.0.0.1 localhost' > "$R/etc/hosts"
  printf '%s\n' 'nfs 2049/tcp' 'sunrpc 111/tcp' > "$R/etc/services"

  # minimal /etc (groups named by the udev rules, to keep udevd quiet)
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    > "$R/etc/passwd"
  printf '%s\n' root:x:0: tty:x:5: disk:x:6: lp:x:7: kmem:x:15: dialout:x:20: cdrom:x:24: \
    floppy:x:25: tape:x:26: audio:x:29: video:x:44: input:x:105: kvm:x:106: render:x:107: \
    sgx:x:108: nogroup:x:65534: > "$R/etc/group"
  : > "$R/etc/fstab"
  printf '%s\n' 'hosts: files' 'passwd: files' 'group: files' > "$R/etc/nsswitch.conf"

  # ---- kernel modules: ordered insmod lists per group, decompressed ----
  local MODROOT="$R/usr/lib/modules/$kver"
  mkdir -p "$MODROOT" "$R/etc/modules"
  module_group() { # GROUP MODULE... -> /etc/modules/GROUP.list (without what base loads)
    local group=$1 m ko rel; shift
    for m in "$@"; do
      modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" | awk '$1=="insmod" {print $2}'
    done | awk '!seen[$0]++' > "$work/modules-$group.txt"
    [ -s "$work/modules-$group.txt" ] || die "module resolution for group $group gave nothing"
    : > "$R/etc/modules/$group.list"
    while read -r ko; do
      rel=${ko#*/lib/modules/$kver/}
      case $ko in *.ko.xz|*.ko.zst) rel=${rel%.*};; esac
      if [ "$group" != base ] && grep -qx "/usr/lib/modules/$kver/$rel" "$R/etc/modules/base.list"; then
        continue
      fi
      mkdir -p "$(dirname "$MODROOT/$rel")"
      if [ ! -e "$MODROOT/$rel" ]; then
        case $ko in
          *.ko.xz) xz -dc "$ko" > "$MODROOT/$rel";;
          *.ko.zst) zstd -qdc "$ko" > "$MODROOT/$rel";;
          *) cp "$ko" "$MODROOT/$rel";;
        esac
      fi
      echo "/usr/lib/modules/$kver/$rel" >> "$R/etc/modules/$group.list"
    done < "$work/modules-$group.txt"
  }
  # shellcheck disable=SC2086
  module_group base $BASE_MODULES
  local g mods
  for g in $MODULE_GROUPS; do
    eval "mods=\$GROUP_$g"
    # shellcheck disable=SC2086
    module_group "$g" $mods
  done

  # ---- /init, version stamps ----
  install -m 0755 "$init" "$R/init"
  echo "$kver" > "$R/etc/dl-kernel-release"
  echo "$kver" > "$out/kernel-release"

  # ---- kernel: ELF vmlinux from the xz payload of the bzImage (no in-guest decompressor) ----
  local bz="$work/kernel/boot/vmlinuz-$kver" off
  off=$(grep -aboP '\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
  [ -n "$off" ] || die "no xz payload found in $bz"
  tail -c +"$((off + 1))" "$bz" | xz -dc --single-stream > "$out/vmlinux" 2>/dev/null || true
  [ "$(head -c 4 "$out/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || die "vmlinux extraction failed"

  # ---- pack ----
  (cd "$R" && find . -mindepth 1 | sort | cpio -o -H newc --quiet --reproducible -R 0:0) > "$out/base.cpio"
  (cd "$R" && find . -mindepth 1 | sort) > "$out/contents.txt"
  local nmod
  nmod=$(cat "$R"/etc/modules/*.list | wc -l)
  rm -rf "$work"
  echo "[$((SECONDS - t0))s] built: vmlinux $(du -h "$out/vmlinux" | cut -f1), base.cpio $(du -h "$out/base.cpio" | cut -f1), $nmod modules"
}

case ${1:-} in
  inputs) cmd_inputs;;
  build) [ $# -eq 4 ] || die "usage: $0 build OUT_DIR INIT DEB_CACHE"; cmd_build "$2" "$3" "$4";;
  *) die "usage: $0 inputs | build OUT_DIR INIT DEB_CACHE";;
esac
