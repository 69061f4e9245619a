#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Compare the engines of a writable wopfs view with native directories, in
# one interleaved run.
#
# One temp host tree holds the test data. Every round runs every workload
# on every engine in turn (native, native-img, kernel, fuse: see
# scripts/bench/engines.sh), rotating which engine goes first, so load
# changes hit all alike. The tables (markdown, to paste into an issue) show
# the median time of each, time / native, and for the views time /
# native-img; then the daemon's RSS per granted file, then export and
# commit against cp -a. Nothing is asserted: timings depend on the machine.
#
# Env (defaults in brackets):
#   BENCH_ENGINES   space-separated engines, in order: native, native-img,
#                   kernel, fuse, ro [native native-img kernel fuse]
#   BENCH_ROUNDS    rounds; the median is reported [5] (BENCH_REPEAT: the
#                   older name)
#   BENCH_SCALE     multiplies every size below that is not set itself
#                   (but the C files), e.g. 0.05 for a quick run [1]
#   BENCH_LARGE_MB  size of the large file for the read and write workloads [1024]
#   BENCH_FILES     small files in the tree workloads [20000]
#   BENCH_CP_FILES  files in the source tree that cp -a copies [5000]
#   BENCH_RANDOM_READS  4 KiB preads in the random-read workload [20000]
#   BENCH_SOURCES   C files in the make -j2 project [60]
#   BENCH_COMMIT_FILES  changed files in the export/commit comparison; 0 skips
#                   it [10000]
#   BENCH_TURN_FILES, BENCH_TURN_TREE  the second comparison: a usual agent
#                   turn, few changed files in a big tree; 0 skips it [200, 100000]
#   BENCH_MODE      read_only: only the read workloads, on native and a
#                   read-only view (engine ro), no commits [read_write_overlay]
#   BENCH_WORKLOADS space-separated subset of the workloads below, or
#                   "none" for only the commit comparisons [all]
#   BENCH_QUOTA_BYTES, BENCH_QUOTA_FILES  the writable views' quotas (and so
#                   the kernel engine's image size) [large file + 1 GiB,
#                   2 x (small files + source tree) + 10000]
#   BENCH_MOUNT_ARGS  extra arguments for every wopfs mount (e.g. --threads 8)
#   BENCH_DIR       where to create the temp dir [$TMPDIR or /tmp]
#   WOPFS_BIN       use this wopfs binary instead of building one (release)
#
# Cold runs drop the kernel's page, dentry and inode caches first (needs
# root; skipped with a note otherwise) and remount a view, so that the FUSE
# attribute and entry caches start empty. Every timed run starts after a
# sync, so earlier runs' writeback is not counted. In a VM the host may
# still cache the disk, so cold numbers are noisy there.
set -euo pipefail
shopt -s inherit_errexit   # keep set -e inside $(...)
export LC_ALL=C            # '.' as decimal point in $EPOCHREALTIME, awk and sort

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo_root/scripts/bench/lib.sh"
# shellcheck source=bench/engines.sh
source "$repo_root/scripts/bench/engines.sh"
# shellcheck source=bench/workloads.sh
source "$repo_root/scripts/bench/workloads.sh"
# shellcheck source=bench/report.sh
source "$repo_root/scripts/bench/report.sh"
# shellcheck source=bench/commit.sh
source "$repo_root/scripts/bench/commit.sh"

scale=${BENCH_SCALE:-1}
awk -v s="$scale" 'BEGIN { exit !(s ~ /^[0-9]*\.?[0-9]+$/ && s > 0) }' \
    || die "BENCH_SCALE must be a positive number, not '$scale'"
# SIZE VAR DEFAULT: VAR if set, else DEFAULT scaled.
size_var() { if [[ -n "${!1:-}" ]]; then count_var "$1" 0; else scaled "$2"; fi; }
large_mb=$(size_var BENCH_LARGE_MB 1024)
nfiles=$(size_var BENCH_FILES 20000)
ncp=$(size_var BENCH_CP_FILES 5000)
nreads=$(size_var BENCH_RANDOM_READS 20000)
nsources=$(count_var BENCH_SOURCES 60)
ncommit=$(size_var BENCH_COMMIT_FILES 10000)
nturn=$(size_var BENCH_TURN_FILES 200)
nturn_tree=$(size_var BENCH_TURN_TREE 100000)
rounds=$(count_var BENCH_ROUNDS "${BENCH_REPEAT:-5}")
((rounds > 0)) || die "BENCH_ROUNDS must be at least 1"
for v in BENCH_LARGE_MB:large_mb BENCH_FILES:nfiles BENCH_CP_FILES:ncp BENCH_RANDOM_READS:nreads BENCH_SOURCES:nsources; do
    n=${v#*:}
    ((${!n} > 0)) || die "${v%%:*} must be at least 1"
done

mode=${BENCH_MODE:-read_write_overlay}
case $mode in
    read_write_overlay) default_engines="native native-img kernel fuse" ;;
    read_only) default_engines="native ro" ;;
    *) die "BENCH_MODE must be read_write_overlay or read_only, not '$mode'" ;;
esac
read -r -a engines <<<"${BENCH_ENGINES:-$default_engines}"
((${#engines[@]})) || die "BENCH_ENGINES is empty"
for e in "${engines[@]}"; do
    [[ "$known_engines" == *" $e "* ]] || die "unknown engine '$e' in BENCH_ENGINES (known:${known_engines% })"
    if [[ "$mode" == read_only ]] && is_view "$e" && can_write "$e"; then
        die "BENCH_MODE=read_only has no writable views: leave $e out of BENCH_ENGINES"
    fi
done
has_engine native || note "native is not in BENCH_ENGINES: no ratios to native"

# Workloads as NAME:CACHE, run in this order. CACHE is "cold" (caches
# emptied before every timed run) or "warm" (caches as they are; a read
# workload also runs once untimed just before).
all_workloads=(
    seqread:cold
    seqread:warm
    randread:cold
    randread:warm
    stat_tree:cold
    grep_r:cold
    seqwrite:warm
    untar:warm
    rm_rf:warm
    cp_a:warm
    make_j2:warm
)
read -r -a workloads <<<"${BENCH_WORKLOADS:-${all_workloads[*]}}"
[[ "${workloads[*]}" == none ]] && workloads=()
for w in "${workloads[@]}"; do
    [[ "$w" == *:cold || "$w" == *:warm ]] || die "workload '$w' needs :cold or :warm (e.g. $w:warm)"
    declare -F "bench_${w%%:*}" >/dev/null || die "unknown workload '${w%%:*}' in BENCH_WORKLOADS"
done

# The writable views' quotas (and so the kernel engine's image size): room
# for the largest scratch set of one workload, plus headroom.
quota_bytes=$(count_var BENCH_QUOTA_BYTES "$(((large_mb + 1024) * 1024 * 1024))")
quota_files=$(count_var BENCH_QUOTA_FILES "$((2 * nfiles + 2 * ncp + 10000))")

work=""          # temp dir holding everything; set once created
can_drop_caches=false

cleanup() {
    local rc=$? e mp
    set +e
    [[ -n "$work" ]] || exit "$rc"
    for e in "${engines[@]}"; do is_view "$e" && unmount_view "$e"; done
    # What is left: the native-img image, a commit comparison's view, a
    # layer the kernel engine did not take down.
    for mp in $(mounts_under "$work"); do umount "$mp" 2>/dev/null || umount -l "$mp"; done
    if [[ -n "$(mounts_under "$work")" ]]; then
        note "could not unmount everything under $work; left it in place"
        rc=1
    else
        rm -rf --one-file-system "$work"   # never descends into a live mount
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs CMD... in a subshell with set -e (it stops at its first failure);
# its status in attempt_rc, its stderr in $work/err. Returns 0 so that a
# failing workload is recorded, not fatal; never call it in a condition
# (set -e is off there, also in subshells).
attempt() {
    set +e
    ("$@") >/dev/null 2>"$work/err"
    attempt_rc=$?
    set -e
}

# One timed run of workload W (NAME:CACHE) on ENGINE in round ROUND.
run_one() {
    local w=$1 engine=$2 round=$3 name=${1%%:*} cache=${1##*:} dir t0 t1
    dir=$(engine_dir "$engine")
    if is_write_workload "$name" && ! can_write "$engine"; then return 0; fi
    [[ "$cache" == cold ]] && make_cold "$engine"
    if declare -F "prep_$name" >/dev/null; then
        attempt "prep_$name" "$dir"
        ((attempt_rc == 0)) || { run_failed "$w" "$engine" "$round" "preparing: $(head -n1 "$work/err")"; return 0; }
    fi
    if [[ "$cache" == warm ]] && ! is_write_workload "$name"; then
        attempt "bench_$name" "$dir"
    fi
    # Earlier runs' writeback is not this run's cost.
    sync
    t0=$EPOCHREALTIME
    attempt "bench_$name" "$dir"
    t1=$EPOCHREALTIME
    if ((attempt_rc != 0)); then
        run_failed "$w" "$engine" "$round" "$(head -n1 "$work/err")"
        return 0
    fi
    record_time "$w" "$engine" "$(elapsed "$t0" "$t1")"
    note "round $((round + 1))/$rounds: $w on $engine: $(elapsed "$t0" "$t1") s"
}

run_failed() {
    note "round $(($3 + 1))/$rounds: $1 on $2 FAILED: $4"
    record_failure "$@"
    # Leave no half-written scratch for the next workload on this engine.
    if can_write "$2"; then attempt clear_scratch "$(engine_dir "$2")"; fi
}

# ENGINES rotated left by N.
rotated() {
    local n=$(($1 % ${#engines[@]}))
    printf '%s\n' "${engines[@]:n}" "${engines[@]:0:n}"
}

# ---------------------------------------------------------------------------
[[ -n "${EPOCHREALTIME:-}" ]] || die "needs bash 5 or newer (for \$EPOCHREALTIME)"
command -v python3 >/dev/null || die "python3 is needed (data generation, random reads)"
if has_engine native-img; then
    command -v mkfs.ext4 >/dev/null || die "native-img needs mkfs.ext4 (e2fsprogs)"
    [[ $EUID -eq 0 ]] || die "native-img loop-mounts an image: run as root, or leave it out of BENCH_ENGINES"
fi
needs_wopfs=false
for e in "${engines[@]}"; do is_view "$e" && needs_wopfs=true; done
if [[ "$mode" != read_only ]] && ((ncommit > 0 || nturn > 0)); then needs_wopfs=true; fi

if "$needs_wopfs"; then
    [[ -c /dev/fuse ]] || die "/dev/fuse is missing"
    if [[ -n "${WOPFS_BIN:-}" ]]; then
        wopfs_bin=$WOPFS_BIN
    else
        (cd "$repo_root" && cargo build --release --quiet)
        wopfs_bin=$repo_root/target/release/wopfs
    fi
    [[ -x "$wopfs_bin" ]] || die "no wopfs binary at $wopfs_bin"
else
    wopfs_bin=/nonexistent
fi

if [[ -w /proc/sys/vm/drop_caches ]] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    can_drop_caches=true
else
    note "cannot write /proc/sys/vm/drop_caches (not root?): cold runs only remount, the page cache stays warm"
fi

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/wopfs-bench.XXXXXX")
host=$work/host
mkdir -p "$host" "$work/state"

if commit=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null); then
    if [[ -n "$(git -C "$repo_root" status --porcelain 2>/dev/null)" ]]; then commit+="-dirty"; fi
else
    commit="none yet"
fi

setup_data "$host"
for e in "${engines[@]}"; do
    note "setting up $e"
    setup_engine "$e"
done

printf '## wopfs benchmark\n\n'
printf -- '- wopfs: %s (commit %s)\n' "$("$wopfs_bin" --version 2>/dev/null || echo "not used")" "$commit"
printf -- '- machine: kernel %s, %s CPUs, %s MiB RAM, load %s\n' "$(uname -r)" "$(nproc)" \
    "$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf -- '- sizes: large file %s MiB, %s small files, %s-file source tree, %s random reads, %s C files\n' \
    "$large_mb" "$nfiles" "$ncp" "$nreads" "$nsources"
printf -- '- median of %s interleaved rounds; engines %s; view quotas %s MiB, %s files\n\n' \
    "$rounds" "${engines[*]}" "$((quota_bytes >> 20))" "$quota_files"
printf 'File systems:\n\n'
print_file_systems
printf '\n'

for ((round = 0; round < rounds; round++)); do
    for i in "${!workloads[@]}"; do
        mapfile -t order < <(rotated "$((round + i))")
        for e in "${order[@]}"; do run_one "${workloads[i]}" "$e" "$round"; done
    done
done

if ((${#workloads[@]})); then
    printf '### Time, seconds (median of %s) and ratios\n\n' "$rounds"
    print_table
fi
if has_engine kernel || has_engine fuse || has_engine ro; then
    printf '\n### Daemon memory\n\n'
    print_rss
fi
[[ "$mode" == read_only ]] || print_commit_sets
