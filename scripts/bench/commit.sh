# shellcheck shell=bash
# Export and commit of a session, against `cp -a` of the same new contents
# over a copy of the same tree plus `sync` (what an approver would otherwise
# do by hand), for each writable engine. Each repetition uses a fresh tree
# and grant. Two shapes: a big set (every file of a tree changed), and a
# usual agent turn (a few changed files in a big repository).
# Sourced by bench.sh, never run on its own.

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

# ENGINE CHANGED TREE: CHANGED of TREE files get new contents through a
# view served by ENGINE; prints two markdown rows (export, commit).
bench_commit_set() {
    local engine=$1 nchanged=$2 ntree=$3
    local i cw cm t0 t1 export_times=() commit_times=() cp_times=()
    for ((i = 0; i < rounds; i++)); do
        cw=$work/commit.$i
        mkdir -p "$cw/host" "$cw/mnt" "$cw/new" "$cw/native"
        commit_tree "$cw/host" old "$ntree"
        commit_tree "$cw/new" new "$nchanged"
        cp -a "$cw/host/." "$cw/native/"
        cm=$(wopfs grant --root "$cw/host" --mode read_write_overlay --purpose "commit benchmark" --ttl 12h)
        wopfs mount "$cm" "$cw/mnt" --engine "$engine" >/dev/null
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
            || die "after the $engine engine's commit the host differs from the cp -a copy"
        rm -rf --one-file-system "$cw"
    done
    local cp_s export_s commit_s
    cp_s=$(printf '%s\n' "${cp_times[@]}" | median)
    export_s=$(printf '%s\n' "${export_times[@]}" | median)
    commit_s=$(printf '%s\n' "${commit_times[@]}" | median)
    printf '| %s of %s | %s | export | %.4f | %.4f | %s |\n' "$nchanged" "$ntree" "$engine" "$cp_s" "$export_s" "$(ratio "$export_s" "$cp_s")"
    printf '| %s of %s | %s | commit | %.4f | %.4f | %s |\n' "$nchanged" "$ntree" "$engine" "$cp_s" "$commit_s" "$(ratio "$commit_s" "$cp_s")"
}

# The comparisons, for every writable view engine in the run.
print_commit_sets() {
    local e any=false
    for e in "${engines[@]}"; do
        if is_view "$e" && can_write "$e"; then any=true; fi
    done
    "$any" || return 0
    ((ncommit > 0 || nturn > 0)) || return 0
    printf '\n### Export and commit (changed files of tree files; ratio = wopfs / cp -a + sync)\n\n'
    printf '| files | engine | step | cp -a s | wopfs s | ratio |\n|---|---|---|---|---|---|\n'
    for e in "${engines[@]}"; do
        if ! is_view "$e" || ! can_write "$e"; then continue; fi
        note "export and commit comparisons on the $e engine"
        if ((ncommit > 0)); then bench_commit_set "$e" "$ncommit" "$ncommit"; fi
        if ((nturn > 0)); then bench_commit_set "$e" "$nturn" "$nturn_tree"; fi
    done
}
