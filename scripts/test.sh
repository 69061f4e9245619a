#!/usr/bin/env bash
# The test command (README, CI): formatting, lints, then every test,
# including the ones that really mount (root and /dev/fuse required).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -c /dev/fuse ]; then
    echo "test.sh: /dev/fuse is missing; the mount tests need FUSE (modprobe fuse)" >&2
    exit 1
fi

wopfs_mounts() { awk '$1 ~ /^wopfs:/ {print $2}' /proc/mounts | sort; }
before=$(wopfs_mounts)

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings (as shipped, and with the test switches)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features fault-injection -- -D warnings
echo "==> cargo test"
# Each mount test tears itself down after a deadline; the outer timeout is
# the last guard against a hung FUSE request. The crash tests need the
# commit's test-only switches (cargo feature fault-injection).
timeout --kill-after=30s 40m cargo test --locked --features fault-injection -- --test-threads=4

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
leaked=$(comm -13 <(echo "$before") <(wopfs_mounts))
if [ -n "$leaked" ]; then
    echo "test.sh: tests leaked wopfs mounts:" >&2
    echo "$leaked" >&2
    exit 1
fi
