#!/usr/bin/env bash
# A private libvirtd + virtlockd (lock_manager = "lockd") for disklock's interop test
# (tests/virtlockd_interop.rs), as in shared/reference/test-rig.md §5. Needs root.
#
#   scripts/virtlockd-env.sh install              Debian packages + the libvirt-qemu user (idempotent)
#   scripts/virtlockd-env.sh start STATE LOCKSPACE start libvirtd and virtlockd in a private
#                                                 mount namespace; their /run/libvirt,
#                                                 /var/lib/libvirt, /var/log/libvirt,
#                                                 /var/cache/libvirt and /etc/libvirt are
#                                                 directories below STATE; virtlockd's
#                                                 file_lockspace_dir is LOCKSPACE
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

ns() { # run a command in the namespace of STATE
  local state=$1; shift
  nsenter --mount="/proc/$(cat "$state/holder.pid")/ns/mnt" -- "$@"
}

start() {
  local state=$1 lockspace=$2
  mkdir -p "$state"/{run,lib,log,cache,etc} "$lockspace"
  cat > "$state/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
lock_manager = "lockd"
stdio_handler = "file"
EOF
  cat > "$state/etc/qemu-lockd.conf" <<EOF
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "$lockspace"
EOF
  for d in virtlockd libvirtd; do
    printf 'log_level = 3\nlog_outputs = "3:file:/var/log/libvirt/%s.log"\n' "$d" > "$state/etc/$d.conf"
  done
  # The holder: bind the private directories, then sleep; unshare without --fork execs sh
  # in place, so $! is the namespace's pid.
  unshare -m --propagation private sh -c '
    set -e
    for pair in run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt etc:/etc/libvirt; do
      mkdir -p "${pair#*:}"
      mount --bind "$0/${pair%%:*}" "${pair#*:}"
    done
    touch /run/libvirt/.bound
    exec sleep infinity' "$state" </dev/null >"$state/holder.log" 2>&1 &
  echo $! > "$state/holder.pid"
  wait_for "the namespace" 10 ns "$state" test -e /run/libvirt/.bound
  # Daemons get no stdio of ours: a caller reading our output to EOF must not wait for them.
  ns "$state" virtlockd -d -f /etc/libvirt/virtlockd.conf -p /run/libvirt/virtlockd.pid \
    </dev/null >>"$state/log/virtlockd.out" 2>&1
  ns "$state" libvirtd -d -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid \
    </dev/null >>"$state/log/libvirtd.out" 2>&1
  wait_for "libvirtd" 60 ns "$state" virsh -q -c qemu:///system version
}

wait_for() { # what seconds cmd...: poll until cmd succeeds
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

kill_pidfile() { # signal file
  local sig=$1 f=$2 pid
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  kill "-$sig" "$pid" 2>/dev/null || true
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
  stop) (($# == 1)) || die "usage: stop STATE"; stop "$1" ;;
  virsh) state=$1; shift; ns "$state" virsh -c qemu:///system "$@" ;;
  *) die "usage: $0 install | start STATE LOCKSPACE | virsh STATE ARGS... | stop STATE" ;;
esac
