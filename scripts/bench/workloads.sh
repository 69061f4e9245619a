# shellcheck shell=bash
# Workloads of scripts/bench.sh and the test data they use. Sourced by
# bench.sh, never run on its own.
#
# bench_NAME DIR does the work once against DIR (an engine's directory) and
# is timed; prep_NAME DIR, if defined, runs untimed before every timed run.
# Both run in a subshell with `set -e`; a failure is reported in the table,
# not fatal. setup_data makes the data once, before any engine is set up.
# Write workloads (listed in write_workloads) write under scratch-* names,
# which their prep step clears first, so an overlay does not grow run after
# run. To add a workload: write bench_NAME, optionally prep_NAME, describe
# it in describe_workload, list it in all_workloads (bench.sh).

write_workloads=" seqwrite untar rm_rf cp_a make_j2 "
is_write_workload() { [[ "$write_workloads" == *" $1 "* ]]; }

describe_workload() {
    case $1 in
        seqread) echo "read a ${large_mb} MiB host file" ;;
        randread) echo "${nreads} random 4 KiB reads of it" ;;
        stat_tree) echo "find + stat of ${nfiles} host files" ;;
        grep_r) echo "grep -r over ${nfiles} host files" ;;
        seqwrite) echo "write a ${large_mb} MiB file, fsync" ;;
        untar) echo "tar x of ${nfiles} small files" ;;
        rm_rf) echo "rm -rf of those files" ;;
        cp_a) echo "cp -a of a ${ncp}-file host source tree" ;;
        make_j2) echo "make -j2 of ${nsources} C files" ;;
        *) echo "$1" ;;
    esac
}

bench_seqread() {
    dd if="$1/large.bin" of=/dev/null bs=1M status=none
}

bench_randread() {
    python3 - "$1/large.bin" "$nreads" <<'EOF'
import os, random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)  # same offsets on every engine and every run
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

# Reads every byte of every file; -c so that every file is read to its end.
bench_grep_r() {
    grep -r -c 'of a small file' "$1/tree" >/dev/null
}

clear_scratch() { rm -rf "$1"/scratch-*; }

prep_seqwrite() { clear_scratch "$1"; }
bench_seqwrite() {
    dd if=/dev/zero of="$1/scratch-seq.bin" bs=1M count="$large_mb" conv=fsync status=none
}

prep_untar() { clear_scratch "$1"; }
bench_untar() {
    mkdir "$1/scratch-untar"
    tar xf "$work/small.tar" -C "$1/scratch-untar"
}

# Removes what untar left, if it ran just before on this engine (it does in
# the default order), saving a second untar of every tree.
prep_rm_rf() {
    [[ -d "$1/scratch-untar" ]] && return 0
    clear_scratch "$1"
    mkdir "$1/scratch-untar"
    tar xf "$work/small.tar" -C "$1/scratch-untar"
}
bench_rm_rf() { rm -rf "$1/scratch-untar"; }

prep_cp_a() { clear_scratch "$1"; }
bench_cp_a() { cp -a "$1/src" "$1/scratch-cp"; }

prep_make_j2() {
    clear_scratch "$1"
    mkdir "$1/scratch-make"
    tar xf "$work/cproj.tar" -C "$1/scratch-make"
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
    # shellcheck disable=SC2016 # make's $@, not the shell's
    printf 'SRCS := $(wildcard *.c)\nprog: $(SRCS:.c=.o)\n\tcc -o $@ $^\n%%.o: %%.c common.h\n\tcc -O1 -c -o $@ $<\n' >"$dir/Makefile"
}

# tree/: NFILES small text files in 10 x 10 nested dirs (100..4000 bytes).
make_small_tree() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 10), "s%02d" % (i // 10 % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write(("line %d of a small file\n" % i) * (4 + i % 160))
EOF
}

# src/: a source tree of NFILES files for cp -a: nested packages of sources
# from 200 bytes to 24 KiB, some executable scripts, a relative symlink per
# package, and varied times (cp -a keeps modes, times and links).
make_source_tree() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
exts = [".c", ".h", ".py", ".rs", ".md", ".json"]
for i in range(n):
    d = os.path.join(root, "pkg%02d" % (i % 20), "mod%02d" % (i // 20 % 10), "sub%d" % (i % 3))
    if not os.path.isdir(d):
        os.makedirs(d)
        os.symlink("../../README.md", os.path.join(d, "README.link"))
    if i % 25 == 0:
        name = os.path.join(d, "run%05d.sh" % i)
        with open(name, "w") as f:
            f.write("#!/bin/sh\necho %d\n" % i)
        os.chmod(name, 0o755)
    else:
        name = os.path.join(d, "file%05d%s" % (i, exts[i % len(exts)]))
        with open(name, "w") as f:
            f.write(("/* source line %d */\n" % i) * (8 + (i * 37) % 1000))
    t = 1_600_000_000 + i * 61
    os.utime(name, (t, t))
for p in range(20):
    with open(os.path.join(root, "pkg%02d" % p, "README.md"), "w") as f:
        f.write("package %d\n" % p)
EOF
}

# The test data, made once in the host tree; the tarballs for the write
# workloads live outside it.
setup_data() {
    local host=$1
    note "writing a ${large_mb} MiB file, ${nfiles} small files and a ${ncp}-file source tree under $host"
    head -c "$((large_mb * 1024 * 1024))" /dev/urandom >"$host/large.bin"
    make_small_tree "$host/tree" "$nfiles"
    make_source_tree "$host/src" "$ncp"
    tar cf "$work/small.tar" -C "$host" tree
    make_c_project "$work/cproj-src"
    tar cf "$work/cproj.tar" -C "$work/cproj-src" cproj
    # Flush and read everything once, so the first timed run does not pay
    # one-off costs (writeback; in a VM, the host's own cache) the rest don't.
    sync
    cat "$host/large.bin" >/dev/null
    find "$host/tree" "$host/src" -type f -exec cat {} + >/dev/null
}
