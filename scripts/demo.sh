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
chmod 755 "$work"   # the agent (uid 1000) reads its script here; state/ stays 0700
host=$work/host/sample-repo
# The state dir and the mount point must be outside the host tree.
mkdir -p "$work/host" "$work/state" "$work/mnt"
cp -a "$repo_root/examples/sample-repo" "$host"
if command -v git >/dev/null; then
    # A .git dir so we can show that the default policy hides it too.
    git -C "$host" init -q
    git -C "$host" -c user.name=demo -c user.email=demo@wopfs.invalid add -A
    git -C "$host" -c user.name=demo -c user.email=demo@wopfs.invalid commit -qm "sample repo"
    secrets+=(.git)
fi
printf '   DEMO=%s\n' "$work"
say "(every wopfs command below also gets --state-dir $work/state)"
run ls -AC "$host"

step "Granting the agent a view: secrets denied by the default policy, writes only under src/ and tests/"
say "\$ wopfs grant --root $host --mode read_write_overlay --write-prefix src --write-prefix tests --purpose \"$purpose\" --ttl 30m"
grant=$(wopfs grant --root "$host" --mode read_write_overlay --write-prefix src --write-prefix tests \
    --purpose "$purpose" --reason "failing test_pay" --ttl 30m)
[[ -n "$grant" && "$grant" != *[[:space:]]* ]] || die "grant printed no usable grant id: '$grant'"
say "grant id: $grant"

# The agent: an unprivileged user (uid 1000) in a private mount namespace
# where /workspace is the view, the host tree's real path shows the view
# too, and the state dir is an empty tmpfs.
agent=$work/agent.sh
cat >"$agent" <<EOF
#!/bin/sh
# A scripted agent. It sees only /workspace; its results go to stdout.
ok() { echo "PASS: \$*"; }
bad() { echo "FAIL: \$*"; }
echo "agent: I am uid \$(id -u), working in \$(pwd)"
echo "agent: the files I was given:"; find . -type f | sort | sed 's/^/    /'
grep -n "BUG" src/payments/pay.py | sed 's/^/    /'
# Fix the rounding bug: round half up to the cent with Decimal.
python3 - <<'PY'
import re
p = "src/payments/pay.py"
s = open(p).read()
s = s.replace('"""Money arithmetic. Amounts are floats in the order currency."""\n',
              '"""Money arithmetic. Amounts are floats in the order currency."""\n\nfrom decimal import ROUND_HALF_UP, Decimal\n')
s = re.sub(r"    # BUG:.*?return int\(discounted \* 100\) / 100",
           "    cents = Decimal(str(discounted)).quantize(Decimal(\"0.01\"), rounding=ROUND_HALF_UP)\n    return float(cents)",
           s, flags=re.S)
open(p, "w").write(s)
PY
cat > tests/test_rounding.py <<'PY'
import unittest

from payments import apply_discount


class RoundingTest(unittest.TestCase):
    def test_whole_cents(self):
        self.assertEqual(apply_discount(19.99, 0), 19.99)


if __name__ == "__main__":
    unittest.main()
PY
rm src/payments/checkout.py.orig 2>/dev/null
if make -s test >/dev/null 2>&1; then ok "the tests pass after my fix"; else bad "the tests still fail"; fi
rm docs/design.md 2>/dev/null && bad "I could delete docs/design.md outside my write prefix" || ok "deleting outside src/ and tests/ is refused"
if echo x > NOTES.md 2>/dev/null; then bad "I could create NOTES.md outside my write prefix"; else ok "creating files outside src/ and tests/ is refused"; fi
# Every route to a secret I can think of:
try() { if cat "\$1" >/dev/null 2>&1; then bad "read \$1"; else ok "cannot read \$1"; fi; }
try .env
try config/.env.production
try deploy/id_rsa
try .aws/credentials
try $host/.env
try $host/deploy/id_rsa
try ../$(basename "$host")/.env
try /proc/self/root$host/.env
try /proc/1/root$host/.env
if ls $work/state/sessions >/dev/null 2>&1; then bad "I can see the state dir"; else ok "the state dir (overlays, grants) is hidden"; fi
if ln -s $host/.env src/leak 2>/dev/null && cat src/leak >/dev/null 2>&1; then bad "read .env through a symlink"; else ok "a symlink to the host's .env leads nowhere"; fi
rm -f src/leak
if grep -rq "fake-demo-key" . 2>/dev/null; then bad "found the .env key by searching the view"; else ok "searching the whole view finds no secret"; fi
EOF
chmod 755 "$agent"

step "Running the scripted agent inside 'wopfs run': it sees only the view, at /workspace"
say "\$ wopfs run $grant --allow-other --uid 1000 --gid 1000 -- setpriv --reuid 1000 --regid 1000 --clear-groups sh agent.sh"
agent_out=$(wopfs run "$grant" --allow-other --uid 1000 --gid 1000 -- \
    setpriv --reuid 1000 --regid 1000 --clear-groups sh "$agent" 2>&1) || true
printf '%s\n' "$agent_out" | sed 's/^/   /'
while IFS= read -r line; do
    case "$line" in
        PASS:*) passed=$((passed + 1)) ;;
        FAIL:*) failed=$((failed + 1)) ;;
    esac
done <<<"$agent_out"
if grep -q '^PASS: the tests pass' <<<"$agent_out"; then :; else fail "the agent's fix did not make the tests pass"; fi

step "The host tree has not changed: the agent's work waits in the overlay"
if grep -q 'return int(discounted' "$host/src/payments/pay.py" && [[ ! -e "$host/tests/test_rounding.py" ]]; then
    pass "the host tree is untouched"
else
    fail "the host tree changed before approval"
fi

step "The approver reviews the session (outside the sandbox)"
run wopfs diff "$grant" --stat
run wopfs diff "$grant"

step "The approver commits it to the host tree"
run wopfs commit "$grant" --yes --approver demo-approver

step "The changed host files"
if command -v git >/dev/null; then
    run git -C "$host" status --short
    run git -C "$host" diff --stat
fi
run cat "$host/src/payments/pay.py"
if (cd "$host" && PYTHONPATH=src python3 -m unittest discover -s tests >/dev/null 2>&1); then
    pass "the host's tests pass with the committed fix"
else
    fail "the host's tests fail after the commit"
fi

step "The audit log: every step recorded, hash chain verified"
run wopfs audit
if wopfs audit --verify; then
    pass "the audit chain verifies"
else
    fail "the audit chain does not verify"
fi

printf '\ndemo: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
