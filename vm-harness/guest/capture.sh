#!/bin/sh
# Guest side of the fixture capture (busybox ash). Prints manifest records, one per line,
# in no particular order; the host side (capture.rs) removes duplicates, adds the parent
# directories of every path and sorts. Paths are written relative to / (no leading slash).
#   dir <path>
#   file <path> <base64 of the exact bytes>
#   link <path> <target as readlink prints it>
#   oracle scsi_id|wwid|lvs <node> <value>
#   # comment
rel() { echo "${1#/}"; }
emit_dir() { [ -d "$1" ] && [ ! -L "$1" ] && echo "dir $(rel "$1")"; return 0; }
emit_link() { [ -L "$1" ] && echo "link $(rel "$1") $(readlink "$1")"; return 0; }
emit_file() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 0
  # an attribute that cannot be read (EIO, EINVAL) is left out
  cat "$1" > /tmp/capture.attr 2>/dev/null || return 0
  echo "file $(rel "$1") $(base64 -w 0 < /tmp/capture.attr)"
}
trim() { sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'; }

echo "# guest kernel $(uname -r) ($(uname -v))"
echo "# guest udev $(udevadm --version 2>/dev/null), $(lvm version 2>/dev/null | sed -n 's/^ *LVM version: *//p' | head -1 | tr -s ' ') lvm, $(multipath -h 2>&1 | sed -n 's/^multipath-tools v\{0,1\}//p' | head -1) multipath-tools"

# ---- block devices ----
for c in /sys/class/block/*; do
  x=${c##*/}
  emit_link "$c"
  emit_link "/sys/block/$x"
  real=$(readlink -f "$c")
  emit_dir "$real"
  for a in dev partition size removable ro hidden wwid dm/name dm/uuid; do emit_file "$real/$a"; done
  for sub in dm slaves holders; do emit_dir "$real/$sub"; done
  for l in "$real"/slaves/* "$real"/holders/*; do emit_link "$l"; done
  emit_link "$real/subsystem"
  emit_link "$real/device"
  mm=$(cat "$real/dev" 2>/dev/null)
  if [ -n "$mm" ]; then
    emit_link "/sys/dev/block/$mm"
    emit_file "/run/udev/data/b$mm"
  fi
  if [ -e "$real/device" ]; then
    dev=$(readlink -f "$real/device")
    emit_dir "$dev"
    for a in vpd_pg80 vpd_pg83 vendor model rev type wwid serial firmware_rev subsysnqn; do
      emit_file "$dev/$a"
    done
    emit_link "$dev/subsystem"
  fi
done

# ---- NVMe controllers and subsystems ----
for c in /sys/class/nvme/* /sys/class/nvme-subsystem/*; do
  [ -e "$c" ] || continue
  emit_link "$c"
  real=$(readlink -f "$c")
  emit_dir "$real"
  for a in serial model firmware_rev subsysnqn transport address cntlid dev; do emit_file "$real/$a"; done
  emit_link "$real/subsystem"
  emit_link "$real/device"
  for l in "$real"/nvme*; do emit_link "$l"; done
done

# ---- /dev links ----
for d in /dev/disk /dev/disk/* /dev/mapper; do emit_dir "$d"; done
find /dev/disk /dev/mapper -type l 2>/dev/null | while read -r l; do emit_link "$l"; done
for vg in $(vgs --noheadings -o vg_name 2>/dev/null); do
  emit_dir "/dev/$vg"
  for l in "/dev/$vg"/*; do emit_link "$l"; done
done

# ---- oracles ----
for c in /sys/class/block/*; do
  x=${c##*/}
  [ -b "/dev/$x" ] || continue
  id=$(/usr/lib/udev/scsi_id --whitelisted --replace-whitespace --device="/dev/$x" 2>/dev/null)
  echo "oracle scsi_id dev/$x $id"
  for w in "/sys/block/$x/device/wwid" "/sys/block/$x/wwid"; do
    if [ -f "$w" ]; then
      echo "oracle wwid dev/$x $(cat "$w" | trim)"
      break
    fi
  done
done
lvs --noheadings -o vg_name,lv_name 2>/dev/null | while read -r vg lv; do
  echo "oracle lvs dev/$vg/$lv $(lvs --noheadings -o uuid "/dev/$vg/$lv" 2>/dev/null | trim)"
done
