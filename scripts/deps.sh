#!/usr/bin/env bash
# Installs the Debian packages disklock needs to build and test, on a fresh Debian 12 machine.
# Idempotent: packages already present are not fetched again. Needs root (or sudo).
#   scripts/deps.sh          build dependencies only
#   scripts/deps.sh test     plus what the host-side tests and benchmarks use
set -euo pipefail

build=(pkg-config libudev-dev)
# lvm2 and udev give the benchmark its baseline (spawning `lvs` and `scsi_id`, as virtlockd does).
# systemd gives systemd-analyze, which checks systemd/disklock.service (tests/lease.rs).
test_pkgs=(lvm2 udev systemd)

want=("${build[@]}")
[[ "${1:-}" == test ]] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
echo "deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
