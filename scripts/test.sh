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
echo "==> cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
# Each mount test tears itself down after a deadline; the outer timeout is
# the last guard against a hung FUSE request.
timeout --kill-after=30s 40m cargo test --locked -- --test-threads=4

# A test that leaked a mount is a bug even if it passed.
leaked=$(comm -13 <(echo "$before") <(wopfs_mounts))
if [ -n "$leaked" ]; then
    echo "test.sh: tests leaked wopfs mounts:" >&2
    echo "$leaked" >&2
    exit 1
fi
