#!/usr/bin/env bash
# A short, narrated tour of wopfs on the sample repo in examples/sample-repo.
#
# Builds wopfs, copies the sample repo to a temp dir (the "host tree"),
# grants an agent a read-only view of it, mounts that view and shows what the
# agent can and cannot see or do. Every check that fails is reported and
# makes the script exit non-zero. The mount and temp files are always removed
# on exit, even after a failure or Ctrl-C.
#
# Needs: Linux, /dev/fuse, root (or a user allowed to mount FUSE), cargo.
# Env:   WOPFS_BIN=path  use this wopfs binary instead of building one.
set -euo pipefail
export LC_ALL=C

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
purpose="Fix the rounding bug in payments"
# Files of the sample repo that the default policy must hide.
secrets=(.env config/.env.production deploy/id_rsa deploy/server.pem .aws/credentials)

passed=0
failed=0
work=""    # temp dir holding host/, state/ and mnt/; set once created
mnt=""

step() { printf '\n==> %s\n' "$*"; }
pass() { printf 'PASS: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; failed=$((failed + 1)); }
die()  { printf 'demo: %s\n' "$*" >&2; exit 1; }

# Print text indented, with the temp dir shortened to $DEMO.
say() { local text="$*"; printf '   %s\n' "${text//"$work"/\$DEMO}"; }
# Show a command, then run it.
run() { say "\$ $*"; "$@"; }

wopfs() { timeout 60 "$wopfs_bin" --state-dir "$work/state" "$@"; }

# True if $1 is a mount point. Reads /proc/mounts rather than calling stat(),
# which could hang or fail on a broken FUSE mount.
is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$mnt" ]] && is_mounted "$mnt"; then
        wopfs umount "$mnt" >/dev/null 2>&1 \
            || fusermount3 -uz "$mnt" 2>/dev/null \
            || fusermount -uz "$mnt" 2>/dev/null \
            || umount -l "$mnt"
    fi
    if [[ -n "$mnt" ]] && is_mounted "$mnt"; then
        printf 'demo: could not unmount %s; left %s in place\n' "$mnt" "$work" >&2
        rc=1
    elif [[ -n "$work" ]]; then
        # --one-file-system: never descend into a mount that is still there.
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ "$(uname -s)" == Linux ]] || die "wopfs needs Linux (FUSE)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing: load the fuse module or run the container with --device /dev/fuse"

if [[ -n "${WOPFS_BIN:-}" ]]; then
    wopfs_bin=$WOPFS_BIN
else
    step "Building wopfs (cargo build --release; the first build takes a minute or two)"
    command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
    (cd "$repo_root" && cargo build --release --quiet)
    wopfs_bin=$repo_root/target/release/wopfs
fi
[[ -x "$wopfs_bin" ]] || die "no wopfs binary at $wopfs_bin"

step "Copying the sample repo to a temp dir; this copy is the 'host tree' (the real files)"
work=$(mktemp -d "${TMPDIR:-/tmp}/wopfs-demo.XXXXXX")
host=$work/host/sample-repo
# The state dir and the mount point must be outside the host tree.
mkdir -p "$work/host" "$work/state" "$work/mnt"
cp -a "$repo_root/examples/sample-repo" "$host"
if command -v git >/dev/null; then
    # A .git dir so we can show that the default policy hides it too.
    git -C "$host" init -q
    secrets+=(.git)
fi
printf '   DEMO=%s\n' "$work"
say "(every wopfs command below also gets --state-dir $work/state)"
run ls -AC "$host"

step "Granting a read-only view of the sample repo (secrets denied by the default policy)"
say "\$ wopfs grant --root $host --mode read_only --purpose \"$purpose\" --ttl 30m"
grant=$(wopfs grant --root "$host" --mode read_only --purpose "$purpose" --ttl 30m)
[[ -n "$grant" && "$grant" != *[[:space:]]* ]] || die "grant printed no usable grant id: '$grant'"
say "grant id: $grant"

step "Mounting the granted view at \$DEMO/mnt (this is the directory the agent works in)"
mnt=$work/mnt
run wopfs mount "$grant" "$mnt"
if is_mounted "$mnt"; then
    pass "the view is mounted"
else
    die "wopfs mount returned but $mnt is not a mount point"
fi

step "Listing everything the agent can see"
say "\$ cd $mnt && find . | sort"
(cd "$mnt" && find . -mindepth 1 | sort)

step "Reading a file through the view: it is the real file from the host tree"
run cat "$mnt/src/payments/pay.py"
if cmp -s "$host/src/payments/pay.py" "$mnt/src/payments/pay.py"; then
    pass "src/payments/pay.py reads the same through the view as on the host"
else
    fail "src/payments/pay.py differs between the view and the host"
fi

step "Checking that the secrets are invisible (they do exist in the host tree)"
say "\$ cd $mnt && ls -AC . deploy config"
(cd "$mnt" && ls -AC . deploy config)
for s in "${secrets[@]}"; do
    [[ -e "$host/$s" ]] || die "sample repo is missing $s"
    if [[ -e "$mnt/$s" || -L "$mnt/$s" ]]; then
        fail "$s is visible in the view"
    elif [[ -n "$(find "$mnt/$(dirname "$s")" -mindepth 1 -maxdepth 1 -name "$(basename "$s")" 2>/dev/null)" ]]; then
        fail "$s shows up in the directory listing"
    else
        pass "$s is hidden"
    fi
done
say "\$ cat $mnt/.env"
if err=$(cat "$mnt/.env" 2>&1); then
    fail "cat .env succeeded"
elif say "$err" && [[ "$err" == *"No such file or directory"* ]]; then
    pass "cat .env fails with 'No such file or directory', as if it did not exist"
else
    fail "cat .env failed, but not with 'No such file or directory': $err"
fi

step "Trying to write: the view is read-only, so the host tree cannot change"
for target in "$mnt/NOTES.md" "$mnt/src/payments/pay.py"; do
    say "\$ echo '# agent was here' | tee -a $target"
    if err=$(echo "# agent was here" | tee -a "$target" 2>&1 >/dev/null); then
        fail "writing ${target#"$mnt"/} succeeded"
    elif say "$err" && [[ "$err" == *"Read-only file system"* ]]; then
        pass "writing ${target#"$mnt"/} fails with 'Read-only file system'"
    else
        fail "writing ${target#"$mnt"/} failed, but not with 'Read-only file system': $err"
    fi
done
if [[ -e "$host/NOTES.md" ]] || ! cmp -s "$host/src/payments/pay.py" "$repo_root/examples/sample-repo/src/payments/pay.py"; then
    fail "the host tree was modified"
else
    pass "the host tree is unchanged"
fi

step "Showing the grants wopfs knows about (purpose, mode, expiry)"
run wopfs status

step "Unmounting the view"
run wopfs umount "$mnt"
if is_mounted "$mnt"; then
    fail "the view is still mounted after wopfs umount"   # cleanup() retries
else
    pass "the view is unmounted"
fi

printf '\ndemo: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
