#!/bin/bash
# Run disklock's QEMU SAN rig tests, printing how long each phase took.
#
#   vm-harness/run-tests.sh [-- extra cargo test args]    deps, disklock, image, rig tests
#   vm-harness/run-tests.sh capture                        ... then rewrite the resolver
#                                                          fixture naming/tests/fixtures/guest-capture.txt
#
# Environment: DISKLOCK_VM_CACHE (image cache, default /var/cache/disklock-vm),
# DISKLOCK_VM_RUN (run dirs, default /tmp/disklock-vm), VM_SKIP_DEPS=1 (skip apt),
# VM_TARGET_DIR (cargo target dir of the --cfg disklock_vm build, default target/vm: kept
# apart so the flag does not force rebuilds of the normal target/ tree),
# DISKLOCK_VM_KEEP=1 (keep run dirs), DISKLOCK_VM_LOGS=1 (print consoles even on success).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=test
if [ "${1:-}" = capture ]; then MODE=capture; shift; fi
if [ "${1:-}" = -- ]; then shift; fi

declare -a SUMMARY=()
phase() { # NAME COMMAND...
  local name=$1; shift
  local start
  start=$(date +%s.%N)
  echo "=== [$name]"
  local rc=0
  "$@" || rc=$?
  local secs
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  SUMMARY+=("$(printf '%-22s %7s s%s' "$name" "$secs" "$([ $rc = 0 ] || echo "  (failed: $rc)")")")
  return $rc
}
summary() {
  echo "=== timings"
  printf '  %s\n' "${SUMMARY[@]}"
  if [ -n "${TEST_LOG:-}" ] && [ -f "$TEST_LOG" ]; then
    grep -E '^\[vm\] (rig .* up in|test .*: (done|FAILED) in|image built|nfs server up|MEASURED)' "$TEST_LOG" | sed 's/^/  /' || true
  fi
}
trap summary EXIT

if [ "${VM_SKIP_DEPS:-0}" != 1 ]; then
  phase "deps" bash scripts/vm-deps.sh
fi
phase "build disklock" cargo build --bin disklock
export DISKLOCK_BIN="$ROOT/target/debug/disklock"
# The persistent-reservation benchmark (a test program, not part of disklock) measures the
# release build of the library users run.
phase "build pr benchmark" cargo build --release -p disklock-vm-harness --bin disklock-pr-bench
export DISKLOCK_PR_BENCH_BIN="$ROOT/target/release/disklock-pr-bench"
# The resolver benchmark also runs inside a guest, on real devices.
bench_bin() {
  DISKLOCK_BENCH_BIN=$(cargo bench -q -p disklock-naming --bench resolve --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
  [ -x "$DISKLOCK_BENCH_BIN" ]
}
phase "build benchmark" bench_bin
export DISKLOCK_BENCH_BIN

IMAGE_OUT=$(mktemp)
image() {
  cargo build -q -p disklock-vm-harness --bin vm-image
  "$ROOT/target/debug/vm-image" > "$IMAGE_OUT"
}
phase "guest image" image
DISKLOCK_VM_IMAGE=$(tail -1 "$IMAGE_OUT")
rm -f "$IMAGE_OUT"
export DISKLOCK_VM_IMAGE
echo "image: $DISKLOCK_VM_IMAGE"

if [ "$MODE" = capture ]; then
  phase "capture" cargo run -q -p disklock-vm-harness --bin capture -- \
    "$ROOT/naming/tests/fixtures/guest-capture.txt"
  exit 0
fi

export RUSTFLAGS="${RUSTFLAGS:-} --cfg disklock_vm"
export CARGO_TARGET_DIR="${VM_TARGET_DIR:-$ROOT/target/vm}"
phase "build tests" cargo test -p disklock-vm-harness --no-run
TEST_LOG=$(mktemp)
run_tests() {
  set -o pipefail
  cargo test -p disklock-vm-harness "$@" -- --test-threads=1 --nocapture 2>&1 | tee "$TEST_LOG"
}
phase "rig tests" run_tests "$@"
