#!/usr/bin/env bash
# Compare a wopfs mount with the native directory it shows, in the same run.
#
# One temp host tree holds the test data; every workload runs once against
# the host tree directly ("native") and once through a wopfs mount of it
# ("mount"), BENCH_REPEAT times each, and the table shows the medians and
# the ratio mount/native. Nothing is asserted: timings depend on the machine.
#
# Env (defaults in brackets):
#   BENCH_LARGE_MB  size of the large file for the read workloads [1024]
#   BENCH_FILES     number of small files in the tree workloads [5000]
#   BENCH_REPEAT    timed runs per side; the median is reported [3]
#   BENCH_RANDOM_READS  4 KiB preads in the random-read workload [20000]
#   BENCH_MODE      grant mode: read_write_overlay, or read_only to run
#                   only the read workloads [read_write_overlay]
#   BENCH_SOURCES   C files in the make -j2 project [60]
#   BENCH_COMMIT_FILES  changed files in the export/commit comparison; 0 skips
#                   it [10000]
#   BENCH_TURN_FILES, BENCH_TURN_TREE  the second comparison: a usual agent
#                   turn, few changed files in a big tree; 0 skips it [200, 100000]
#   BENCH_DIR       where to create the temp dir [$TMPDIR or /tmp]
#   BENCH_WORKLOADS space-separated subset of the workloads below [all]
#   WOPFS_BIN       use this wopfs binary instead of building one
#
# Cold runs drop the kernel's page, dentry and inode caches first (needs root;
# skipped with a note otherwise) and, on the mount side, also remount so that
# the FUSE attribute and entry caches start empty. In a VM the host may still
# cache the disk, so cold numbers are noisy there: use BENCH_REPEAT=5 or more.
set -euo pipefail
shopt -s inherit_errexit   # keep set -e inside $(...), where the runs happen
export LC_ALL=C   # '.' as decimal point in $EPOCHREALTIME, awk and sort

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
large_mb=${BENCH_LARGE_MB:-1024}
nfiles=${BENCH_FILES:-5000}
repeat=${BENCH_REPEAT:-3}
nreads=${BENCH_RANDOM_READS:-20000}
mode=${BENCH_MODE:-read_write_overlay}
nsources=${BENCH_SOURCES:-60}
ncommit=${BENCH_COMMIT_FILES:-10000}
nturn=${BENCH_TURN_FILES:-200}
nturn_tree=${BENCH_TURN_TREE:-100000}

# Workloads as NAME:CACHE, run in this order. CACHE is "cold" (caches emptied
# before every timed run) or "warm" (one untimed run first).
# To add one: write bench_NAME (below), optionally prep_NAME, list it here.
all_workloads=(
    seqread:cold
    seqread:warm
    randread:cold
    randread:warm
    stat_tree:cold
    seqwrite:warm
    untar:warm
    rm_rf:warm
    make_j2:warm
)
write_workloads=" seqwrite untar rm_rf make_j2 "
read -r -a workloads <<<"${BENCH_WORKLOADS:-${all_workloads[*]}}"
[[ "${workloads[*]}" == none ]] && workloads=()   # only the commit comparisons

work=""     # temp dir holding host/, state/ and mnt/; set once created
mnt=""
grant=""
can_drop_caches=false

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench: %s\n' "$*" >&2; }

wopfs() { timeout 120 "$wopfs_bin" --state-dir "$work/state" "$@"; }

# True if $1 is a mount point (reads /proc/mounts; never touches the mount).
is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

unmount_view() {
    is_mounted "$mnt" || return 0
    wopfs umount "$mnt" >/dev/null 2>&1 \
        || fusermount3 -uz "$mnt" 2>/dev/null \
        || fusermount -uz "$mnt" 2>/dev/null \
        || umount -l "$mnt"
}

mount_view() {
    wopfs mount "$grant" "$mnt" >/dev/null
    is_mounted "$mnt" || die "wopfs mount returned but $mnt is not mounted"
}

cleanup() {
    local rc=$?
    set +e
    [[ -n "$mnt" ]] && unmount_view
    if [[ -n "$mnt" ]] && is_mounted "$mnt"; then
        note "could not unmount $mnt; left $work in place"
        rc=1
    elif [[ -n "$work" ]]; then
        rm -rf --one-file-system "$work"   # never descends into a live mount
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() {
    "$can_drop_caches" || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Empty every cache in front of SIDE's data. Not timed.
make_cold() {
    local side=$1
    if [[ "$side" == mount ]]; then
        unmount_view
        mount_view
    fi
    drop_caches
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------------------
# Workloads. bench_NAME DIR does the work once against DIR (the host tree or
# the mount point) and is timed; prep_NAME SIDE DIR, if defined, runs untimed
# before every timed run (SIDE is "native" or "mount"). The test data is made
# by setup_data before any workload runs.
# Write workloads need BENCH_MODE=read_write_overlay and should write under a
# fresh name per run (e.g. "$1/scratch.$RANDOM") so the runs do not collide.

bench_seqread() {
    dd if="$1/large.bin" of=/dev/null bs=1M status=none
}

bench_randread() {
    python3 - "$1/large.bin" "$nreads" <<'EOF'
import os, random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)  # same offsets on both sides and every run
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
for _ in range(n):
    os.pread(fd, 4096, rng.randrange(blocks) * 4096)
os.close(fd)
EOF
}

bench_stat_tree() {
    find "$1/tree" -print0 | xargs -0 stat --format='%s %Y' >/dev/null
}

# Write workloads. Each writes under scratch-* names, which its prep step
# (untimed) clears first, so the overlay does not grow run after run.

clear_scratch() { rm -rf "$1"/scratch-*; }

prep_seqwrite() { clear_scratch "$2"; }
bench_seqwrite() {
    dd if=/dev/zero of="$1/scratch-seq.bin" bs=1M count="$large_mb" status=none
}

prep_untar() { clear_scratch "$2"; }
bench_untar() {
    mkdir "$1/scratch-untar"
    tar xf "$work/small.tar" -C "$1/scratch-untar"
}

prep_rm_rf() {
    clear_scratch "$2"
    mkdir "$2/scratch-rm"
    tar xf "$work/small.tar" -C "$2/scratch-rm"
}
bench_rm_rf() { rm -rf "$1/scratch-rm"; }

prep_make_j2() {
    clear_scratch "$2"
    mkdir "$2/scratch-make"
    tar xf "$work/cproj.tar" -C "$2/scratch-make"
}
bench_make_j2() { make -s -j2 -C "$1/scratch-make/cproj"; }

# A small C project: BENCH_SOURCES files of a few functions each, one header.
make_c_project() {
    local dir=$1/cproj i
    mkdir -p "$dir"
    printf 'int twice(int x);\n' >"$dir/common.h"
    printf '#include "common.h"\nint twice(int x) { return 2 * x; }\n' >"$dir/common.c"
    for ((i = 0; i < nsources; i++)); do
        {
            printf '#include "common.h"\n'
            printf 'static int f%d_%d(int x) { return twice(x) + %d; }\n' "$i" 0 "$i" "$i" 1 "$i" "$i" 2 "$i"
            printf 'int entry%d(int x) { return f%d_0(x) + f%d_1(x) + f%d_2(x); }\n' "$i" "$i" "$i" "$i"
        } >"$dir/m$i.c"
    done
    {
        printf '#include <stdio.h>\n'
        for ((i = 0; i < nsources; i++)); do printf 'int entry%d(int);\n' "$i"; done
        printf 'int main(void) { long s = 0;\n'
        for ((i = 0; i < nsources; i++)); do printf 's += entry%d(%d);\n' "$i" "$i"; done
        printf 'printf("%%ld\\n", s); return 0; }\n'
    } >"$dir/main.c"
    printf 'SRCS := $(wildcard *.c)\nprog: $(SRCS:.c=.o)\n\tcc -o $@ $^\n%%.o: %%.c common.h\n\tcc -O1 -c -o $@ $<\n' >"$dir/Makefile"
}

# Test data, created once in the host tree (so both sides see the same files).
setup_data() {
    local host=$1
    note "writing a ${large_mb} MiB file and ${nfiles} small files under $host"
    head -c "$((large_mb * 1024 * 1024))" /dev/urandom >"$host/large.bin"
    python3 - "$host/tree" "$nfiles" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
# 10 x 10 nested dirs, files of 100..4000 bytes, like a small source tree.
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 10), "s%02d" % (i // 10 % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write(("line %d of a small file\n" % i) * (4 + i % 160))
EOF
    # Flush and read everything once, so the first timed run does not pay
    # one-off costs (writeback; in a VM, the host's own cache) the rest don't.
    # Tarballs for the write workloads live outside the host tree.
    tar cf "$work/small.tar" -C "$host" tree
    make_c_project "$work/src"
    tar cf "$work/cproj.tar" -C "$work/src" cproj
    sync
    cat "$host/large.bin" >/dev/null
    find "$host/tree" -type f -exec cat {} + >/dev/null
}

# ---------------------------------------------------------------------------
# Runner. The two sides run in turn, swapping which goes first on every
# repetition, so that drift (CPU frequency, background I/O) hits both alike.

side_dir() { if [[ "$1" == mount ]]; then echo "$mnt"; else echo "$host"; fi; }

# Time one run of workload NAME on SIDE; prints seconds.
time_once() {
    local name=$1 cache=$2 side=$3 dir t0 t1
    dir=$(side_dir "$side")
    if [[ "$cache" == cold ]]; then make_cold "$side"; fi
    if declare -F "prep_$name" >/dev/null; then "prep_$name" "$side" "$dir"; fi
    t0=$EPOCHREALTIME
    "bench_$name" "$dir" >/dev/null
    t1=$EPOCHREALTIME
    elapsed "$t0" "$t1"
}

run_workload() {
    local name=${1%%:*} cache=${1##*:} native mount ratio side i
    local native_times=() mount_times=()
    declare -F "bench_$name" >/dev/null || die "unknown workload: $1"
    if [[ "$cache" == warm ]]; then
        for side in native mount; do
            if declare -F "prep_$name" >/dev/null; then "prep_$name" "$side" "$(side_dir "$side")"; fi
            "bench_$name" "$(side_dir "$side")" >/dev/null
        done
    fi
    for ((i = 0; i < repeat; i++)); do
        if ((i % 2 == 0)); then
            native_times+=("$(time_once "$name" "$cache" native)")
            mount_times+=("$(time_once "$name" "$cache" mount)")
        else
            mount_times+=("$(time_once "$name" "$cache" mount)")
            native_times+=("$(time_once "$name" "$cache" native)")
        fi
    done
    native=$(printf '%s\n' "${native_times[@]}" | median)
    mount=$(printf '%s\n' "${mount_times[@]}" | median)
    ratio=$(awk -v n="$native" -v m="$mount" 'BEGIN { if (n > 0) printf "%.2fx", m / n; else print "n/a" }')
    printf '%-22s %12.4f %12.4f %8s\n' "$name ($cache)" "$native" "$mount" "$ratio"
}

# ---------------------------------------------------------------------------
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ -n "${EPOCHREALTIME:-}" ]] || die "needs bash 5 or newer (for \$EPOCHREALTIME)"
command -v python3 >/dev/null || die "python3 is needed for the random-read workload"

if [[ -n "${WOPFS_BIN:-}" ]]; then
    wopfs_bin=$WOPFS_BIN
else
    (cd "$repo_root" && cargo build --release --quiet)
    wopfs_bin=$repo_root/target/release/wopfs
fi
[[ -x "$wopfs_bin" ]] || die "no wopfs binary at $wopfs_bin"

if [[ -w /proc/sys/vm/drop_caches ]] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    can_drop_caches=true
else
    note "cannot write /proc/sys/vm/drop_caches (not root?): cold runs only remount, the page cache stays warm"
fi

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/wopfs-bench.XXXXXX")
host=$work/host
mnt=$work/mnt
mkdir -p "$host" "$work/state" "$mnt"

if commit=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null); then
    if [[ -n "$(git -C "$repo_root" status --porcelain 2>/dev/null)" ]]; then commit+="-dirty"; fi
else
    commit="none yet"
fi
printf 'wopfs:   %s (commit %s)\n' "$("$wopfs_bin" --version 2>/dev/null || echo "version unknown")" "$commit"
printf 'kernel:  %s, %s CPUs, data on %s\n' "$(uname -r)" "$(nproc)" "$(stat -f -c %T "$host")"
printf 'sizes:   large file %s MiB, %s small files, %s random reads, median of %s, mode %s\n\n' \
    "$large_mb" "$nfiles" "$nreads" "$repeat" "$mode"

setup_data "$host"
grant=$(wopfs grant --root "$host" --mode "$mode" --purpose "wopfs benchmark" --ttl 12h)
mount_view
# The comparison only means something if the view shows all the data.
native_n=$(find "$host" | wc -l)
mount_n=$(find "$mnt" | wc -l)
((native_n == mount_n)) || die "the view shows $mount_n entries, the host tree $native_n: check the grant/policy"

printf '%-22s %12s %12s %8s\n' workload native_s mount_s ratio
for w in "${workloads[@]}"; do
    if [[ "$mode" == read_only && "$write_workloads" == *" ${w%%:*} "* ]]; then
        note "skipping ${w%%:*}: it writes, and BENCH_MODE is read_only"
        continue
    fi
    run_workload "$w"
done

# ---------------------------------------------------------------------------
# Export and commit of a session, against `cp -a` of the same new contents
# over a copy of the same tree plus `sync` (what an approver would otherwise
# do by hand). Each repetition uses a fresh tree and grant. Two shapes: a
# big set (every file of a tree changed), and a usual agent turn (a few
# changed files in a big repository).

commit_tree() {   # DIR PREFIX N: N files in 100 dirs
    python3 - "$1" "$3" "$2" <<'EOF'
import os, sys
root, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    d = os.path.join(root, "c%02d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write(("%s line %d\n" % (prefix, i)) * (8 + i % 64))
EOF
}

bench_commit_set() {   # CHANGED TREE: CHANGED of TREE files get new contents
    local nchanged=$1 ntree=$2
    local i cw cm export_times=() commit_times=() cp_times=() t0 t1
    for ((i = 0; i < repeat; i++)); do
        cw=$work/commit.$i
        mkdir -p "$cw/host" "$cw/mnt" "$cw/new" "$cw/native"
        commit_tree "$cw/host" old "$ntree"
        commit_tree "$cw/new" new "$nchanged"
        cp -a "$cw/host/." "$cw/native/"
        cm=$(wopfs grant --root "$cw/host" --mode read_write_overlay --purpose "commit benchmark" --ttl 12h)
        wopfs mount "$cm" "$cw/mnt" >/dev/null
        cp -r "$cw/new/." "$cw/mnt/"          # the agent's edits (untimed)
        wopfs umount "$cw/mnt" >/dev/null
        drop_caches
        t0=$EPOCHREALTIME
        wopfs export "$cm" -o "$cw/set" >/dev/null
        t1=$EPOCHREALTIME
        export_times+=("$(elapsed "$t0" "$t1")")
        drop_caches
        t0=$EPOCHREALTIME
        wopfs commit "$cm" --yes >/dev/null
        t1=$EPOCHREALTIME
        commit_times+=("$(elapsed "$t0" "$t1")")
        drop_caches
        t0=$EPOCHREALTIME
        cp -a "$cw/new/." "$cw/native/"
        sync
        t1=$EPOCHREALTIME
        cp_times+=("$(elapsed "$t0" "$t1")")
        diff -r "$cw/host" "$cw/native" >/dev/null \
            || die "after the commit the host differs from the cp -a copy"
        rm -rf --one-file-system "$cw"
    done
    local cp export commit
    cp=$(printf '%s\n' "${cp_times[@]}" | median)
    export=$(printf '%s\n' "${export_times[@]}" | median)
    commit=$(printf '%s\n' "${commit_times[@]}" | median)
    printf '\n%-30s %12s %12s %8s\n' "$nchanged changed of $ntree files" cp_a_s wopfs_s ratio
    printf '%-30s %12.4f %12.4f %8s\n' export "$cp" "$export" "$(awk -v n="$cp" -v m="$export" 'BEGIN { printf "%.2fx", m / n }')"
    printf '%-30s %12.4f %12.4f %8s\n' commit "$cp" "$commit" "$(awk -v n="$cp" -v m="$commit" 'BEGIN { printf "%.2fx", m / n }')"
}

if [[ "$mode" != read_only ]]; then
    if ((ncommit > 0)); then bench_commit_set "$ncommit" "$ncommit"; fi
    if ((nturn > 0)); then bench_commit_set "$nturn" "$nturn_tree"; fi
fi
