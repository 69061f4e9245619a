#!/usr/bin/env bash
# The denied-access log's cost: lookup storms through a writable view, of
# granted names, of names the grant hides (each one logged) and of names
# the host does not have (each costing the view one host lstat beneath the
# root, which tells it from a hidden one). Every name is looked up once,
# so the kernel's entry cache never answers for the daemon.
#
#   scripts/bench/denied.sh [N [ROUNDS]]
#
# With several binaries (WOPFS_BINS="old/wopfs new/wopfs", e.g. one built
# before the log existed), each serves its own view of the same host tree
# and the rounds alternate between them, so a loaded machine's noise hits
# all alike. Prints µs per lookup: the fastest round (the better estimate
# on a busy machine) and the median. Env: WOPFS_BINS [target/release/wopfs],
# DENIED_ENGINE [fuse] (kernel needs root).
set -euo pipefail
export LC_ALL=C
n=${1:-16000}
rounds=${2:-8}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
read -r -a bins <<<"${WOPFS_BINS:-$repo_root/target/release/wopfs}"
engine=${DENIED_ENGINE:-fuse}
work=$(mktemp -d "${TMPDIR:-/tmp}/wopfs-denied-bench.XXXXXX")
mps=()
cleanup() {
    for i in "${!mps[@]}"; do
        WOPFS_STATE_DIR=$work/state$i "${bins[$i]}" umount "${mps[$i]}" >/dev/null 2>&1 ||
            umount -l "${mps[$i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/host/ok" "$work/host/hidden"
python3 - "$work/host" "$n" <<'EOF'
import sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open(f"{root}/ok/f{i}.txt", "w").close()
    open(f"{root}/hidden/f{i}.key", "w").close()   # *.key: a builtin deny
open(f"{root}/hidden/README", "w").close()           # so hidden/ shows
EOF
for i in "${!bins[@]}"; do
    [[ -x "${bins[$i]}" ]] || { echo "no ${bins[$i]}: cargo build --release first" >&2; exit 1; }
    export WOPFS_STATE_DIR=$work/state$i
    g=$("${bins[$i]}" grant --root "$work/host" --purpose bench --allow '**' \
        --mode read_write_overlay --max-files $((2 * n + 10)))
    mkdir -p "$work/mp$i"
    "${bins[$i]}" mount "$g" "$work/mp$i" --engine "$engine" >/dev/null
    mps+=("$work/mp$i")
done
python3 - "$n" "$rounds" "${bins[@]}" -- "${mps[@]}" <<'EOF'
import os, sys, time
n, rounds = int(sys.argv[1]), int(sys.argv[2])
rest = sys.argv[3:]
sep = rest.index("--")
bins, mps = rest[:sep], rest[sep + 1:]
kinds = {"granted": ("ok", "f", ".txt"), "hidden": ("hidden", "f", ".key"), "absent": ("ok", "none", ".txt")}
per = n // rounds
res = {}
for r in range(rounds):
    order = list(range(len(mps)))
    if r % 2:
        order.reverse()
    for i in order:
        for kind, (d, pre, suf) in kinds.items():
            names = [f"{mps[i]}/{d}/{pre}{j}{suf}" for j in range(r * per, (r + 1) * per)]
            t = time.perf_counter()
            for p in names:
                try:
                    os.stat(p)
                except FileNotFoundError:
                    pass
            res.setdefault((i, kind), []).append((time.perf_counter() - t) / per * 1e6)
print("| binary | " + " | ".join(f"{k} names" for k in kinds) + " |")
print("|---" * (len(kinds) + 1) + "|")
for i, b in enumerate(bins):
    cells = []
    for k in kinds:
        v = sorted(res[(i, k)])
        cells.append(f"{v[0]:.1f} ({v[len(v) // 2]:.1f}) µs")
    print(f"| {b} | " + " | ".join(cells) + " |")
EOF
