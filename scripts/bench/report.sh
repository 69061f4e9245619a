# shellcheck shell=bash
# Results of scripts/bench.sh and their markdown table. Sourced by
# bench.sh, never run on its own.

declare -A times_of=() failed_of=()   # key "workload:cache|engine"
failures=()                           # one line per failed run, for the notes

record_time() { times_of["$1|$2"]+="$3 "; }
record_failure() {
    failed_of["$1|$2"]=1
    failures+=("$2, $1, round $(($3 + 1)): $4")
}

# The median of WORKLOAD on ENGINE, "fail" if any run failed, "–" if the
# engine cannot run it (a write on a read-only view).
cell() {
    local key="$1|$2" times
    if [[ -n "${failed_of[$key]:-}" ]]; then
        echo fail
    elif [[ -n "${times_of[$key]:-}" ]]; then
        read -r -a times <<<"${times_of[$key]}"
        printf '%s\n' "${times[@]}" | median | awk '{ printf "%.4f\n", $1 }'
    else
        echo "–"
    fi
}

has_engine() { [[ " ${engines[*]} " == *" $1 "* ]]; }

# Columns: every engine's median time, then each engine / native, then each
# view engine / native-img (the baseline on the same kind of fs as the upper).
print_table() {
    local w e header rule row
    local ratio_cols=() img_cols=()
    header="| workload | what |"
    rule="|---|---|"
    for e in "${engines[@]}"; do
        header+=" $e s |"
        rule+="---:|"
    done
    if has_engine native; then
        for e in "${engines[@]}"; do [[ "$e" == native ]] || ratio_cols+=("$e"); done
    fi
    if has_engine native-img; then
        for e in "${engines[@]}"; do is_view "$e" && img_cols+=("$e"); done
    fi
    for e in "${ratio_cols[@]}"; do
        header+=" $e / native |"
        rule+="---:|"
    done
    for e in "${img_cols[@]}"; do
        header+=" $e / native-img |"
        rule+="---:|"
    done
    printf '%s\n%s\n' "$header" "$rule"
    for w in "${workloads[@]}"; do
        row="| ${w%%:*} (${w##*:}) | $(describe_workload "${w%%:*}") |"
        for e in "${engines[@]}"; do row+=" $(cell "$w" "$e") |"; done
        for e in "${ratio_cols[@]}"; do row+=" $(ratio "$(cell "$w" "$e")" "$(cell "$w" native)") |"; done
        for e in "${img_cols[@]}"; do row+=" $(ratio "$(cell "$w" "$e")" "$(cell "$w" native-img)") |"; done
        printf '%s\n' "$row"
    done
    if ((${#failures[@]})); then
        printf '\nFailed runs (first line of their error):\n\n'
        printf -- '- %s\n' "${failures[@]}"
    fi
}
