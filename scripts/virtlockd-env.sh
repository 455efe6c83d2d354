#!/usr/bin/env bash
# A private libvirtd, with virtlockd (lock_manager = "lockd") for disklock's interop test
# (tests/virtlockd_interop.rs, shared/reference/test-rig.md §5), or with disklock's own
# plugin (lock_manager = "disklock", tests/libvirt_plugin.rs). Needs root.
#
#   scripts/virtlockd-env.sh install              Debian packages + the libvirt-qemu user (idempotent)
#   scripts/virtlockd-env.sh start STATE LOCKSPACE start libvirtd and virtlockd in a private
#                                                 mount namespace; their /run/libvirt,
#                                                 /var/lib/libvirt, /var/log/libvirt,
#                                                 /var/cache/libvirt and /etc/libvirt are
#                                                 directories below STATE; virtlockd's
#                                                 file_lockspace_dir is LOCKSPACE
#   scripts/virtlockd-env.sh start-disklock STATE PLUGIN_DIR HOSTNAME
#                                                 start libvirtd with lock_manager = "disklock"
#                                                 (PLUGIN_DIR/disklock.so) in private mount and
#                                                 UTS namespaces named HOSTNAME: one "host".
#                                                 STATE/etc/qemu-disklock.conf is kept if it
#                                                 exists, else it names STATE/disklock.sock
#   scripts/virtlockd-env.sh start-nop STATE     start libvirtd with lock_manager = "nop"
#   scripts/virtlockd-env.sh exec STATE CMD...    exec CMD in those namespaces (that host's
#                                                 disklock daemon); the pid stays CMD's
#   scripts/virtlockd-env.sh restart-libvirtd STATE
#                                                 kill libvirtd (QEMU keeps running), start it again
#   scripts/virtlockd-env.sh virsh STATE ARGS...  virsh -c qemu:///system inside the namespace
#   scripts/virtlockd-env.sh stop STATE           stop the domains, QEMU, the daemons and the
#                                                 namespace; leaves no process behind
#
# The host's own libvirt (if any) is never touched: everything lives in the namespace, which
# a `sleep infinity` holder keeps alive (its pid is in STATE/holder.pid).
set -euo pipefail

PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)

die() { echo "virtlockd-env: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"

install() {
  local missing=()
  for p in "${PKGS[@]}"; do
    [[ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" == "ii " ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "virtlockd-env: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Never start services from package scripts (libvirt-daemon ships units).
    local had_policy=0
    [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
    if ((had_policy == 0)); then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod 0755 /usr/sbin/policy-rc.d
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PKGS[@]}" >/dev/null || rc=$?
    ((had_policy == 0)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install failed ($rc)"
  fi
  # libvirt-daemon-system would create it, but its postinst starts services.
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null ||
    useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  for t in libvirtd virtlockd virsh qemu-system-x86_64 unshare nsenter; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || die "$t is missing"
  done
}

ns_args() { # STATE: nsenter's options for its namespaces (mount, UTS)
  local holder
  holder=$(cat "$1/holder.pid")
  echo "--mount=/proc/$holder/ns/mnt --uts=/proc/$holder/ns/uts"
}

ns() { # run a command in the namespaces of STATE
  local state=$1; shift
  # shellcheck disable=SC2046 # two options without spaces
  nsenter $(ns_args "$state") -- "$@"
}

write_qemu_conf() { # STATE MANAGER
  local state=$1 manager=$2
  cat > "$state/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
lock_manager = "$manager"
stdio_handler = "file"
EOF
  for d in virtlockd libvirtd; do
    printf 'log_level = 3\nlog_outputs = "3:file:/var/log/libvirt/%s.log"\n' "$d" > "$state/etc/$d.conf"
  done
}

namespace() { # STATE [HOSTNAME]
  local state=$1 host=${2:-}
  # The holder: bind the private directories, name the host, then sleep; unshare without
  # --fork execs sh in place, so $! is the namespaces' pid.
  unshare -m -u --propagation private sh -c '
    set -e
    for pair in run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt etc:/etc/libvirt; do
      mkdir -p "${pair#*:}"
      mount --bind "$0/${pair%%:*}" "${pair#*:}"
    done
    [ -z "$1" ] || echo "$1" > /proc/sys/kernel/hostname
    touch /run/libvirt/.bound
    exec sleep infinity' "$state" "$host" </dev/null >"$state/holder.log" 2>&1 &
  echo $! > "$state/holder.pid"
  wait_for "the namespace" 10 ns "$state" test -e /run/libvirt/.bound
}

start_libvirtd() { # STATE: with LIBVIRT_LOCK_MANAGER_PLUGIN_DIR from STATE/plugin-dir if any
  local state=$1
  local env=(env)
  [[ -s $state/plugin-dir ]] && env+=("LIBVIRT_LOCK_MANAGER_PLUGIN_DIR=$(cat "$state/plugin-dir")")
  # Daemons get no stdio of ours: a caller reading our output to EOF must not wait for them.
  ns "$state" "${env[@]}" libvirtd -d -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid \
    </dev/null >>"$state/log/libvirtd.out" 2>&1
  wait_for "libvirtd" 60 ns "$state" virsh -q -c qemu:///system version
}

start() {
  local state=$1 lockspace=$2
  mkdir -p "$state"/{run,lib,log,cache,etc} "$lockspace"
  write_qemu_conf "$state" lockd
  cat > "$state/etc/qemu-lockd.conf" <<EOF
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "$lockspace"
EOF
  namespace "$state"
  ns "$state" virtlockd -d -f /etc/libvirt/virtlockd.conf -p /run/libvirt/virtlockd.pid \
    </dev/null >>"$state/log/virtlockd.out" 2>&1
  start_libvirtd "$state"
}

start_disklock() {
  local state=$1 plugins=$2 host=$3
  [[ -r $plugins/disklock.so ]] || die "no $plugins/disklock.so"
  mkdir -p "$state"/{run,lib,log,cache,etc}
  echo "$plugins" > "$state/plugin-dir"
  write_qemu_conf "$state" disklock
  [[ -e $state/etc/qemu-disklock.conf ]] ||
    printf 'socket = "%s/disklock.sock"\n' "$state" > "$state/etc/qemu-disklock.conf"
  # A host of its own for migration: libvirt refuses to migrate to the same host uuid.
  printf 'host_uuid = "%s"\n' "$(cat /proc/sys/kernel/random/uuid)" >> "$state/etc/libvirtd.conf"
  namespace "$state" "$host"
  start_libvirtd "$state"
}

start_nop() { # libvirt's built-in lock manager that locks nothing (the benchmark's baseline)
  local state=$1
  mkdir -p "$state"/{run,lib,log,cache,etc}
  write_qemu_conf "$state" nop
  namespace "$state"
  start_libvirtd "$state"
}

restart_libvirtd() { # as after a crash: KILL (TERM waits up to 10 s for libvirtd's workers)
  local state=$1 pid
  pid=$(cat "$state/run/libvirtd.pid")
  kill -KILL "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null || die "libvirtd $pid did not stop"
  start_libvirtd "$state"
}

wait_for() { # what seconds cmd...: poll until cmd succeeds
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

stop() {
  local state=$1
  [[ -s $state/holder.pid ]] || return 0
  local holder
  holder=$(cat "$state/holder.pid")
  if kill -0 "$holder" 2>/dev/null; then
    for dom in $(ns "$state" virsh -q -c qemu:///system list --name 2>/dev/null); do
      ns "$state" timeout 30 virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
    done
  fi
  # QEMU, then the daemons: TERM, up to 10 s, then KILL.
  local files=("$state"/run/qemu/*.pid "$state/run/libvirtd.pid" "$state/run/virtlockd.pid")
  local pids=()
  for f in "${files[@]}"; do
    [[ -s $f ]] && pids+=("$(cat "$f")")
  done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  kill -KILL "$holder" 2>/dev/null || true
  rm -f "$state/holder.pid"
}

cmd=${1:-}
shift || true
case $cmd in
  install) install ;;
  start) (($# == 2)) || die "usage: start STATE LOCKSPACE"; start "$@" ;;
  start-disklock)
    (($# == 3)) || die "usage: start-disklock STATE PLUGIN_DIR HOSTNAME"
    start_disklock "$@" ;;
  start-nop) (($# == 1)) || die "usage: start-nop STATE"; start_nop "$1" ;;
  exec)
    (($# >= 2)) || die "usage: exec STATE CMD..."
    state=$1; shift
    # shellcheck disable=SC2046 # two options without spaces
    exec nsenter $(ns_args "$state") -- "$@" ;;
  restart-libvirtd) (($# == 1)) || die "usage: restart-libvirtd STATE"; restart_libvirtd "$1" ;;
  stop) (($# == 1)) || die "usage: stop STATE"; stop "$1" ;;
  virsh) state=$1; shift; ns "$state" virsh -c qemu:///system "$@" ;;
  *) die "usage: $0 install | start STATE LOCKSPACE | start-disklock STATE PLUGIN_DIR HOSTNAME | start-nop STATE | exec STATE CMD... | restart-libvirtd STATE | virsh STATE ARGS... | stop STATE" ;;
esac
