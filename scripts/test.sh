#!/usr/bin/env bash
# The test command (README, CI): formatting, lints, then every test,
# including the ones that really mount (root and /dev/fuse required).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -c /dev/fuse ]; then
    echo "test.sh: /dev/fuse is missing; the mount tests need FUSE (modprobe fuse)" >&2
    exit 1
fi

# The run's own temp dirs: every test directory (and so every mountpoint)
# is created beneath them, so a leaked mount is one beneath them. Mounts
# of other users or other checkouts elsewhere on the machine are not ours.
# Like /tmp itself (1777): tests run processes as other uids (1000, 2000)
# that must reach their own temp dirs beneath these.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/wopfs-test.XXXXXX")
chmod 1777 "$run_tmp"
run_shm=""
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    run_shm=$(mktemp -d /dev/shm/wopfs-test.XXXXXX)
    chmod 1777 "$run_shm"
fi
cleanup() {
    # Never into a leaked mount: --one-file-system stays off other mounts.
    rm -rf --one-file-system -- "$run_tmp"
    if [ -n "$run_shm" ]; then rm -rf --one-file-system -- "$run_shm"; fi
}
trap cleanup EXIT

# wopfs mounts beneath this run's temp dirs (mountinfo's field 5 is the
# mountpoint; its source is after the " - " separator).
our_mounts() {
    awk -v a="$run_tmp/" -v b="${run_shm:-/nonexistent}/" '
        { for (i = 7; i <= NF; i++) if ($i == "-") break }
        ($(i + 2) ~ /^wopfs/ || $(i + 1) == "ext4") && (index($5, a) == 1 || index($5, b) == 1) { print $5 }
    ' /proc/self/mountinfo | sort
}

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings (as shipped, and with the test switches)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features fault-injection -- -D warnings
echo "==> cargo test"
# Each mount test tears itself down after a deadline; the outer timeout is
# the last guard against a hung FUSE request. The crash tests need the
# commit's test-only switches (cargo feature fault-injection).
# TMPDIR (honoured by every tempdir of tests/common) and WOPFS_TEST_SHM
# (the tmpfs dir of tests/commit_kill.rs) point at this run's dirs only.
# Writable views use the FUSE engine unless a test names one
# (tests/kernel_engine.rs, tests/engine_differential.rs); the session,
# commit, POSIX, run, container, git-branch, revocation, denied-log and
# checkpoint suites then run again on the kernel
# engine (the matrix).
export WOPFS_ENGINE="${WOPFS_TEST_ENGINE:-fuse}"
TMPDIR="$run_tmp" WOPFS_TEST_SHM="$run_shm" \
    timeout --kill-after=30s 40m cargo test --locked --features fault-injection -- --test-threads=4
if [ "$(id -u)" = 0 ]; then
    echo "==> the session, commit, POSIX, run, container, git-branch, revocation, denied-log and checkpoint suites on the kernel engine"
    TMPDIR="$run_tmp" WOPFS_TEST_SHM="$run_shm" WOPFS_TEST_ENGINE=kernel WOPFS_ENGINE=kernel \
        timeout --kill-after=30s 20m cargo test --locked --features fault-injection \
        --test overlay_session --test commit_flow --test overlay_posix \
        --test run_and_containers --test docker --test git_branch --test revocation \
        --test denied_log --test checkpoints -- --test-threads=4
fi

# The switches must not exist in a build without the feature (release
# builds are built that way): their names are the only way in.
echo "==> a build without the fault-injection feature has no test switches"
cargo build --locked --bin wopfs
if grep -a -q -e WOPFS_TEST_FAULT_AFTER -e WOPFS_TEST_ERROR_AFTER -e WOPFS_TEST_HOOK_ target/debug/wopfs; then
    echo "test.sh: target/debug/wopfs built without fault-injection still has a test switch" >&2
    exit 1
fi
# And such a build ignores them: a commit with every switch set runs to its end.
timeout --kill-after=30s 10m cargo test --locked --test commit_safety -- fault_switch_is_absent_without_the_feature

# A test that leaked a mount is a bug even if it passed.
leaked=$(our_mounts)
if [ -n "$leaked" ]; then
    echo "test.sh: tests leaked wopfs mounts:" >&2
    echo "$leaked" >&2
    exit 1
fi
