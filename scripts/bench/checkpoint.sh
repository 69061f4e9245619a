#!/usr/bin/env bash
# Checkpoint and undo timings (issue 13's goals: a checkpoint of a 100-file
# turn under 50 ms, an undo under 200 ms, in a 100,000-file tree; and the
# same turn in a session that has changed 10,000 files).
#
#   scripts/bench/checkpoint.sh [FILES [ROUNDS]]
#
# A host tree of FILES files (default 100000, 1 KiB each, 100 per
# directory) is granted and mounted as an overlay view. Each round is one
# agent turn of 100 files (50 edited host files, 50 new ones) and then
# `wopfs checkpoint` (what an orchestrator runs before the next turn), and
# another turn of 100 files followed by `wopfs undo` to that checkpoint.
# Then the session changes 10,000 files and the same rounds run again.
# Times are wall clock of the wopfs command (process start and the round
# trip to the daemon included) and, in brackets, the serving process's own
# time. The native reference, in the same run: a copy (data, mode, times;
# Python's shutil.copy2, in process) of the turn's 100 files on the native
# disk, the least an orchestrator copying the turn itself would pay; and
# the turn itself written to a native directory.
# Env: WOPFS_BIN [target/release/wopfs], CKPT_ENGINES [fuse, plus kernel
# as root].
set -euo pipefail
export LC_ALL=C
files=${1:-100000}
rounds=${2:-5}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${WOPFS_BIN:-$repo_root/target/release/wopfs}
[[ -x "$bin" ]] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
if [[ -n "${CKPT_ENGINES:-}" ]]; then
    read -r -a engines <<<"$CKPT_ENGINES"
elif [[ $(id -u) == 0 ]]; then
    engines=(fuse kernel)
else
    engines=(fuse)
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/wopfs-ckpt-bench.XXXXXX")
mps=()
cleanup() {
    for mp in "${mps[@]}"; do
        WOPFS_STATE_DIR=$work/state "$bin" umount "$mp" >/dev/null 2>&1 || umount -l "$mp" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
echo "making a host tree of $files files..." >&2
python3 - "$work/host" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
data = b"x" * 1000 + b"\n"
for i in range(n):
    d = f"{root}/d{i // 100:05d}"
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i % 100:02d}.txt", "wb") as f:
        f.write(data)
EOF
cp -a "$work/host" "$work/native"
export WOPFS_STATE_DIR=$work/state
for engine in "${engines[@]}"; do
    g=$("$bin" grant --root "$work/host" --purpose bench --allow '**' --mode read_write_overlay \
        --max-files $((files + 50000)) --ttl 12h)
    mp=$work/mnt-$engine
    mkdir -p "$mp"
    "$bin" mount "$g" "$mp" --engine "$engine" >/dev/null
    mps+=("$mp")
    python3 - "$bin" "$g" "$mp" "$work/native" "$engine" "$rounds" "$files" <<'EOF'
import json, os, shutil, statistics, subprocess, sys, time
bin_, g, mp, native, engine, rounds, files = sys.argv[1:8]
rounds, files = int(rounds), int(files)
dirs = files // 100
counter = [0]

def turn(root, n=100, tag="t"):
    """n changed files: half edits of host files, half new files."""
    counter[0] += 1
    k = counter[0]
    paths = []
    for j in range(n // 2):
        i = (k * 7919 + j * 104729) % files
        p = f"{root}/d{i // 100:05d}/f{i % 100:02d}.txt"
        with open(p, "ab") as f:
            f.write(f"{tag}{k}\n".encode())
        paths.append(p)
        q = f"{root}/d{(k * 31 + j) % dirs:05d}/new-{tag}{k}-{j}.txt"
        with open(q, "wb") as f:
            f.write(b"new\n" * 64)
        paths.append(q)
    return paths

def wopfs(*args):
    t = time.perf_counter()
    out = subprocess.run([bin_, *args, "--json"], check=True, capture_output=True, text=True).stdout
    return (time.perf_counter() - t) * 1e3, json.loads(out)

def native_copy(paths):
    dst = f"{native}.snap"
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    for p in paths:
        rel = os.path.relpath(p, native)
        os.makedirs(os.path.dirname(f"{dst}/{rel}"), exist_ok=True)
        shutil.copy2(p, f"{dst}/{rel}")
    return (time.perf_counter() - t) * 1e3

def rounds_of(label):
    ck, ck_in, un, un_in, nat, natw = [], [], [], [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        npaths = turn(native)
        natw.append((time.perf_counter() - t) * 1e3)
        nat.append(native_copy(npaths))
        turn(mp)
        ms, c = wopfs("checkpoint", g)
        ck.append(ms); ck_in.append(c["ms"])
        turn(mp)
        ms, u = wopfs("undo", g, "--to", c["id"])
        un.append(ms); un_in.append(u["ms"])
    med = statistics.median
    print(f"| {engine} | {label} | {med(ck):.1f} ({med(ck_in):.1f}) | {med(un):.1f} ({med(un_in):.1f}) "
          f"| {med(nat):.1f} | {med(natw):.1f} | {med(ck) / med(nat):.1f}x | {med(un) / med(nat):.1f}x |")
    sys.stdout.flush()

print(f"| engine | session | checkpoint ms (daemon) | undo ms (daemon) | native cp of the turn ms | native turn ms | checkpoint/native cp | undo/native cp |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
rounds_of(f"100-file turns, {files} files granted")
# A session that has changed 10,000 files, then the same turns.
for j in range(100):
    turn(mp, 100, "s")
ms, c = wopfs("checkpoint", g)
print(f"| {engine} | first checkpoint of a 10,000-file session | {ms:.1f} ({c['ms']:.1f}) | | | | | |")
rounds_of("100-file turns in a 10,000-file session")
EOF
    "$bin" umount "$mp" >/dev/null
done
