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

# One repetition in DIR: CHANGED of TREE files get new contents through a
# view served by ENGINE, then export, commit and cp -a are timed; writes
# "EXPORT_S COMMIT_S CP_S" to DIR/times. Run through `attempt`.
commit_once() {
    local engine=$1 nchanged=$2 ntree=$3 cw=$4 cm t0 t1 t_export t_commit t_cp
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
    t_export=$(elapsed "$t0" "$t1")
    drop_caches
    t0=$EPOCHREALTIME
    wopfs commit "$cm" --yes >/dev/null
    t1=$EPOCHREALTIME
    t_commit=$(elapsed "$t0" "$t1")
    drop_caches
    t0=$EPOCHREALTIME
    cp -a "$cw/new/." "$cw/native/"
    sync
    t1=$EPOCHREALTIME
    t_cp=$(elapsed "$t0" "$t1")
    local differ
    differ=$({ diff -rq "$cw/host" "$cw/native" || true; } | wc -l)
    ((differ == 0)) || die "after the commit $differ files of the host differ from the cp -a copy (did wopfs see the changes?)"
    printf '%s %s %s\n' "$t_export" "$t_commit" "$t_cp" >"$cw/times"
}

# ENGINE CHANGED TREE: the medians over all rounds as two markdown rows
# (export, commit), or a row saying why it failed.
bench_commit_set() {
    local engine=$1 nchanged=$2 ntree=$3
    local i cw t_export t_commit t_cp export_times=() commit_times=() cp_times=()
    for ((i = 0; i < rounds; i++)); do
        cw=$work/commit.$i
        attempt commit_once "$engine" "$nchanged" "$ntree" "$cw"
        if is_mounted "$cw/mnt"; then wopfs umount "$cw/mnt" >/dev/null 2>&1 || umount -l "$cw/mnt"; fi
        if ((attempt_rc != 0)); then
            note "export/commit of $nchanged of $ntree files on the $engine engine FAILED: $(tail -n1 "$work/err")"
            printf '| %s of %s | %s | export, commit | | fail: %s | |\n' "$nchanged" "$ntree" "$engine" "$(tail -n1 "$work/err")"
            rm -rf --one-file-system "$cw"
            return 0
        fi
        read -r t_export t_commit t_cp <"$cw/times"
        export_times+=("$t_export")
        commit_times+=("$t_commit")
        cp_times+=("$t_cp")
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
